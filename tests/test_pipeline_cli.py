"""``dapfsr upscale`` end to end: mixed and broken inputs, reports, and sharding under
``accelerate launch`` (two real processes talking over gloo)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.cli.main import main
from facetools_dapfsr.pipeline.manager import DISABLE_AUTOLOAD_ENV

ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight model in the Hub format (the CLI loads it like any model)."""
    torch.manual_seed(0)
    return DAPFSR(DAPFSRConfig.tiny()).save_pretrained(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def group_photo(data_dir: Path) -> Image.Image:
    """The six-face group photo, 8x smaller: faces about 15 px tall."""
    image = Image.open(data_dir / "photos" / "t1.jpg").convert("RGB")
    return image.resize((image.width // 8, image.height // 8), Image.LANCZOS)


@pytest.fixture
def album(tmp_path, group_photo) -> Path:
    """A folder of photos in awkward formats, plus broken files."""
    folder = tmp_path / "album"
    folder.mkdir()
    group_photo.save(folder / "colour.jpg", quality=95)
    group_photo.convert("L").save(folder / "grey.png")
    deep = (np.asarray(group_photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    rgba = group_photo.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(folder / "alpha.png")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    group_photo.transpose(Image.Transpose.ROTATE_90).save(folder / "sideways.jpg", exif=exif, quality=95)
    # No face: a patch of the table.
    group_photo.crop((40, 85, 120, 110)).save(folder / "table.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "broken.jpg").write_bytes((folder / "colour.jpg").read_bytes()[:700])
    (folder / "fake.png").write_bytes(b"this is text")
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(autouse=True)
def no_plugin_autoload(monkeypatch):
    # Only the built-in stages: other plugins installed on the machine must not change results.
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")


def test_upscale_mixed_album(album, model_dir, tmp_path, group_photo, capsys):
    before = digest(album)
    out = tmp_path / "out"
    report_path = tmp_path / "report.json"
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    status = main(
        [
            "upscale",
            str(album),
            str(notes),
            "-o",
            str(out),
            "--model",
            str(model_dir),
            "--scale",
            "3",
            "--device",
            "cpu",
            "--report",
            str(report_path),
            "--save-faces",
            str(tmp_path / "faces"),
            "--no-progress",
        ]
    )
    assert status == 1  # some inputs failed
    stderr = capsys.readouterr().err
    report = json.loads(report_path.read_text())
    records = {Path(r["input"]).name: r for r in report["images"]}
    failed = {name for name, r in records.items() if r["status"] == "failed"}
    assert failed == {"empty.jpg", "broken.jpg", "fake.png", "notes.txt"}
    for name in failed:
        assert records[name]["step"] == "read" and name in stderr
    assert report["summary"] == {**report["summary"], "images": 10, "succeeded": 6, "failed": 4}

    width, height = group_photo.size
    for name in ("colour.jpg", "grey.png", "deep16.png", "alpha.png", "sideways.jpg"):
        record = records[name]
        assert record["status"] == "ok", record
        assert record["input_size"] == [width, height]  # sideways.jpg is upright after EXIF
        assert record["output_size"] == [width * 3, height * 3]
        assert Image.open(record["output"]).size == (width * 3, height * 3)
        minimum = 6 if name in ("colour.jpg", "alpha.png", "sideways.jpg") else 5  # grey is harder
        assert len(record["faces"]) >= minimum, (name, len(record["faces"]))
        for face in record["faces"]:
            assert Path(face["sr_file"]).is_file() and Image.open(face["sr_file"]).size == (32, 32)
            assert Image.open(face["lr_file"]).size == (16, 16)
    assert records["sideways.jpg"]["exif_transposed"] is True
    assert Image.open(records["grey.png"]["output"]).mode == "L"
    assert records["table.png"]["status"] == "ok" and records["table.png"]["faces"] == []
    assert Image.open(records["table.png"]["output"]).size == (240, 75)

    assert digest(album) == before  # inputs untouched
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert report["settings"]["scale"] == 3 and report["num_processes"] == 1


def test_missing_model_folder_is_a_clear_error(album, tmp_path, capsys):
    status = main(
        ["upscale", str(album / "colour.jpg"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "nope")]
    )
    assert status == 2
    assert "no such model folder" in capsys.readouterr().err


def test_adapter_option_reaches_the_model(album, model_dir, tmp_path, capsys):
    missing = tmp_path / "no-such-adapter"
    status = main(
        [
            "upscale",
            str(album / "colour.jpg"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(model_dir),
            "--adapter",
            str(missing),
        ]
    )
    assert status == 2
    error = capsys.readouterr().err
    if hasattr(DAPFSR, "load_adapter"):
        assert "no-such-adapter" in error  # the model tried to load it and said which one failed
    else:
        assert "does not support adapters yet" in error


def test_output_never_overwrites_the_input(album, model_dir, capsys):
    source = album / "colour.jpg"
    before = {path: path.read_bytes() for path in album.iterdir()}
    # An output that is an input stops the run before any photo (status 2, not a failed photo):
    # given as the file itself, or as the folder the inputs are in.
    for inputs, output, named in (
        ([source], source, source),
        ([album], album, album / "alpha.png"),  # the first of the album's photos in order
        ([album / "grey.png", source], album, album / "grey.png"),
    ):
        argv = ["upscale", *map(str, inputs), "-o", str(output), "--model", str(model_dir), "--no-progress"]
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert f"dapfsr: error: -o: the output {named} is one of the input photos" in error
        assert "failed" not in error
    assert {path: path.read_bytes() for path in album.iterdir()} == before


def test_outputs_are_checked_before_the_work_and_never_overwrite_an_input(album, model_dir, tmp_path, capsys):
    source = album / "colour.jpg"
    before = source.read_bytes()
    out = tmp_path / "out"
    status = main(
        ["upscale", str(source), "-o", str(out), "--report", str(source), "--model", str(model_dir), "--no-progress"]
    )
    assert status == 2
    assert "is one of the input photos" in capsys.readouterr().err
    assert source.read_bytes() == before
    assert not out.exists()  # refused before any photo ran
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    status = main(
        ["upscale", str(source), "-o", str(out), "--report", str(blocker / "r.json"), "--model", str(model_dir)]
    )
    assert status == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not out.exists()
    # Nor a report over the run's own outputs: an upscaled photo, the -o folder, a face crop.
    for report, message in (
        (out / "colour.jpg", "is one of the output photos"),
        (out, "is the -o folder"),
        (tmp_path / "faces" / "colour_face00_lr.png", "face crop --save-faces writes"),
    ):
        argv = ["upscale", str(source), "-o", str(out), "--report", str(report), "--model", str(model_dir)]
        assert main([*argv, "--save-faces", str(tmp_path / "faces")]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
    # An -o that cannot be created is refused before any photo runs, too.
    status = main(
        ["upscale", str(source), str(album / "grey.png"), "-o", str(blocker / "out"), "--model", str(model_dir)]
    )
    assert status == 2
    assert "-o: " in capsys.readouterr().err


def test_single_file_output_and_glob_inputs(album, model_dir, tmp_path):
    target = tmp_path / "big.png"
    assert (
        main(["upscale", str(album / "table.png"), "-o", str(target), "--model", str(model_dir), "--no-progress"]) == 0
    )
    assert Image.open(target).size == (320, 100)
    out = tmp_path / "globbed"
    assert main(["upscale", str(album / "t*.png"), "-o", str(out), "--model", str(model_dir), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["table.png"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_shards_inputs_across_processes(album, model_dir, tmp_path):
    """Two processes (gloo on CPU): each photo processed exactly once, one merged report."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not installed")
    out = tmp_path / "out"
    report_path = tmp_path / "report.json"
    env = {**os.environ, DISABLE_AUTOLOAD_ENV: "1", "OMP_NUM_THREADS": "1"}
    command = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "facetools_dapfsr.cli.main",
        "upscale",
        str(album),
        "-o",
        str(out),
        "--model",
        str(model_dir),
        "--device",
        "cpu",
        "--scale",
        "2",
        "--report",
        str(report_path),
        "--no-progress",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0  # the album holds broken files
    assert report_path.is_file(), done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["num_processes"] == 2
    images = report["images"]
    names = sorted(p.name for p in album.iterdir())
    assert sorted(Path(r["input"]).name for r in images) == names  # each input exactly once
    assert [r["index"] for r in images] == list(range(len(names)))
    assert {r["process"] for r in images} == {0, 1}
    assert report["summary"]["failed"] == 3 and report["summary"]["succeeded"] == len(names) - 3
    assert sorted(p.name for p in out.iterdir()) == sorted(
        Path(r["output"]).name for r in images if r["status"] == "ok"
    )
    assert done.stderr.count("upscaled 6 of 9 photos") == 1  # one summary, from the main process


MEASURE_PEAK_MEMORY = """
import json, resource, sys
from facetools_dapfsr.cli.main import main
import facetools_dapfsr.pipeline.detect_mtcnn, facenet_pytorch  # imports count as baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
status = main(sys.argv[1:])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"status": status, "peak_increase_bytes": (after - before) * 1024}))
"""


@pytest.mark.slow
def test_large_photo_is_processed_in_bounded_memory(data_dir, model_dir, tmp_path):
    """A 2400 px photo upscaled 2x: detection runs in tiles and the background in bands, so
    the peak memory stays within a small multiple of the unavoidable buffers (the float input
    and the uint8 output); one whole-photo float resampling would alone exceed the bound."""
    source = tmp_path / "large.jpg"
    image = Image.open(data_dir / "photos" / "t1.jpg").convert("RGB")
    image.resize((2400, round(2400 * image.height / image.width)), Image.BICUBIC).save(source, quality=90)
    width, height = Image.open(source).size
    out = tmp_path / "large_x2.jpg"
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURE_PEAK_MEMORY,
            "upscale",
            str(source),
            "-o",
            str(out),
            "--model",
            str(model_dir),
            "--min-face-size",
            "80",
            "--scale",
            "2",
            "--report",
            str(report),
            "--no-progress",
        ],
        env={**os.environ, DISABLE_AUTOLOAD_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["status"] == 0
    assert Image.open(out).size == (2 * width, 2 * height)
    record = json.loads(report.read_text())["images"][0]
    assert len(record["faces"]) == 6
    unavoidable = width * height * 3 * 4 + (2 * width) * (2 * height) * 3
    assert measured["peak_increase_bytes"] < 4 * unavoidable, measured


@pytest.mark.usefixtures("weights_cache")
def test_aligned_crops_run_without_a_detector(data_dir, tmp_path, capsys):
    """``--aligned``: a 16 px crop to the template is super-resolved by the built-in model as one
    face at the template's points (MTCNN, run on it, puts the eyes outside the crop), closer to
    the true face than bicubic."""
    from facetools_dapfsr.data.alignment import template_points
    from facetools_dapfsr.data.faces import AlignedFaces
    from facetools_dapfsr.metrics.image import psnr

    faces = AlignedFaces.prepare(str(data_dir / "celeba" / "test"), size=128, max_images=1)
    hr, _ = faces[0]  # (face [3, 128, 128], validity mask)
    hr_image = Image.fromarray((hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    lr_path = tmp_path / "face16.png"
    hr_image.resize((16, 16), Image.BICUBIC).save(lr_path)
    wide = tmp_path / "wide.png"
    hr_image.resize((24, 16), Image.BICUBIC).save(wide)

    def upscale(*extra: str) -> dict:
        report = tmp_path / "report.json"
        main(
            [
                "upscale",
                str(lr_path),
                str(wide),
                "-o",
                str(tmp_path / "out"),
                "--scale",
                "8",
                "--device",
                "cpu",
                "--no-progress",
                "--report",
                str(report),
                *extra,
            ]
        )
        return {Path(r["input"]).name: r for r in json.loads(report.read_text())["images"]}

    records = upscale("--aligned")
    record = records["face16.png"]
    assert record["status"] == "ok" and len(record["faces"]) == 1, record
    assert np.allclose(record["faces"][0]["landmarks"], template_points(16), atol=0.01)
    assert record["faces"][0]["path"] == "super-resolved"
    assert records["wide.png"]["status"] == "failed" and "square" in capsys.readouterr().err
    out = torch.from_numpy(np.array(Image.open(record["output"]).convert("RGB"))).permute(2, 0, 1) / 255
    bicubic = torch.from_numpy(np.array(Image.open(lr_path).resize((128, 128), Image.BICUBIC))).permute(2, 0, 1) / 255
    assert out.shape == (3, 128, 128)
    assert psnr(out[None], hr[None]).item() > psnr(bicubic[None], hr[None]).item()


def test_grey_pictures_stay_grey_unless_asked(group_photo, model_dir, tmp_path):
    """A grey picture saved as an RGB JPEG (as infrared cameras often write their frames) comes
    out grey, its saved faces too; --no-keep-grey writes RGB; a colour photo stays colour."""
    source = tmp_path / "in"
    source.mkdir()
    group_photo.convert("L").convert("RGB").save(source / "infrared.jpg", quality=90)
    group_photo.save(source / "colour.jpg", quality=95)
    assert Image.open(source / "infrared.jpg").mode == "RGB"
    for keep, expected in (("--keep-grey", "L"), ("--no-keep-grey", "RGB")):
        out, faces, report = tmp_path / f"out{keep}", tmp_path / f"faces{keep}", tmp_path / f"report{keep}.json"
        status = main(
            [
                "upscale",
                str(source),
                "-o",
                str(out),
                "--model",
                str(model_dir),
                "--scale",
                "2",
                keep,
                "--save-faces",
                str(faces),
                "--report",
                str(report),
                "--no-progress",
            ]
        )
        assert status == 0
        records = {Path(r["input"]).name: r for r in json.loads(report.read_text())["images"]}
        assert Image.open(records["infrared.jpg"]["output"]).mode == expected
        assert records["infrared.jpg"]["grey"] is (expected == "L") and records["colour.jpg"]["grey"] is False
        assert Image.open(records["colour.jpg"]["output"]).mode == "RGB"
        assert records["infrared.jpg"]["faces"]
        for face in records["infrared.jpg"]["faces"]:
            assert Image.open(face["sr_file"]).mode == expected


# -- 16-bit grey: kept where the format holds it --------------------------------------------------
def sixteen_bit(group_photo: Image.Image) -> np.ndarray:
    """The group photo as 16-bit grey with a smooth gradient of fine levels on top (0-200 across
    and 0-57 down, in 1/65535 steps), so that almost no pixel is a multiple of 257: one rounded
    to 8 bits on the way would show."""
    grey = np.asarray(group_photo.convert("L"), np.float64) * 257
    height, width = grey.shape
    grey += np.linspace(0, 200, width)[None, :] + np.linspace(0, 57, height)[:, None]
    return np.clip(grey.round(), 0, 65535).astype(np.uint16)


def away_from_faces(faces: list[dict], scale: float, size: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` bool: output pixels farther from every face than its aligned crop reaches (a
    square of twice the crop's side around the face's box), where paste never writes."""
    mask = np.ones(size, bool)
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        cx, cy, reach = (x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale, face["input_side"] * scale
        mask[max(0, int(cy - reach)) : int(cy + reach) + 1, max(0, int(cx - reach)) : int(cx + reach) + 1] = False
    return mask


def test_sixteen_bit_grey_photos_stay_sixteen_bit_where_the_format_holds_it(group_photo, model_dir, tmp_path, capsys):
    """A 16-bit grey PNG upscaled to PNG and TIFF is written 16-bit grey (its crops too), with the
    16-bit resampled photo exactly away from the faces; to JPEG it is 8-bit grey with a one-line
    warning; an 8-bit grey PNG stays 8-bit without one."""
    from facetools_dapfsr.images import read_image
    from facetools_dapfsr.pipeline.resample import resample_image

    source = tmp_path / "in"
    source.mkdir()
    deep = sixteen_bit(group_photo)
    Image.fromarray(deep).save(source / "deep.png")
    group_photo.convert("L").save(source / "eight.png")
    assert Image.open(source / "deep.png").mode == "I;16" and float(np.mean(deep % 257 != 0)) > 0.99
    height, width = deep.shape
    plain = resample_image(read_image(source / "deep.png").image, (2 * height, 2 * width), bit_depth=16)[0].numpy()

    def upscale(output: str, *inputs: str) -> dict[str, dict]:
        report = tmp_path / f"{output}.json"
        status = main(
            [
                "upscale",
                *inputs,
                "-o",
                str(tmp_path / output),
                "--model",
                str(model_dir),
                "--scale",
                "2",
                "--save-faces",
                str(tmp_path / f"{output}-faces"),
                "--report",
                str(report),
                "--no-progress",
            ]
        )
        assert status == 0
        return {Path(r["input"]).name: r for r in json.loads(report.read_text())["images"]}

    # A folder (the output keeps the input's .png) and a single .tif file.
    for output, fmt in (("out", "PNG"), ("deep.tif", "TIFF")):
        inputs = [str(source / "deep.png")] + ([str(source / "eight.png")] if output == "out" else [])
        records = upscale(output, *inputs)
        record = records["deep.png"]
        assert record["bit_depth"] == 16 and "warnings" not in record and record["faces"], record
        written = Image.open(record["output"])
        assert written.mode == "I;16" and written.format == fmt
        pixels = np.asarray(written)
        assert pixels.dtype == np.uint16 and pixels.shape == (2 * height, 2 * width)
        assert float(np.mean(pixels % 257 != 0)) > 0.95  # not 8-bit levels widened
        away = away_from_faces(record["faces"], 2, pixels.shape)
        assert 0.3 < float(away.mean()) < 1
        difference = np.abs(pixels.astype(int) - plain.astype(int))
        print(
            f"{fmt}: {written.mode}, max |output - 16-bit resampling| away from the faces {difference[away].max()}, "
            f"{float(np.mean(pixels % 257 != 0)):.3f} of pixels off the 8-bit levels, {float(away.mean()):.2f} "
            f"of the photo away from the faces"
        )
        assert int(difference[away].max()) == 0
        for face in record["faces"]:
            assert Image.open(face["lr_file"]).mode == "I;16"
            if "sr_file" in face:
                assert Image.open(face["sr_file"]).mode == "I;16"
        if "eight.png" in records:  # an 8-bit grey photo in the same run stays 8-bit
            eight = records["eight.png"]
            assert eight["bit_depth"] == 8 and "warnings" not in eight
            assert Image.open(eight["output"]).mode == "L"
    assert "warning" not in capsys.readouterr().err

    jpeg_out = tmp_path / "deep.jpg"
    report = tmp_path / "jpeg.json"
    assert (
        main(
            [
                "upscale",
                str(source / "deep.png"),
                "-o",
                str(jpeg_out),
                "--model",
                str(model_dir),
                "--scale",
                "2",
                "--save-faces",
                str(tmp_path / "jpeg-faces"),
                "--report",
                str(report),
                "--no-progress",
            ]
        )
        == 0
    )
    record = json.loads(report.read_text())["images"][0]
    warning = "16-bit grey written at 8 bits: JPEG holds 8 bits (write .png or .tif to keep 16)"
    assert record["bit_depth"] == 8 and record["warnings"] == [warning]
    assert Image.open(jpeg_out).mode == "L"
    assert [line for line in capsys.readouterr().err.splitlines() if "warning" in line] == [
        f"dapfsr: warning: {source / 'deep.png'}: {warning}"
    ]
    assert all(Image.open(face["lr_file"]).mode == "L" for face in record["faces"])  # crops follow the photo


def test_sixteen_bit_grey_through_the_python_api(group_photo, model_dir, tmp_path):
    """``FaceUpscaler.enhance`` gives ``I;16`` for a 16-bit file, PIL image or uint16 array (the
    same pixels for all three), 8-bit ``L`` with ``keep_depth=False``; ``Enhanced.save`` writes
    16 bits to PNG and 8 bits, with a warning, to JPEG."""
    from facetools_dapfsr import FaceUpscaler
    from facetools_dapfsr.pipeline.resample import resample_image

    deep = sixteen_bit(group_photo)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    upscaler = FaceUpscaler.from_pretrained(str(model_dir), device="cpu")
    result = upscaler.enhance(path, scale=2)
    assert result.image.mode == "I;16" and result.result.bit_depth == 16 and result.faces
    pixels = np.asarray(result.image)
    assert float(np.mean(pixels % 257 != 0)) > 0.95
    assert result.result.composite.dtype == torch.uint16
    assert result.array.dtype == np.uint8 and result.array.shape == (*pixels.shape, 3)  # as before: 8-bit RGB
    for same in (Image.open(path), deep):
        assert np.array_equal(np.asarray(upscaler.enhance(same, scale=2).image), pixels)
    records = [{"box": face.box.tolist(), "input_side": face.input_side} for face in result.faces]
    away = away_from_faces(records, 2, pixels.shape)
    plain = resample_image(torch.from_numpy(deep / 65535).float().expand(3, -1, -1), pixels.shape)
    # keep_depth=False runs the 8-bit pipeline: away from the faces it is the 8-bit resampling.
    eight = upscaler.enhance(path, scale=2, keep_depth=False)
    assert eight.image.mode == "L" and np.array_equal(np.asarray(eight.image)[away], plain[0].numpy()[away])

    saved = Image.open(result.save(tmp_path / "out.png"))
    assert saved.mode == "I;16" and np.array_equal(np.asarray(saved), pixels)
    with pytest.warns(UserWarning, match=r"out\.jpg: 16-bit grey written at 8 bits: JPEG holds 8 bits"):
        jpeg = Image.open(result.save(tmp_path / "out.jpg"))
    assert jpeg.mode == "L"
    with pytest.warns(UserWarning, match=r"16-bit input returned as 8-bit RGB \(keep_grey=False"):
        assert upscaler.enhance(path, scale=2, keep_grey=False).image.mode == "RGB"
