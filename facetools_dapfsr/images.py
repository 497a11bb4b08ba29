"""The one image reader (and writer) of the package: photos, exemplars, training and evaluation faces.

Every image enters as a float tensor ``[3, H, W]`` in ``[0, 1]``, whatever it was on disk:
EXIF orientation applied; grey, palette, CMYK and 16-bit data converted to RGB (16-bit grey keeps
its precision); transparency composited over white (output formats such as JPEG cannot hold it).
Of an animated or multi-page file (GIF, APNG, TIFF) the first frame is read, with a warning. A
photo of more pixels than the budget (:data:`DEFAULT_MAX_PIXELS`) is refused before it is decoded.
``dapfsr upscale``, ``dapfsr adapt`` (the exemplar), training and ``dapfsr evaluate`` all read
through :func:`read_image`, so the same file gives the same pixels everywhere.

Grey in, grey out: :attr:`LoadedImage.is_grey` (a grey file mode, or an RGB file whose three
channels are equal, as infrared frames saved as RGB JPEG are) tells the writer to save luma, and
a 16-bit grey photo is written at 16 bits where the format holds it (PNG, TIFF).
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
    return LoadedImage(image=image, mode=mode, exif_transposed=exif_transposed, frames=frames, grey_content=grey_content)


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
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit (PNG, TIFF) or float grey: keep the precision instead of truncating to 8 bits.
        grey = torch.from_numpy(np.asarray(image, dtype=np.float32))
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


def to_pil(image: torch.Tensor, grey: bool = False) -> Image.Image:
    """A uint8 ``[3, H, W]`` (or float in ``[0, 1]``) image as a Pillow image (``L`` if ``grey``)."""
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    # One Pillow band per channel straight from the [C, H, W] rows (no interleaved copy).
    channels = [Image.fromarray(channel.numpy()) for channel in image.detach().cpu().contiguous()]
    pil = channels[0] if len(channels) == 1 else Image.merge("RGB", channels)
    if grey:
        pil = pil.convert("L")  # luminance, for photos that were grey on the way in
    return pil


def save_image(image: torch.Tensor, path: str | os.PathLike[str], grey: bool = False) -> Path:
    """Write a uint8 ``[3, H, W]`` (or float in ``[0, 1]``) image atomically.

    The pixels go to a temporary file in the target folder which then replaces ``path`` in one
    step, so readers never see a half-written file and a failed write leaves nothing behind.
    The format follows the suffix (``.png`` when Pillow cannot write it).
    """
    path = Path(path)
    pil = to_pil(image, grey=grey)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    options = {"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(path) as temporary:
        pil.save(temporary, format=fmt, **options)
    return path
