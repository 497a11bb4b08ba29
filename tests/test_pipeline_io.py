"""Reading awkward photo files and writing results atomically."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from facetools_dapfsr.images import (
    ImageReadError,
    read_image,
    save_image,
    written_bit_depth,
)
from facetools_dapfsr.pipeline.inputs import collect_inputs, plan_jobs

ORIENTATION = 0x0112


def gradient(height: int = 30, width: int = 40) -> np.ndarray:
    """An RGB uint8 test pattern whose orientation is easy to check (red grows to the right)."""
    array = np.zeros((height, width, 3), np.uint8)
    array[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    array[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    array[..., 2] = 77
    return array


def test_rgb_file_becomes_float_chw(tmp_path):
    Image.fromarray(gradient()).save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    assert loaded.image.dtype == torch.float32 and tuple(loaded.image.shape) == (3, 30, 40)
    assert loaded.image[0, 0, -1] == 1.0 and loaded.image[2, 0, 0] == pytest.approx(77 / 255)
    assert loaded.mode == "RGB" and not loaded.is_grey and not loaded.exif_transposed


def test_grey_and_palette_become_rgb(tmp_path):
    Image.fromarray(gradient()[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(gradient()).convert("P").save(tmp_path / "palette.png")
    grey = read_image(tmp_path / "grey.png")
    assert grey.is_grey and tuple(grey.image.shape) == (3, 30, 40)
    assert torch.equal(grey.image[0], grey.image[2])
    assert tuple(read_image(tmp_path / "palette.png").image.shape) == (3, 30, 40)


def test_sixteen_bit_keeps_its_precision(tmp_path):
    values = np.linspace(0, 65535, 30 * 40).reshape(30, 40).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    loaded = read_image(tmp_path / "deep.png")
    assert loaded.mode.startswith("I")
    np.testing.assert_allclose(loaded.image[1].numpy(), values / 65535, atol=1e-6)


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.concatenate([gradient(), np.full((30, 40, 1), 255, np.uint8)], axis=2)
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    image = read_image(tmp_path / "alpha.png").image
    assert torch.all(image[:, :10, :10] == 1.0)
    assert image[2, 20, 20] == pytest.approx(77 / 255)


def test_exif_orientation_is_applied(tmp_path):
    upright = Image.fromarray(gradient())
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways stores
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=98)
    loaded = read_image(tmp_path / "rotated.jpg")
    assert loaded.exif_transposed and tuple(loaded.image.shape) == (3, 30, 40)
    assert loaded.image[0, 15, -3] > 0.9 and loaded.image[0, 15, 2] < 0.1  # red still grows to the right


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jpg", b"", "empty file"),
        ("notes.txt", b"not a picture", "not a supported image format"),
        ("fake.png", b"\x89PNG\r\n\x1a\n garbage", "cannot read image|not a supported"),
    ],
)
def test_unreadable_files_raise_a_named_error(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as caught:
        read_image(tmp_path / name)
    assert name in str(caught.value)


def test_truncated_jpeg_raises(tmp_path):
    Image.fromarray(gradient(200, 200)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:600])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    image = torch.from_numpy(gradient()).permute(2, 0, 1)
    target = save_image(image, tmp_path / "out" / "result.png")
    assert np.array_equal(np.asarray(Image.open(target)), gradient())
    assert os.listdir(tmp_path / "out") == ["result.png"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    # A failed write (the target is a folder) leaves neither a partial file nor a temporary one.
    (tmp_path / "out" / "taken.png").mkdir()
    with pytest.raises(OSError):
        save_image(image, tmp_path / "out" / "taken.png")
    assert sorted(os.listdir(tmp_path / "out")) == ["result.png", "taken.png"]


def test_save_grey_writes_one_channel(tmp_path):
    image = torch.from_numpy(gradient()).permute(2, 0, 1)
    assert Image.open(save_image(image, tmp_path / "g.jpg", grey=True)).mode == "L"


def test_inputs_from_files_folders_and_patterns(tmp_path):
    folder = tmp_path / "album"
    folder.mkdir()
    for name in ("b.jpg", "a.PNG", "notes.txt"):
        (folder / name).write_bytes(b"x")
    (tmp_path / "c.webp").write_bytes(b"x")
    files, unmatched = collect_inputs(
        [str(folder), str(tmp_path / "*.webp"), str(folder / "a.PNG"), "nope/*.jpg", "missing.png"]
    )
    assert [f.name for f in files] == ["a.PNG", "b.jpg", "c.webp"]  # folders skip non-images; no duplicates
    assert unmatched == ["nope/*.jpg", "missing.png"]


def test_output_planning_never_overwrites_inputs(tmp_path):
    first, second = tmp_path / "x" / "face.jpg", tmp_path / "y" / "face.jpg"
    jobs = plan_jobs([first, second, tmp_path / "odd.heic"], tmp_path / "out")
    assert [job.output.name for job in jobs] == ["face.jpg", "face-2.jpg", "odd.png"]
    assert all(job.error is None for job in jobs)
    single = plan_jobs([first], tmp_path / "big.png")
    assert single[0].output == tmp_path / "big.png"
    same = plan_jobs([first], first.parent)
    assert same[0].error is not None and "overwrite" in same[0].error
    assert plan_jobs([first], first)[0].error is not None


def test_sixteen_bit_grey_is_written_at_sixteen_bits_where_the_format_holds_it(tmp_path):
    """uint16 grey round-trips exactly through PNG and TIFF (and through the reader); 8-bit formats
    get it rounded to 8 bits; colour is 8 bits (Pillow holds no 16-bit colour)."""
    values = np.linspace(0, 65535, 30 * 40).reshape(30, 40).round().astype(np.uint16)
    assert float(np.mean(values % 257 != 0)) > 0.99
    image = torch.from_numpy(values).expand(3, -1, -1)
    for name in ("deep.png", "deep.tif"):
        written = Image.open(save_image(image, tmp_path / name, grey=True))
        assert written.mode == "I;16" and np.array_equal(np.asarray(written), values)
        again = (read_image(tmp_path / name).image[0].double() * 65535).round().numpy()
        assert read_image(tmp_path / name).bit_depth == 16 and np.array_equal(again, values)
    bmp = Image.open(save_image(image, tmp_path / "flat.bmp", grey=True))
    assert bmp.mode == "L" and np.array_equal(np.asarray(bmp), np.round(values / 257).astype(np.uint8))
    assert Image.open(save_image(image, tmp_path / "flat.jpg", grey=True)).mode == "L"
    assert Image.open(save_image(image, tmp_path / "colour.png")).mode == "RGB"
    # Floats are written at 8 bits unless 16 are asked for.
    floats = image.float() / 65535
    assert Image.open(save_image(floats, tmp_path / "f8.png", grey=True)).mode == "L"
    f16 = Image.open(save_image(floats, tmp_path / "f16.png", grey=True, bit_depth=16))
    assert f16.mode == "I;16" and np.array_equal(np.asarray(f16), values)


def test_the_bit_depth_rule_says_why_it_drops_to_eight_bits():
    assert written_bit_depth("a.png", 16, grey=True) == (16, None)
    assert written_bit_depth("a.TIFF", 16, grey=True) == (16, None)
    assert written_bit_depth("a.png", 8, grey=True) == (8, None)
    for name, fmt in (("a.jpg", "JPEG"), ("a.webp", "WEBP"), ("a.bmp", "BMP")):
        why = f"16-bit grey written at 8 bits: {fmt} holds 8 bits (write .png or .tif to keep 16)"
        assert written_bit_depth(name, 16, grey=True) == (8, why)
    depth, why = written_bit_depth("a.png", 16, grey=False)
    assert depth == 8 and why.startswith("16-bit grey written as 8-bit RGB")
