"""The one image reader (and writer) of the package: photos, exemplars, training and evaluation faces.

Every image enters as a float tensor ``[3, H, W]`` in ``[0, 1]``, whatever it was on disk:
EXIF orientation applied; grey, palette, CMYK and 16-bit data converted to RGB (16-bit grey keeps
its precision); transparency composited over white (output formats such as JPEG cannot hold it).
Of an animated or multi-page file (GIF, APNG, TIFF) the first frame is read, with a warning. A
photo of more pixels than the budget (:data:`DEFAULT_MAX_PIXELS`) is refused before it is decoded.
``dapfsr upscale``, ``dapfsr adapt`` (the exemplar), training and ``dapfsr evaluate`` all read
through :func:`read_image`, so the same file gives the same pixels everywhere.

Grey in, grey out: :attr:`LoadedImage.is_grey` (a grey file mode, or an RGB file whose three
channels are equal, as infrared frames saved as RGB JPEG are) tells the writer to save luma.
Deep in, deep out: a grey file of more than 8 bits (:data:`DEEP_MODES`; :attr:`LoadedImage.bit_depth`
is 16) is written at 16 bits (``I;16``) where the format holds it (:data:`DEEP_FORMATS`: PNG,
TIFF) and at 8 bits elsewhere; :func:`written_bit_depth` is that rule, and says why when it drops
to 8 bits. Pillow holds no 16-bit colour, so 16 bits are written as grey only.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from facetools_dapfsr.fileio import atomic_path

# What Pillow's format plugins raise on corrupt or truncated files besides OSError: the
# property test of tests/test_photo_reader.py found a TIFF without dimensions raising TypeError.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, MemoryError, TypeError, KeyError, IndexError, struct.error)

JPEG_QUALITY = 95
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
DEEP_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""Grey modes of more than 8 bits (16-bit PNG and TIFF; 32-bit integer or float TIFF): read at full
precision, written back at 16 bits."""
DEEP_FORMATS = frozenset({"PNG", "TIFF"})
"""Formats that hold 16-bit grey (Pillow writes JPEG, WebP and BMP at 8 bits only)."""
BIT_DEPTHS = (8, 16)
DEFAULT_MAX_PIXELS = 64_000_000
"""Pixel budget of a photo (64 MP: its float copy alone is 768 MB, and the output is larger by the
scale squared). Checked from the header, before decoding; ``dapfsr upscale --max-megapixels``."""


class ImageReadError(ValueError):
    """A file could not be read as a photo (corrupt, empty, unsupported)."""


@dataclass
class LoadedImage:
    image: torch.Tensor
    """``[3, H, W]`` float32 in ``[0, 1]``, upright."""
    mode: str
    """Pillow mode of the file (``RGB``, ``L``, ``I;16``, ``RGBA``...)."""
    exif_transposed: bool
    """Whether an EXIF orientation tag rotated or flipped the pixels."""
    frames: int = 1
    """Frames (or pages) in the file; only the first is read."""
    grey_content: bool = False
    """Whether the three channels are equal although the file is colour (an infrared or
    black-and-white frame saved as RGB)."""

    @property
    def warnings(self) -> list[str]:
        """What was left out of the file, for the run's report and stderr."""
        if self.frames > 1:
            return [f"{self.frames} frames (animated or multi-page); only the first is upscaled"]
        return []

    @property
    def is_grey(self) -> bool:
        """A grey file, or a colour file holding a grey picture: written back as grey."""
        return self.mode in GREY_MODES or self.grey_content

    @property
    def bit_depth(self) -> int:
        """16 for a grey file of more than 8 bits (:data:`DEEP_MODES`), else 8."""
        return 16 if self.mode in DEEP_MODES else 8


