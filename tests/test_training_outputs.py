"""Training outputs never overwrite an input: `recipes/train_encoder.py --output-dir`,
`recipes/train_decoder.py --output-dir` and `dapfsr synthesize --out` that are, or contain, an
input are refused with one line naming both paths, before anything loads (so no training runs).

The recipes are loaded in process from their files and their first heavy step is replaced by a
function that fails the test, which proves the refusal comes first."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from facetools_dapfsr.cli import main as cli_main
from facetools_dapfsr.config import DAPFSRConfig
from facetools_dapfsr.fileio import check_not_an_input

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _load_recipe(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_recipe_{name}", RECIPES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("the run started: the output folder should have been refused first")


@pytest.fixture(scope="module")
def encoder_recipe() -> ModuleType:
    return _load_recipe("train_encoder")


@pytest.fixture(scope="module")
def decoder_recipe() -> ModuleType:
    return _load_recipe("train_decoder")


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Real, tiny input folders and files: a photo folder, synthetic pairs, a model, a config."""
    data = tmp_path / "faces"
    data.mkdir()
    (data / "a.png").write_bytes(b"not read: the run is refused before")
    synthetic = tmp_path / "runs" / "pairs"
    synthetic.mkdir(parents=True)
    (synthetic / "synthetic_pairs.json").write_text("{}")
    model = tmp_path / "models" / "enc" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(DAPFSRConfig.tiny().to_json_string())
    config = tmp_path / "configs" / "tiny.json"
    config.parent.mkdir()
    config.write_text(DAPFSRConfig.tiny().to_json_string())
    return {"data": data, "synthetic": synthetic, "model": model, "config": config}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("output", "option", "relation"),
    [
        ("faces", "--data", "is"),
        ("runs", "--synthetic-data", "contains"),
        ("models/enc", "--init-from", "contains"),  # its model/ would be replaced at the end
        ("models/enc/model", "--init-from", "is"),
        ("configs", "--config", "contains"),
        ("configs/tiny.json", "--config", "is"),
    ],
)
def test_train_encoder_refuses_an_output_dir_holding_an_input(
    encoder_recipe, inputs, tmp_path, monkeypatch, capsys, output, option, relation
) -> None:
    monkeypatch.setattr(encoder_recipe, "create_accelerator", _must_not_run)
    monkeypatch.setattr(encoder_recipe, "build_model", _must_not_run)
    before = _snapshot(tmp_path)
    out = tmp_path / output
    argv = [
        "--config", str(inputs["config"]), "--data", str(inputs["data"]),
        "--synthetic-data", str(inputs["synthetic"]), "--init-from", str(inputs["model"]),
        "--output-dir", str(out), "--report-to", "none",
    ]  # fmt: skip
    assert encoder_recipe.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith(f"train_encoder.py: error: --output-dir {out} {relation} the {option} input ")
    named = {"--data": "data", "--synthetic-data": "synthetic", "--init-from": "model", "--config": "config"}
    assert error.endswith(f" input {inputs[named[option]]}; choose another folder")
    assert _snapshot(tmp_path) == before  # nothing written, not even training_args.json


def test_train_encoder_refuses_an_output_dir_under_a_file(
    encoder_recipe, inputs, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(encoder_recipe, "create_accelerator", _must_not_run)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    argv = ["--config", "tiny", "--data", str(inputs["data"]), "--output-dir", str(blocker / "run")]
    assert encoder_recipe.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"train_encoder.py: error: --output-dir {blocker / 'run'}: {blocker} is a file, not a folder"
    )


def test_a_preset_or_hub_id_is_not_taken_for_an_input(tmp_path, monkeypatch) -> None:
    # A folder named like a preset or a Hub id that is not on disk is not what the run reads.
    monkeypatch.chdir(tmp_path)
    Path("tiny").mkdir()
    from facetools_dapfsr.training.arguments import EncoderTrainingArguments

    args = EncoderTrainingArguments(config="tiny", data="someone/faces", output_dir="tiny")
    args.check_output_dir()  # no error
    Path("tiny/run").mkdir()
    args = EncoderTrainingArguments(config="tiny", data="tiny/run", output_dir="tiny")
    with pytest.raises(ValueError, match="^--output-dir tiny contains the --data input tiny/run; "):
        args.check_output_dir()


def test_output_inside_an_input_is_not_refused_by_the_helper(tmp_path) -> None:
    # Writing a run's folder inside the data folder does not replace the data (only is/contains does).
    (tmp_path / "faces").mkdir()
    check_not_an_input(tmp_path / "faces" / "run", "--output-dir", {"--data": tmp_path / "faces"})


def test_train_decoder_refuses_an_output_dir_that_is_its_data(decoder_recipe, inputs, monkeypatch, capsys) -> None:
    monkeypatch.setattr(decoder_recipe, "create_accelerator", _must_not_run)
    argv = ["--data", str(inputs["data"]), "--output-dir", str(inputs["data"]), "--report-to", "none"]
    assert decoder_recipe.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"train_decoder.py: error: --output-dir {inputs['data']} is the --data input {inputs['data']}; "
        "choose another folder"
    )


@pytest.mark.parametrize("output", ["models/enc/model", "models"])
def test_synthesize_refuses_an_out_holding_the_model(inputs, tmp_path, monkeypatch, capsys, output) -> None:
    from facetools_dapfsr.models.dapfsr import DAPFSR

    monkeypatch.setattr(DAPFSR, "from_pretrained", _must_not_run)
    monkeypatch.setattr(DAPFSR, "default", _must_not_run)
    before = _snapshot(tmp_path)
    out = tmp_path / output
    code = cli_main.main(["synthesize", "--model", str(inputs["model"]), "--out", str(out), "--num-pairs", "2"])
    assert code == 2
    relation = "is" if output.endswith("model") else "contains"
    assert capsys.readouterr().err.strip() == (
        f"dapfsr: error: --out {out} {relation} the --model input {inputs['model']}; choose another folder"
    )
    assert _snapshot(tmp_path) == before
