"""The stage contract: hooks, the plugin manager, entry-point discovery, stage selection by
name, observers and error reporting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pluggy
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facetools_dapfsr.data.alignment import FACE_TEMPLATE
from facetools_dapfsr.pipeline import (
    Detection,
    FacePipeline,
    PathOptions,
    PipelineConfig,
    PluginError,
    StageError,
    StageRegistry,
    hookimpl,
    make_plugin_manager,
)
from facetools_dapfsr.pipeline.manager import DISABLE_AUTOLOAD_ENV
from facetools_dapfsr.pipeline.stages import STAGE_KINDS

TEST_PLUGIN_SOURCE = Path(__file__).parent / "plugins" / "facetools_testplugin"
REPO_ROOT = Path(__file__).resolve().parents[1]


class FixedFace:
    """A detector that reports one face at a known place."""

    def __init__(self, side: float = 24.0, origin: tuple[float, float] = (8.0, 8.0)) -> None:
        self.landmarks = (FACE_TEMPLATE * side + np.array(origin)).astype(np.float32)
        self.box = np.array([*origin, origin[0] + side, origin[1] + side], dtype=np.float32)

    def detect(self, image: torch.Tensor) -> list[Detection]:
        return [Detection(box=self.box, landmarks=self.landmarks, score=0.99)]


class FixedFacePlugin:
    @hookimpl
    def register_stages(self, register):
        register("detect", "fixed-face", lambda config: FixedFace())


class Recorder:
    """An observer plugin: remembers every before/after/error call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @hookimpl
    def before_stage(self, kind, name, item):
        self.calls.append(("before", kind, name, item.source))

    @hookimpl
    def after_stage(self, kind, name, item):
        self.calls.append(("after", kind, name, len(item.faces)))

    @hookimpl
    def on_stage_error(self, kind, name, item, error):
        self.calls.append(("error", kind, name, item.source, str(error)))


class ExplodingSuperResolver:
    lr_size = 16
    hr_size = 32

    def super_resolve(self, faces):
        raise RuntimeError("no GPU memory left (on purpose)")


class ExplodingPlugin:
    @hookimpl
    def register_stages(self, register):
        register("super_resolve", "exploding", lambda config: ExplodingSuperResolver())


def photo(height: int = 40, width: int = 48) -> torch.Tensor:
    return torch.linspace(0, 1, height * width).reshape(1, height, width).repeat(3, 1, 1)


def test_builtin_stages_are_registered_through_the_hooks():
    manager = make_plugin_manager(autoload=False)
    registry = StageRegistry.from_plugin_manager(manager)
    assert STAGE_KINDS == ("detect", "align", "super_resolve", "background", "post")
    assert "mtcnn" in registry.names("detect")
    assert "template" in registry.names("align")
    assert {"dapfsr", "bicubic"} <= set(registry.names("super_resolve"))
    assert {"bicubic", "realesrgan"} <= set(registry.names("background"))
    assert "paste" in registry.names("post")
    assert registry.get("detect", "mtcnn").plugin == "dapfsr"


def test_builtin_plugin_is_discovered_from_the_installed_distribution():
    """This package is installed (editable): its pyproject entry point provides the built-ins."""
    manager = make_plugin_manager(autoload=True)
    distributions = {dist.project_name: plugin for plugin, dist in manager.list_plugin_distinfo()}
    assert "facetools-dapfsr" in distributions, "pip install -e . --no-deps to register the entry point"
    assert distributions["facetools-dapfsr"].__name__ == "facetools_dapfsr.pipeline.builtin"


