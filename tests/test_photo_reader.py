"""The photo reader on hostile input: pixel budget, animated files, random corruptions; and
`FaceUpscaler` end to end on the same random, damaged files."""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import find_data_dir
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from facetools_dapfsr.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image
from facetools_dapfsr.pipeline.upscaler import as_photo


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (its data is one row: it is never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    data = chunk(b"IDAT", zlib.compress(b"\x00" * 9))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


# -- pixel budget ------------------------------------------------------------------------------
def test_a_photo_over_the_pixel_budget_is_refused_before_decoding_without_pillows_warning(tmp_path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming(13000, 13000))  # 169 MP: Pillow itself would only warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (Pillow's DecompressionBombWarning) fails
        with pytest.raises(ImageReadError, match=r"13000x13000 is 169 MP, over the pixel budget of 64 MP") as caught:
            read_image(path)
    assert str(path) in str(caught.value)
    assert DEFAULT_MAX_PIXELS == 64_000_000


def test_pillows_own_limit_is_a_clear_error_too(tmp_path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(30000, 30000))  # over twice Pillow's limit: it refuses to open
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError, match="too many pixels for Pillow"):
            read_image(path, max_pixels=None)


def test_the_budget_is_an_option(tmp_path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 50)).save(path)
    with pytest.raises(ImageReadError, match=r"100x50 is 0\.005 MP, over the pixel budget of 0\.001 MP"):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=5000).image.shape == (3, 50, 100)


# -- animated files ----------------------------------------------------------------------------
def test_frames_after_the_first_of_an_animated_gif_are_left_out_with_a_warning(tmp_path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 24), colour) for colour in ("red", "green", "blue")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = read_image(path)
    assert loaded.frames == 3 and loaded.warnings == ["3 frames (animated or multi-page); only the first is upscaled"]
    assert float(loaded.image[0].mean()) > 0.9 and float(loaded.image[1].mean()) < 0.1  # the red first frame
    with pytest.warns(UserWarning, match=r"anim.gif: 3 frames .* only the first is upscaled"):
        as_photo(path)
    single = tmp_path / "still.gif"
    frames[0].save(single)
    assert read_image(single).warnings == []


# -- property: a result or a clear error, whatever the bytes -----------------------------------
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMATS = {"PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}, "JPEG": {"L", "RGB", "CMYK"},
           "GIF": {"L", "P"}, "BMP": {"1", "L", "P", "RGB"}, "TIFF": set(MODES), "WEBP": {"RGB", "RGBA"}}  # fmt: skip


def encoded_photo(width: int, height: int, mode: str, fmt: str, seed: int, base: Image.Image | None = None) -> bytes:
    """Random pixels (or ``base`` resized) of ``width x height``, in ``mode``, encoded as ``fmt``."""
    if base is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.asarray(base.resize((width, height), Image.Resampling.BILINEAR))
    image = Image.fromarray(pixels).convert(mode if mode not in ("I;16", "I", "F") else "L")
    if mode in ("I;16", "I", "F"):
        image = image.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(image, np.uint16) * 257)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@st.composite
def photo_files(draw, faces: tuple[Image.Image, ...] = (), max_side: int = 48) -> bytes:
    """Encoded random photos (or, when ``faces`` are given, sometimes a real face photo resized,
    so that detection and super-resolution run too), then damaged or not."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(sorted(FORMATS[fmt])))
    width, height, seed = draw(st.integers(1, max_side)), draw(st.integers(1, max_side)), draw(st.integers(0, 99))
    base = draw(st.sampled_from((None, *faces))) if faces else None
    data = bytearray(encoded_photo(width, height, mode, fmt, seed, base))
    damage = draw(st.sampled_from(["none", "truncate", "flip", "overwrite"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    elif damage == "overwrite":
        start = draw(st.integers(0, len(data) - 1))
        data[start : start + 16] = bytes(draw(st.integers(0, 255)) for _ in range(16))[: len(data) - start]
    return bytes(data)


# derandomize: the same examples on every run, so CI cannot fail by chance on a new one; to
# search further, run locally with a larger max_examples and derandomize=False.
@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=photo_files())
def test_any_file_gives_a_photo_or_an_image_read_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "photo.bin"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about some damaged files; not the point here
        try:
            loaded = read_image(path)
        except ImageReadError as error:
            assert str(path) in str(error) and "\n" not in str(error)
            return
    image = loaded.image
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    assert image.shape[1] >= 1 and image.shape[2] >= 1
    assert bool(torch.isfinite(image).all()) and float(image.min()) >= 0 and float(image.max()) <= 1


# -- property: FaceUpscaler end to end on the same files ---------------------------------------
@pytest.fixture(scope="module")
def face_photos() -> tuple[Image.Image, ...]:
    """Two real CelebA photos when the shared data is here (else only random pixels are drawn)."""
    data = find_data_dir()
    files = sorted((data / "celeba" / "test").glob("*.jpg"))[:2] if data is not None else []
    return tuple(Image.open(path).convert("RGB") for path in files)


@pytest.fixture(scope="module")
def tiny_upscaler(weights_cache: Path):
    """Built once: a random tiny model is enough, the property is about inputs, not faces."""
    from facetools_dapfsr import DAPFSR, DAPFSRConfig, FaceUpscaler

    torch.manual_seed(0)
    return FaceUpscaler.from_pretrained(DAPFSR(DAPFSRConfig.tiny()).eval(), device="cpu")


def _files_under(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (a write changes one)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draw=st.data(), scale=st.sampled_from([1.0, 2.0, 3.5]))
def test_face_upscaler_gives_a_result_or_an_image_read_error_and_writes_nothing(
    tiny_upscaler, face_photos, weights_cache: Path, tmp_path: Path, draw: st.DataObject, scale: float
) -> None:
    data = draw.draw(photo_files(face_photos, max_side=64))
    # A fresh folder per example: the input in in/, out/ the only place anything may appear
    # (the test's own save of the result), and the working directory while enhance runs, so
    # that a stray relative write would be seen too.
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    (root / "in").mkdir()
    out = root / "out"
    out.mkdir()
    path = root / "in" / "photo.bin"
    path.write_bytes(data)
    cache_before = _files_under(weights_cache)
    cwd = os.getcwd()
    os.chdir(out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about some damaged files; not the point here
            try:
                enhanced = tiny_upscaler.enhance(path, scale=scale)
            except ImageReadError as error:
                assert str(path) in str(error) and "\n" not in str(error)
                enhanced = None
    finally:
        os.chdir(cwd)
    assert path.read_bytes() == data  # the input is never written
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["in", "in/photo.bin", "out"]
    assert _files_under(weights_cache) == cache_before
    event("unreadable" if enhanced is None else f"upscaled, {len(enhanced.faces)} face(s)")
    if enhanced is None:
        return
    height, width = read_image(path).image.shape[1:]
    assert enhanced.image.size == (round(width * scale), round(height * scale))
    assert enhanced.array.dtype == np.uint8 and enhanced.array.shape == (round(height * scale), round(width * scale), 3)
    enhanced.image.save(out / "result.png")  # a complete, saveable result
    assert sorted(p.name for p in out.iterdir()) == ["result.png"]
