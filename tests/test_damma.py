"""DAMMA (Algorithm 1) on a tiny model with the real VGG-19 features: what it changes, what it
records, determinism, convergence, the low-rank option, the exemplar and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.adaptation.damma import DAMMAConfig, run_damma
from facetools_dapfsr.adaptation.exemplar import ExemplarError, load_exemplar
from facetools_dapfsr.hub.adapters import ALPHA_KEY, EXEMPLAR_CODE_KEY, LOWRANK_DOWN, LOWRANK_UP
from facetools_dapfsr.losses import VGGFeatures

# Small enough for a few seconds per run on a shared 2-core CPU.
FAST = {"batch_size": 2, "window": 2, "max_steps": 3}


@pytest.fixture(scope="module")
def vgg(weights_cache) -> VGGFeatures:
    return VGGFeatures.from_weights_cache(progress=False)


@pytest.fixture(scope="module")
def model() -> DAPFSR:
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    model.refresh_latent_statistics(num_samples=500)
    return model


@pytest.fixture(scope="module")
def exemplar() -> torch.Tensor:
    # A smooth, strongly tinted "face": a style far from the random decoder's output.
    y, x = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    blob = torch.exp(-(x**2 + y**2) * 2)
    return torch.stack([0.8 * blob + 0.1, 0.3 * blob, 0.1 + 0 * blob]).unsqueeze(0)


def _state(model: DAPFSR) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_damma_adapts_only_modulation_and_records_alpha_and_code(model, exemplar, vgg) -> None:
    before = _state(model)
    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    result = run_damma(model, exemplar, config=DAMMAConfig(**FAST), vgg=vgg, progress=False)
    # the model itself is untouched: the result is an adapter
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grad_flags
    assert not model.training

    adapter = result.adapter
    modulation = {"decoder." + n for n in model.decoder.modulation_parameter_names()}
    assert set(adapter.config.target_parameters) == modulation
    assert set(adapter.tensors) == modulation | {ALPHA_KEY, EXEMPLAR_CODE_KEY}
    changed = [n for n in modulation if not torch.equal(adapter.tensors[n], before[n])]
    assert changed, "no modulation tensor was adapted"
    assert adapter.alpha.shape == (model.num_ws,) and bool(((adapter.alpha > 0) & (adapter.alpha < 1)).all())
    # layer-wise: the slots moved apart from their common start
    assert float(adapter.alpha.max() - adapter.alpha.min()) > 0
    assert adapter.exemplar_code.shape == (model.num_ws, model.w_dim)
    assert result.steps == 3 and not result.converged and len(result.history) == 3
    assert set(result.history[0]) == {"loss", "content", "style", "alpha_mean"}
    training = adapter.config.training
    assert training["steps"] == 3 and training["converged"] is False
    assert DAMMAConfig.from_dict(json.loads(json.dumps(training["settings"]))) == DAMMAConfig(**FAST)


def test_damma_is_deterministic_on_cpu(model, exemplar, vgg) -> None:
    config = DAMMAConfig(**{**FAST, "max_steps": 2})
    first = run_damma(model, exemplar, config=config, vgg=vgg, progress=False).adapter.tensors
    second = run_damma(model, exemplar, config=config, vgg=vgg, progress=False).adapter.tensors
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_damma_stops_when_the_loss_stops_improving(model, exemplar, vgg) -> None:
    # tolerance 1: any window that improves by less than 100% counts as converged, so the run
    # stops at the first check (after two windows), well before the cap.
    config = DAMMAConfig(**{**FAST, "window": 1, "max_steps": 50, "tolerance": 1.0})
    result = run_damma(model, exemplar, config=config, vgg=vgg, progress=False)
    assert result.converged and result.steps == 2
    assert result.adapter.config.training["converged"] is True


def test_damma_lowers_its_losses(model, exemplar, vgg) -> None:
    # The Eq. 5 loss of the modulation update; L_c + L_s move alpha, whose effect on a few
    # steps of a random decoder is too small to assert on.
    config = DAMMAConfig(batch_size=2, window=2, max_steps=6, tolerance=-1.0, learning_rate=1e-2)
    history = run_damma(model, exemplar, config=config, vgg=vgg, progress=False).history
    assert len(history) == 6
    assert history[-1]["loss"] + history[-2]["loss"] < history[0]["loss"] + history[1]["loss"]


def test_lowrank_adapter_stores_factors_and_is_smaller(model, exemplar, vgg) -> None:
    config = DAMMAConfig(**{**FAST, "max_steps": 2, "rank": 2})
    result = run_damma(model, exemplar, config=config, vgg=vgg, progress=False)
    adapter = result.adapter
    assert adapter.config.kind == "lowrank" and adapter.config.rank == 2
    base = {"decoder." + n: p.detach() for n, p in model.decoder.modulation_parameters()}
    adapted = adapter.adapted_tensors(base)
    for name, shape in adapter.config.target_parameters.items():
        if len(shape) == 2:
            up, down = adapter.tensors[name + LOWRANK_UP], adapter.tensors[name + LOWRANK_DOWN]
            assert up.shape == (shape[0], 2) and down.shape == (2, shape[1])
            assert torch.allclose(adapted[name], base[name] + up @ down)
            assert name not in adapter.tensors
        else:
            assert adapter.tensors[name].shape == tuple(shape)
    full_values = sum(torch.Size(shape).numel() for shape in adapter.config.target_parameters.values())
    lowrank_values = sum(t.numel() for k, t in adapter.tensors.items() if not k.startswith("damma."))
    assert lowrank_values < full_values


def test_progress_bar_and_given_exemplar_lr(model, exemplar, vgg, capsys) -> None:
    lr = torch.full((1, 3, 16, 16), 0.5)
    config = DAMMAConfig(**{**FAST, "max_steps": 1})
    result = run_damma(model, exemplar, exemplar_lr=lr, config=config, vgg=vgg, progress=True)
    err = capsys.readouterr().err
    assert "DAMMA" in err and "1/1" in err
    for field in ("loss=", "Lc=", "Ls=", "alpha="):
        assert field in err
    # the given LR (not a degraded copy of the HR) is what the exemplar's code came from
    assert torch.allclose(result.adapter.exemplar_code, model.encode(lr)[0])


def test_bad_inputs_are_refused(model, exemplar) -> None:
    with pytest.raises(ValueError, match=r"exemplar_hr must be one RGB face of shape \[1, 3, 32, 32\]"):
        run_damma(model, torch.rand(1, 3, 64, 64), vgg=VGGFeatures())
    with pytest.raises(ValueError, match="rank must be >= 0"):
        DAMMAConfig(rank=-1)
    with pytest.raises(ValueError, match="unknown VGG layer"):
        DAMMAConfig(content_layers=("relu5_1",))
    with pytest.raises(ValueError, match="unknown DAMMA setting"):
        DAMMAConfig.from_dict({"steps": 3})


# -- the exemplar and the CLI -------------------------------------------------------------------
@pytest.fixture(scope="module")
def yaleb_photo(data_dir):
    path = data_dir / "yaleb" / "yaleB01" / "yaleB01_P00A+000E+00.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_exemplar_is_found_and_aligned_in_a_tight_crop(yaleb_photo) -> None:
    exemplar = load_exemplar(yaleb_photo, 64)
    assert exemplar.hr.shape == (1, 3, 64, 64) and exemplar.lr is None
    # Yale B crops are tight: the template crop lies (almost) inside the photo
    assert float(exemplar.valid.mean()) > 0.9
    eye_distance = exemplar.landmarks[1, 0] - exemplar.landmarks[0, 0]
    assert 80 < eye_distance < 120  # about 99 px in a 168 px Yale B crop


def test_unreadable_or_faceless_exemplars_get_clear_errors(tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ExemplarError, match="cannot read the exemplar"):
        load_exemplar(broken, 32)
    with pytest.raises(ExemplarError, match="cannot read the exemplar"):
        load_exemplar(tmp_path / "missing.png", 32)
    from PIL import Image

    flat = tmp_path / "flat.png"
    Image.new("RGB", (96, 96), (120, 130, 140)).save(flat)
    with pytest.raises(ExemplarError, match="no face found in the exemplar"):
        load_exemplar(flat, 32)


def _dapfsr(*args: str, env_cache) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "DAPFSR_CACHE": str(env_cache)}
    code = "import sys; from facetools_dapfsr.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def test_cli_adapt_writes_an_adapter_the_model_loads(tmp_path, model, yaleb_photo, weights_cache) -> None:
    base = model.save_pretrained(tmp_path / "base")
    out = tmp_path / "adapter"
    done = _dapfsr(
        "adapt", "--exemplar", str(yaleb_photo), "--model", str(base), "--out", str(out),
        "--steps", "2", "--rank", "2", "--quiet", env_cache=weights_cache,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "stopped at the step cap after 2 steps" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    loaded = DAPFSR.from_pretrained(base, adapter=out)
    assert loaded.active_adapter == "default"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["kind"] == "lowrank" and config["r"] == 2 and config["base_model_name_or_path"] == str(base.resolve())


def test_cli_adapt_reports_bad_exemplars_in_one_line(tmp_path, model, weights_cache) -> None:
    base = model.save_pretrained(tmp_path / "base")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    done = _dapfsr(
        "adapt", "--exemplar", str(broken), "--model", str(base), "--out", str(tmp_path / "o"), env_cache=weights_cache
    )
    assert done.returncode == 2
    assert done.stderr.startswith("dapfsr: error: cannot read the exemplar") and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_cli_adapt_refuses_an_out_that_is_an_input_before_adapting(tmp_path, model, capsys) -> None:
    from PIL import Image

    from facetools_dapfsr.cli.main import main

    base = model.save_pretrained(tmp_path / "base")
    card = (base / "README.md").read_bytes()
    photo = tmp_path / "exemplar.png"
    Image.new("RGB", (64, 64), "grey").save(photo)
    for out, option in ((base, "--model"), (photo, "--exemplar")):
        assert main(["adapt", "--exemplar", str(photo), "--model", str(base), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is the {option} input" in err and "Traceback" not in err
    # A folder holding the exemplar: the adapter's README.md and files would land beside it.
    assert main(["adapt", "--exemplar", str(photo), "--model", str(base), "--out", str(tmp_path), "--quiet"]) == 2
    assert f"--out {tmp_path} contains the --exemplar input" in capsys.readouterr().err
    assert (base / "README.md").read_bytes() == card and sorted(p.name for p in base.iterdir()) == sorted(
        ["README.md", "checksums.json", "config.json", "model.safetensors", "model_card.json"]
    )


def test_grey_targets_follow_the_exemplar_unless_set(model, exemplar, vgg) -> None:
    grey = exemplar.mean(dim=1, keepdim=True).expand_as(exemplar).contiguous()
    run = lambda image, **kw: run_damma(model, image, config=DAMMAConfig(**FAST, **kw), vgg=vgg, progress=False)  # noqa: E731
    assert run(grey).adapter.config.training["grey_targets"] is True
    assert run(exemplar).adapter.config.training["grey_targets"] is False
    assert run(grey, grey_targets=False).adapter.config.training["grey_targets"] is False


def test_snapshots_are_the_adapter_as_it_was_after_those_steps(model, exemplar, vgg) -> None:
    result = run_damma(
        model, exemplar, config=DAMMAConfig(**FAST, tolerance=-1), vgg=vgg, progress=False, snapshot_steps=(1, 3)
    )
    assert sorted(result.snapshots) == [1, 3]
    last, first = result.snapshots[3].tensors, result.snapshots[1].tensors
    assert all(torch.equal(last[name], value) for name, value in result.adapter.tensors.items())
    changed = [
        name
        for name in first
        if name not in (ALPHA_KEY, EXEMPLAR_CODE_KEY) and not torch.equal(first[name], last[name])
    ]
    assert changed  # two more steps moved the modulation tensors


def test_the_exemplar_pair_can_be_left_out_of_the_fine_tuning(model, exemplar, vgg) -> None:
    with_pair = run_damma(model, exemplar, config=DAMMAConfig(**FAST), vgg=vgg, progress=False)
    without = run_damma(model, exemplar, config=DAMMAConfig(**FAST, exemplar_pair=False), vgg=vgg, progress=False)
    assert without.adapter.config.training["settings"]["exemplar_pair"] is False
    assert with_pair.adapter.config.training["settings"]["exemplar_pair"] is True
    # same seed, same mixed faces: the exemplar's pair is the only difference in step 4
    assert with_pair.history[0]["style"] == without.history[0]["style"]
    assert with_pair.history[0]["loss"] != without.history[0]["loss"]