def test_environment_switch_disables_autoload(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    manager = make_plugin_manager()
    assert manager.list_plugin_distinfo() == []
    assert "mtcnn" in StageRegistry.from_plugin_manager(manager).names("detect")  # built-ins remain


def test_misspelled_hook_is_rejected():
    class Misspelled:
        @hookimpl
        def register_stage(self, register):  # the hook is register_stages
            pass

    with pytest.raises(pluggy.PluginValidationError, match="register_stage"):
        make_plugin_manager(autoload=False, plugins=[Misspelled()])


def test_third_party_plugin_replaces_a_stage_chosen_by_name():
    manager = make_plugin_manager(autoload=False, plugins=[FixedFacePlugin()])
    config = PipelineConfig(detector="fixed-face", super_resolver="bicubic", scale=2)
    pipeline = FacePipeline.from_config(config, manager)
    assert pipeline.detector.name == "fixed-face"
    result = pipeline(photo())
    assert len(result.faces) == 1
    np.testing.assert_allclose(result.faces[0].landmarks, FixedFace().landmarks)
    assert tuple(result.composite.shape) == (3, 80, 96)


def test_registry_rejects_bad_registrations():
    class Duplicate:
        @hookimpl
        def register_stages(self, register):
            register("detect", "mtcnn", lambda config: FixedFace())

    class UnknownKind:
        @hookimpl
        def register_stages(self, register):
            register("denoise", "nlm", lambda config: None)

    class NotADetector:
        @hookimpl
        def register_stages(self, register):
            register("detect", "wrong", lambda config: object())

    with pytest.raises(PluginError, match="registered twice"):
        StageRegistry.from_plugin_manager(make_plugin_manager(autoload=False, plugins=[Duplicate()]))
    with pytest.raises(PluginError, match="unknown kind 'denoise'"):
        StageRegistry.from_plugin_manager(make_plugin_manager(autoload=False, plugins=[UnknownKind()]))
    registry = StageRegistry.from_plugin_manager(make_plugin_manager(autoload=False, plugins=[NotADetector()]))
    with pytest.raises(PluginError, match="does not provide the Detector interface"):
        registry.build("detect", "wrong", PipelineConfig())
    with pytest.raises(PluginError, match="no detect stage named 'retinaface'; registered: aligned, mtcnn, wrong"):
        registry.get("detect", "retinaface")


def test_observers_see_every_stage_in_order():
    recorder = Recorder()
    manager = make_plugin_manager(autoload=False, plugins=[FixedFacePlugin(), recorder])
    config = PipelineConfig(detector="fixed-face", super_resolver="bicubic", scale=2)
    result = FacePipeline.from_config(config, manager)(photo(), source="gradient.png")
    assert recorder.calls == [
        ("before", "detect", "fixed-face", "gradient.png"),
        ("after", "detect", "fixed-face", 1),
        ("before", "align", "template", "gradient.png"),
        ("after", "align", "template", 1),
        ("before", "super_resolve", "bicubic", "gradient.png"),
        ("after", "super_resolve", "bicubic", 1),
        ("before", "background", "bicubic", "gradient.png"),
        ("after", "background", "bicubic", 1),
        ("before", "post", "paste", "gradient.png"),
        ("after", "post", "paste", 1),
    ]
    assert set(result.timings) == {
        "detect:fixed-face",
        "align:template",
        "super_resolve:bicubic",
        "background:bicubic",
        "post:paste",
    }


def test_failing_stage_calls_the_error_hook_and_names_the_photo():
    recorder = Recorder()
    manager = make_plugin_manager(autoload=False, plugins=[FixedFacePlugin(), ExplodingPlugin(), recorder])
    pipeline = FacePipeline.from_config(PipelineConfig(detector="fixed-face", super_resolver="exploding"), manager)
    with pytest.raises(StageError, match="super_resolve stage 'exploding' failed on party.jpg") as caught:
        pipeline(photo(), source="party.jpg")
    assert caught.value.kind == "super_resolve" and caught.value.name == "exploding"
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert recorder.calls[-1] == ("error", "super_resolve", "exploding", "party.jpg", "no GPU memory left (on purpose)")
    assert ("after", "super_resolve", "exploding", 1) not in recorder.calls


class NearestBackground:
    """A background stage written for the 8-bit contract (no ``bit_depths``, no ``bit_depth=``)."""

    def upscale(self, image: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        return (F.interpolate(image[None], size=out_size, mode="nearest")[0] * 255).round().to(torch.uint8)


class DtypeRecorder:
    """A post stage written for the 8-bit contract: it only records the composite it is given."""

    def __init__(self) -> None:
        self.seen: list[torch.dtype] = []

    def process(self, result) -> None:
        self.seen.append(result.composite.dtype)


def test_stages_of_the_8_bit_contract_keep_working_on_a_16_bit_photo():
    """A 16-bit run widens an 8-bit background stage's pixels exactly (x257) and pastes the faces
    at 16 bits on top; a post stage without ``bit_depths`` keeps the whole run at 8 bits, the
    uint8 composite it was written for."""
    recorder = DtypeRecorder()

    class Plugin:
        @hookimpl
        def register_stages(self, register):
            register("detect", "fixed-face", lambda config: FixedFace())
            register("background", "nearest", lambda config: NearestBackground())
            register("post", "dtype-recorder", lambda config: recorder)

    manager = make_plugin_manager(autoload=False, plugins=[Plugin()])
    image = photo(40, 48)
    config = PipelineConfig(
        detector="fixed-face",
        super_resolver="bicubic",
        background="nearest",
        scale=2,
        paths=PathOptions(replace="always"),
    )
    pipeline = FacePipeline.from_config(config, manager)
    assert pipeline.bit_depths == (8, 16)
    eight, deep = pipeline(image), pipeline(image, bit_depth=16)
    assert eight.bit_depth == 8 and eight.composite.dtype == torch.uint8
    assert deep.bit_depth == 16 and deep.composite.dtype == torch.uint16
    widened = NearestBackground().upscale(image, (80, 96)).to(torch.int32) * 257
    touched = deep.composite.to(torch.int32) != widened
    assert bool(touched.any()) and not bool(touched[:, :, 70:].any())  # the face (x 8-32 in) only
    assert bool((deep.composite[touched].to(torch.int32) % 257 != 0).any())  # pasted at 16 bits
    # 8 bits everywhere else: the 8-bit run's pixels are the 16-bit run's, divided by 257.
    assert torch.equal(eight.composite[~touched], (deep.composite[~touched].to(torch.int32) // 257).to(torch.uint8))

    config.post_processors = ("paste", "dtype-recorder")
    pipeline = FacePipeline.from_config(config, manager)
    assert pipeline.bit_depths == (8,)
    result = pipeline(image, bit_depth=16)
    assert result.bit_depth == 8 and result.composite.dtype == torch.uint8 and recorder.seen == [torch.uint8]
    assert torch.equal(result.composite, eight.composite)
    with pytest.raises(ValueError, match="bit_depth must be one of"):
        pipeline(image, bit_depth=12)


@pytest.fixture(scope="module")
def installed_test_plugin(tmp_path_factory) -> Path:
    """The test plugin distribution, really installed (pip, from its pyproject) into a folder."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"
    shutil.copytree(TEST_PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
    )
    assert (target / "facetools_testplugin-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def run_cli(args: list[str], site: Path, disable_autoload: bool = False) -> subprocess.CompletedProcess:
    """``dapfsr upscale`` in a fresh interpreter that sees the plugin installed in ``site``, and
    this checkout's package (not another checkout's editable install)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}
    env.pop(DISABLE_AUTOLOAD_ENV, None)
    if disable_autoload:
        env[DISABLE_AUTOLOAD_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "facetools_dapfsr.cli.main", "upscale", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_installed_plugin_is_discovered_and_replaces_stages(installed_test_plugin, tmp_path):
    image = tmp_path / "in" / "gradient.png"
    image.parent.mkdir()
    Image.fromarray((photo(60, 80).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(image)
    report = tmp_path / "report.json"
    done = run_cli(
        [
            str(image),
            "-o",
            str(tmp_path / "out"),
            "--detector",
            "centre-face",
            "--super-resolver",
            "flat-grey",
            "--scale",
            "2",
            "--report",
            str(report),
            "--no-progress",
        ],
        installed_test_plugin,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(report.read_text())["images"][0]
    assert record["status"] == "ok" and len(record["faces"]) == 1
    output = np.asarray(Image.open(tmp_path / "out" / "gradient.png"))
    assert output.shape == (120, 160)  # a grey picture (three equal channels) is written grey
    assert np.abs(output[60, 80].astype(int) - 128).max() <= 1  # the grey face is in the middle

    # With autoload disabled the plugin's stages are unknown: a clear error, exit status 2.
    done = run_cli(
        [str(image), "-o", str(tmp_path / "out2"), "--detector", "centre-face", "--super-resolver", "flat-grey"],
        installed_test_plugin,
        disable_autoload=True,
    )
    assert done.returncode == 2
    assert "no detect stage named 'centre-face'; registered: aligned, mtcnn" in done.stderr


def test_installed_plugin_stages_run_on_a_16_bit_grey_photo(installed_test_plugin, tmp_path):
    """The example plugin (detect and super_resolve stages, written before 16-bit photos) on a
    16-bit grey PNG: the output is 16-bit grey, the flat face mid-grey in the middle."""
    image = tmp_path / "in" / "deep.png"
    image.parent.mkdir()
    values = (photo(60, 80)[0].numpy() * 65535).round().astype(np.uint16)
    Image.fromarray(values).save(image)
    done = run_cli(
        [
            str(image),
            "-o",
            str(tmp_path / "out"),
            "--detector",
            "centre-face",
            "--super-resolver",
            "flat-grey",
            "--scale",
            "2",
            "--no-progress",
        ],
        installed_test_plugin,
    )
    assert done.returncode == 0, done.stderr
    output = Image.open(tmp_path / "out" / "deep.png")
    assert output.mode == "I;16" and output.size == (160, 120)
    pixels = np.asarray(output).astype(int)
    assert abs(pixels[60, 80] - 32768) <= 257  # the flat grey face (0.5), pasted at 16 bits
    assert float(np.mean(pixels % 257 != 0)) > 0.9


def test_failing_plugin_stage_is_reported_per_photo_and_the_run_continues(installed_test_plugin, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(folder / name)
    report = tmp_path / "report.json"
    done = run_cli(
        [
            str(folder),
            "-o",
            str(tmp_path / "out"),
            "--detector",
            "centre-face",
            "--super-resolver",
            "broken",
            "--report",
            str(report),
            "--no-progress",
        ],
        installed_test_plugin,
    )
    assert done.returncode == 1
    images = json.loads(report.read_text())["images"]
    assert [Path(r["input"]).name for r in images] == ["a.png", "b.png"]
    assert all(r["status"] == "failed" and r["step"] == "super_resolve:broken" for r in images)
    assert "broken on purpose" in images[0]["error"] and "a.png" in done.stderr and "b.png" in done.stderr
    assert not (tmp_path / "out" / "a.png").exists()