def read_image(
    source: str | os.PathLike[str] | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None
) -> LoadedImage:
    """Read an image file (a path, or its undecoded bytes as a ``datasets`` table holds them).

    Args:
        max_pixels: refuse a photo of more pixels (width x height) than this; None: no budget
            of ours (Pillow still refuses images over twice ``PIL.Image.MAX_IMAGE_PIXELS``).
        name: what error messages call the image (default: the path, or ``<bytes>``).
    Raises:
        ImageReadError: the file is missing, empty, corrupt, over the pixel budget, or not an
            image format Pillow reads.
    """
    path = name or ("<bytes>" if isinstance(source, bytes) else Path(source))
    try:
        if (len(source) if isinstance(source, bytes) else Path(source).stat().st_size) == 0:
            raise ImageReadError(f"{path}: empty file")
        with warnings.catch_warnings():
            # Our budget (below) replaces Pillow's raw DecompressionBombWarning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened_file = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with opened_file as opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageReadError(
                    f"{path}: {width}x{height} is {width * height / 1e6:.3g} MP, over the pixel budget of "
                    f"{max_pixels / 1e6:g} MP (raise it with --max-megapixels, or downscale the photo)"
                )
            mode = opened.mode
            frames = int(getattr(opened, "n_frames", 1))
            upright = ImageOps.exif_transpose(opened)
            exif_transposed = _has_orientation(opened)
            upright.load()  # decode now so that truncated files fail here, inside the try
            image = to_rgb_tensor(upright)
            grey_content = mode not in GREY_MODES and is_grey_content(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a supported image format") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{path}: too many pixels for Pillow to open ({error})") from None
    except DECODE_ERRORS as error:
        raise ImageReadError(f"{path}: cannot read image ({type(error).__name__}: {error})") from None
    return LoadedImage(
        image=image, mode=mode, exif_transposed=exif_transposed, frames=frames, grey_content=grey_content
    )


def complete_image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(width, height)`` of an image file that decodes to its end, else None.

    How ``--skip-existing`` tells an output of an earlier run (written atomically, so complete)
    from a file cut short by something else.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image.size
    except (*DECODE_ERRORS, Image.DecompressionBombError):
        return None


def _has_orientation(image: Image.Image) -> bool:
    orientation = image.getexif().get(0x0112, 1)
    return orientation not in (None, 1)


def to_rgb_tensor(image: Image.Image) -> torch.Tensor:
    """Any Pillow image -> ``[3, H, W]`` float32 in ``[0, 1]``."""
    mode = image.mode
    if mode in DEEP_MODES:
        # 16-bit (PNG, TIFF) or float grey: keep the precision instead of truncating to 8 bits.
        grey = torch.from_numpy(np.array(image, dtype=np.float32))  # writable: asarray of F is a read-only view
        grey = grey if mode == "F" else grey / 65535.0
        return grey.clamp_(0, 1).expand(3, -1, -1).contiguous()
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    # Convert from 8 bits channel by channel: the float copy is the only full-size float buffer,
    # which matters for very large photos.
    pixels = torch.from_numpy(np.array(image.convert("RGB")))  # [H, W, 3] uint8, writable
    result = torch.empty(3, *pixels.shape[:2], dtype=torch.float32)
    for channel in range(3):
        result[channel].copy_(pixels[..., channel]).div_(255.0)
    return result


def is_grey_content(image: torch.Tensor) -> bool:
    """Whether the channels of ``[3, H, W]`` are equal (to 1/255: a grey picture decoded from an
    RGB JPEG comes back with equal channels, a colour photo differs by far more)."""
    rows = 256  # in row blocks, so a large photo needs no second full-size buffer
    for top in range(0, image.shape[1], rows):
        block = image[:, top : top + rows]
        if float((block[0] - block[1]).abs().max()) > 1.5 / 255 or float((block[1] - block[2]).abs().max()) > 1.5 / 255:
            return False
    return True


def writable_suffix(suffix: str) -> str:
    """``suffix`` if Pillow can write that format, else ``.png``."""
    extensions = Image.registered_extensions()
    fmt = extensions.get(suffix.lower())
    if fmt is not None and fmt in Image.SAVE and fmt in ("JPEG", "PNG", "WEBP", "TIFF", "BMP"):
        return suffix
    return ".png"


def check_bit_depth(bit_depth: int) -> int:
    """``bit_depth`` if it is one this package writes (8 or 16), else a ValueError."""
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of {BIT_DEPTHS}, got {bit_depth!r}")
    return bit_depth


def max_level(bit_depth: int) -> int:
    """The largest pixel value at ``bit_depth`` (255, 65535): what ``1.0`` maps to."""
    return (1 << check_bit_depth(bit_depth)) - 1


def bit_depth_of(image: torch.Tensor) -> int:
    """16 for a uint16 tensor, else 8 (uint8, and floats, which are written at 8 bits unless asked)."""
    return 16 if image.dtype == torch.uint16 else 8


def quantise(image: torch.Tensor, bit_depth: int = 8) -> torch.Tensor:
    """Float in ``[0, 1]`` -> uint8 (or uint16 at 16 bits) with rounding (bicubic overshoot is clipped)."""
    dtype = torch.uint16 if check_bit_depth(bit_depth) == 16 else torch.uint8
    return (image.clamp(0, 1) * max_level(bit_depth)).round_().to(dtype)


