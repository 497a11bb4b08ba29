"""``dapfsr upscale`` over a folder: resumable after a kill, inputs never written, clear refusals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.cli.main import main
from facetools_dapfsr.fileio import temporary_target
from facetools_dapfsr.pipeline.manager import DISABLE_AUTOLOAD_ENV

HOUR = 3600.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return DAPFSR(DAPFSRConfig.tiny()).save_pretrained(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(autouse=True)
def no_plugin_autoload(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")


@pytest.fixture
def photos(tmp_path) -> Path:
    """Three small photos (noise: no faces, so each runs in a blink)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def upscale(*args: str | Path) -> int:
    return main(["upscale", *map(str, args), "--scale", "2", "--device", "cpu", "--no-progress"])


def test_temporary_names_map_back_to_their_target() -> None:
    assert temporary_target(".a.png.k3j_x9q1.tmp") == "a.png"
    assert temporary_target(".report.json.abc.tmp") == "report.json"
    assert temporary_target("a.png") is None and temporary_target(".tmp") is None and temporary_target(".x.tmp") is None


def test_a_killed_run_is_resumed_with_skip_existing(photos, model_dir, tmp_path, capsys) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    assert upscale(photos, "-o", out, "--model", model_dir) == 0
    # What a kill leaves: b's output never renamed into place (a 0-byte hidden temporary, old),
    # c's output cut short by something else; a's output complete.
    (out / "b.png").unlink()
    stale = out / ".b.png.q8z2m1xk.tmp"
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - HOUR, time.time() - HOUR))
    unrelated = out / ".notes.txt.abcd1234.tmp"  # not one of this run's outputs: left alone
    unrelated.write_bytes(b"")
    os.utime(unrelated, (time.time() - HOUR, time.time() - HOUR))
    (out / "c.png").write_bytes((out / "c.png").read_bytes()[:60])
    a_written = (out / "a.png").stat().st_mtime_ns

    capsys.readouterr()
    assert upscale(photos, "-o", out, "--model", model_dir, "--skip-existing", "--report", report) == 0
    assert not stale.exists() and unrelated.exists()
    assert (out / "a.png").stat().st_mtime_ns == a_written  # not redone
    for name in ("b.png", "c.png"):
        assert Image.open(out / name).size == (96, 80)
    data = json.loads(report.read_text())
    statuses = {Path(r["input"]).name: r["status"] for r in data["images"]}
    assert statuses == {"a.png": "skipped", "b.png": "ok", "c.png": "ok"}  # every photo is reported
    assert data["summary"] == {**data["summary"], "images": 3, "succeeded": 2, "skipped": 1, "failed": 0}
    assert data["images"][0]["output_size"] == [96, 80] and data["settings"]["skip_existing"] is True
    err = capsys.readouterr().err
    assert "upscaled 2 of 3 photos (0 faces) x2 -> " in err and "; 1 skipped (output exists)" in err


def test_without_skip_existing_every_photo_is_redone(photos, model_dir, tmp_path) -> None:
    out = tmp_path / "out"
    assert upscale(photos, "-o", out, "--model", model_dir) == 0
    before = (out / "a.png").stat().st_mtime_ns
    time.sleep(0.01)
    assert upscale(photos, "-o", out, "--model", model_dir) == 0
    assert (out / "a.png").stat().st_mtime_ns != before


def test_save_faces_that_would_write_an_input_is_refused_before_work(photos, model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert upscale(photos, "-o", out, "--model", model_dir, "--save-faces", photos / "a.png") == 2
    assert f"--save-faces {photos / 'a.png'} is one of the input photos" in capsys.readouterr().err
    # An input named like a face crop of another input, in the --save-faces folder.
    crop = photos / "a_face00_lr.png"
    Image.new("RGB", (16, 16)).save(crop)
    before = crop.read_bytes()
    assert upscale(photos, "-o", out, "--model", model_dir, "--save-faces", photos) == 2
    assert f"a face crop would overwrite the input {crop}" in capsys.readouterr().err
    assert crop.read_bytes() == before and not out.exists()  # refused before any photo ran


def test_a_photo_over_the_pixel_budget_fails_alone_with_a_clear_message(photos, model_dir, tmp_path, capsys) -> None:
    Image.new("RGB", (200, 100)).save(photos / "big.png")
    report = tmp_path / "report.json"
    out = tmp_path / "out"
    status = upscale(photos, "-o", out, "--model", model_dir, "--max-megapixels", "0.01", "--report", report)
    assert status == 1
    err = capsys.readouterr().err
    assert "big.png: 200x100 is 0.02 MP, over the pixel budget of 0.01 MP" in err and "Warning" not in err
    records = {Path(r["input"]).name: r for r in json.loads(report.read_text())["images"]}
    assert records["big.png"]["status"] == "failed" and records["big.png"]["step"] == "read"
    assert all(records[n]["status"] == "ok" for n in ("a.png", "b.png", "c.png"))
    assert upscale(photos, "-o", tmp_path / "out", "--model", model_dir, "--max-megapixels", "0") == 2


def test_a_photo_whose_output_is_over_budget_fails_alone_before_any_work(photos, model_dir, tmp_path, capsys) -> None:
    # The input budget bounds what is decoded; the output budget bounds what the scale makes of
    # it (a 40x48 photo at --scale 2 is 7680 output pixels; 200x100 is 80,000).
    Image.new("RGB", (200, 100)).save(photos / "big.png")
    report = tmp_path / "report.json"
    status = upscale(
        photos, "-o", tmp_path / "out", "--model", model_dir, "--max-output-megapixels", "0.05", "--report", report
    )
    assert status == 1
    err = capsys.readouterr().err
    assert "big.png: 200x100 at scale 2 makes a 400x200 output (0.08 MP), over the output budget of 0.05 MP" in err
    records = {Path(r["input"]).name: r for r in json.loads(report.read_text())["images"]}
    assert records["big.png"]["status"] == "failed" and records["big.png"]["step"] == "upscale"
    assert "timings" not in records["big.png"] and not (tmp_path / "out" / "big.png").exists()
    assert all(records[n]["status"] == "ok" for n in ("a.png", "b.png", "c.png"))
    assert upscale(photos, "-o", tmp_path / "out2", "--model", model_dir, "--max-output-megapixels", "-1") == 2


def test_an_animated_gif_is_upscaled_from_its_first_frame_with_a_warning(model_dir, tmp_path, capsys) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 24), colour) for colour in ("red", "green")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    report = tmp_path / "report.json"
    assert upscale(path, "-o", tmp_path / "out", "--model", model_dir, "--report", report) == 0
    assert "dapfsr: warning: " in capsys.readouterr().err
    record = json.loads(report.read_text())["images"][0]
    assert record["status"] == "ok"
    assert record["warnings"] == ["2 frames (animated or multi-page); only the first is upscaled"]