def image_format(path: str | os.PathLike[str]) -> str:
    """The Pillow format ``path``'s suffix names (``PNG`` when Pillow does not know it)."""
    return Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")


def written_bit_depth(path: str | os.PathLike[str], bit_depth: int, grey: bool) -> tuple[int, str | None]:
    """The bit depth an image of ``bit_depth`` is written at to ``path``, and, when that is less,
    why (one line, for a warning); ``None`` when nothing is lost.

    16 bits are kept only for grey (Pillow holds no 16-bit colour) in :data:`DEEP_FORMATS`.
    """
    if check_bit_depth(bit_depth) == 8:
        return 8, None
    if not grey:
        return 8, "16-bit grey written as 8-bit RGB (grey not kept: Pillow writes no 16-bit colour)"
    fmt = image_format(path)
    if fmt not in DEEP_FORMATS:
        return 8, f"16-bit grey written at 8 bits: {fmt} holds 8 bits (write .png or .tif to keep 16)"
    return 16, None


def to_pil(image: torch.Tensor, grey: bool = False, bit_depth: int | None = None) -> Image.Image:
    """A ``[3, H, W]`` image (uint8, uint16, or float in ``[0, 1]``) as a Pillow image.

    ``bit_depth``: 8 or 16; ``None``: 16 for a uint16 tensor, else 8. At 16 bits a ``grey`` image
    is ``I;16`` (luma, with the weights of ``convert("L")``); a colour one is 8-bit ``RGB``, since
    Pillow holds no 16-bit colour. At 8 bits: ``L`` if ``grey``, else ``RGB``.
    """
    bit_depth = bit_depth_of(image) if bit_depth is None else check_bit_depth(bit_depth)
    if bit_depth == 16 and grey:
        return Image.fromarray(_luma16(image).numpy())  # a uint16 [H, W] array is mode I;16
    if image.dtype == torch.uint16:
        image = image.float().div_(max_level(16))
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    # One Pillow band per channel straight from the [C, H, W] rows (no interleaved copy).
    channels = [Image.fromarray(channel.numpy()) for channel in image.detach().cpu().contiguous()]
    pil = channels[0] if len(channels) == 1 else Image.merge("RGB", channels)
    if grey:
        pil = pil.convert("L")  # luminance, for photos that were grey on the way in
    return pil


def _luma16(image: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` uint16 luma of ``[C, H, W]`` (ITU-R 601, the weights of Pillow's ``convert("L")``).

    In blocks of rows, so that a large photo needs no full-size float copy. Three equal channels
    give their own value back (the weights sum to 1; float32 errs far less than half a level).
    """
    image = image.detach().cpu()
    scale = 1.0 if image.is_floating_point() else 1.0 / max_level(bit_depth_of(image))
    luma = torch.empty(image.shape[1:], dtype=torch.uint16)
    rows = 256
    for top in range(0, image.shape[1], rows):
        block = image[:, top : top + rows].float() * scale
        if len(block) == 1:
            luma[top : top + rows] = quantise(block[0], 16)
        else:
            luma[top : top + rows] = quantise(0.299 * block[0] + 0.587 * block[1] + 0.114 * block[2], 16)
    return luma


def save_image(
    image: torch.Tensor, path: str | os.PathLike[str], grey: bool = False, bit_depth: int | None = None
) -> Path:
    """Write a ``[3, H, W]`` image (uint8, uint16, or float in ``[0, 1]``) atomically.

    The pixels go to a temporary file in the target folder which then replaces ``path`` in one
    step, so readers never see a half-written file and a failed write leaves nothing behind.
    The format follows the suffix (``.png`` when Pillow cannot write it). ``bit_depth`` (default:
    16 for a uint16 tensor, else 8) is kept where :func:`written_bit_depth` allows it and lowered
    to 8 bits elsewhere, silently: callers warn with that function's reason.
    """
    path = Path(path)
    bit_depth = bit_depth_of(image) if bit_depth is None else check_bit_depth(bit_depth)
    bit_depth, _ = written_bit_depth(path, bit_depth, grey)
    pil = to_pil(image, grey=grey, bit_depth=bit_depth)
    fmt = image_format(path)
    options = {"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(path) as temporary:
        pil.save(temporary, format=fmt, **options)
    return path
