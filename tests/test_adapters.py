"""Domain adapters on a model: format, round trip, switching, refusals, model card, packaging."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.adaptation.damma import DAMMAConfig, run_damma
from facetools_dapfsr.fileio import sha256_file
from facetools_dapfsr.hub.adapters import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    LOWRANK_DOWN,
    LOWRANK_UP,
    Adapter,
    AdapterError,
)
from facetools_dapfsr.losses import VGGFeatures

REPO_ROOT = Path(__file__).resolve().parents[1]
ONE_STEP = DAMMAConfig(batch_size=2, window=1, max_steps=1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, weights_cache):
    """A saved tiny base model and three adapters made for it by DAMMA (saved to folders)."""
    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    model.refresh_latent_statistics(num_samples=500)
    model.save_pretrained(root / "base")
    base = DAPFSR.from_pretrained(root / "base")
    vgg = VGGFeatures.from_weights_cache(progress=False)
    folders = {}
    for name, colour, rank in (
        ("warm", (0.9, 0.5, 0.2), 0),
        ("cold", (0.1, 0.3, 0.9), 0),
        ("thin", (0.5, 0.5, 0.5), 2),
    ):
        exemplar = torch.tensor(colour).reshape(1, 3, 1, 1).expand(1, 3, 32, 32).clone()
        result = run_damma(base, exemplar, config=dataclasses.replace(ONE_STEP, rank=rank), vgg=vgg, progress=False)
        folders[name] = result.adapter.save(root / name)
    return root, folders


@pytest.fixture()
def base_dir(workspace, tmp_path) -> Path:
    """A private copy of the base model folder (tests may delete it)."""
    return Path(shutil.copytree(workspace[0] / "base", tmp_path / "base"))


def lr_batch() -> torch.Tensor:
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def snapshot(model: DAPFSR) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- format -----------------------------------------------------------------------------------
def test_adapter_folder_format(workspace) -> None:
    root, folders = workspace
    folder = folders["warm"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]
    config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    assert config["adapter_type"] == "dapfsr-damma" and config["format_version"] == 2
    assert config["peft_type"] == "DAMMA" and config["kind"] == "full" and config["r"] is None
    assert config["base_model_name_or_path"] == str((root / "base").resolve()) and config["revision"] is None
    assert not {"rank", "base_model", "base_revision"} & set(config)  # the format 1 names
    assert re.fullmatch(r"[0-9a-f]{64}", config["base_model_sha256"])
    assert config["weights_sha256"] == sha256_file(folder / ADAPTER_WEIGHTS_NAME)
    assert (config["num_ws"], config["w_dim"], config["resolution"], config["lr_size"]) == (8, 32, 32, 16)
    model = DAPFSR(DAPFSRConfig.tiny())
    modulation = {"decoder." + n: list(p.shape) for n, p in model.decoder.modulation_parameters()}
    assert config["target_parameters"] == modulation
    assert config["target_modules"] == sorted({name.rsplit(".", 1)[0] for name in modulation})
    assert all(module.startswith("decoder.") and module.endswith(".affine") for module in config["target_modules"])
    tensors = load_file(str(folder / ADAPTER_WEIGHTS_NAME))
    assert set(tensors) == set(modulation) | {"damma.alpha", "damma.exemplar_w"}
    assert config["training"]["steps"] == 1 and "settings" in config["training"]


def test_lowrank_adapter_is_smaller_and_applies_base_plus_up_down(workspace, base_dir) -> None:
    _, folders = workspace
    full, thin = (folders[n] / ADAPTER_WEIGHTS_NAME for n in ("warm", "thin"))
    assert thin.stat().st_size < full.stat().st_size
    model = DAPFSR.from_pretrained(base_dir)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_adapter(folders["thin"])
    adapter = Adapter.load(folders["thin"])
    state = model.state_dict()
    for name, shape in adapter.config.target_parameters.items():
        if len(shape) == 2:
            expected = base[name] + adapter.tensors[name + LOWRANK_UP] @ adapter.tensors[name + LOWRANK_DOWN]
        else:
            expected = adapter.tensors[name]
        assert torch.allclose(state[name], expected)


def test_model_card_is_rendered_from_the_template(workspace) -> None:
    _, folders = workspace
    template = resources.files("facetools_dapfsr.hub_cards").joinpath("adapter.md").read_text()
    assert "${base_model_sha256}" in template
    card = (folders["warm"] / "README.md").read_text()
    config = json.loads((folders["warm"] / ADAPTER_CONFIG_NAME).read_text())
    assert "${" not in card
    assert config["base_model_sha256"] in card and config["weights_sha256"] in card
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["library_name"] == "facetools-dapfsr" and "damma" in metadata["tags"]
    assert "base_model" not in metadata  # a local path is not Hub metadata
    assert config["base_decoder"] == "stylegan2"
    for section in (
        "## Training data",
        "## Evaluation protocol",
        "## Metrics",
        "## Intended use",
        "## Limitations",
        "## Licence",
    ):
        assert section in card
    assert "dapfsr evaluate --target" in card and "native StyleGAN2" in card


# -- on the model -----------------------------------------------------------------------------
def test_round_trip_from_pretrained_with_adapter(workspace, base_dir) -> None:
    _, folders = workspace
    lr = lr_batch()
    model = DAPFSR.from_pretrained(base_dir, adapter=folders["warm"])
    assert model.active_adapter == "default" and model.adapter_names == ["default"]
    adapted = model.upscale(lr)
    with model.disable_adapter():
        source = model.upscale(lr)
    assert not torch.allclose(adapted, source)
    # save_adapter writes the same adapter back, byte for byte in its tensors
    again = model.save_adapter(base_dir.parent / "again")
    original, written = Adapter.load(folders["warm"]), Adapter.load(again)
    assert original.tensors.keys() == written.tensors.keys()
    assert all(torch.equal(original.tensors[k], written.tensors[k]) for k in original.tensors)
    assert written.config.weights_sha256 == sha256_file(again / ADAPTER_WEIGHTS_NAME)


def test_save_pretrained_with_an_active_adapter_saves_the_base(workspace, base_dir, tmp_path) -> None:
    _, folders = workspace
    lr = lr_batch()
    model = DAPFSR.from_pretrained(base_dir, adapter=folders["warm"])
    model.save_pretrained(tmp_path / "saved")
    assert model.active_adapter == "default"
    base = DAPFSR.from_pretrained(base_dir)
    assert torch.equal(DAPFSR.from_pretrained(tmp_path / "saved").upscale(lr), base.upscale(lr))
    assert (tmp_path / "saved" / "model.safetensors").read_bytes() == (base_dir / "model.safetensors").read_bytes()
    assert (tmp_path / "saved" / "model.safetensors").stat().st_mode & 0o044  # readable by others


def test_switching_never_rereads_the_base_weights(workspace, base_dir) -> None:
    _, folders = workspace
    lr = lr_batch()
    model = DAPFSR.from_pretrained(base_dir)
    source = model.upscale(lr)
    model.load_adapter(folders["warm"], adapter_name="warm")
    model.load_adapter(folders["cold"], adapter_name="cold", set_active=False)
    assert model.active_adapter == "warm" and model.adapter_names == ["warm", "cold"]
    shutil.rmtree(base_dir)  # from here on, nothing of the base can be read from disk
    warm = model.upscale(lr)
    model.set_adapter("cold")
    cold = model.upscale(lr)
    assert not torch.allclose(warm, cold)
    model.set_adapter("warm")
    assert torch.equal(model.upscale(lr), warm)
    with model.disable_adapter():
        assert torch.equal(model.upscale(lr), source)
        with model.disable_adapter():  # nested blocks keep the base until the outer one ends
            pass
        assert torch.equal(model.upscale(lr), source)
    assert model.active_adapter == "warm" and torch.equal(model.upscale(lr), warm)
    with pytest.raises(RuntimeError), model.disable_adapter():
        raise RuntimeError("an error inside the block still restores the adapter")
    assert torch.equal(model.upscale(lr), warm)
    model.delete_adapter("warm")
    assert model.active_adapter is None and model.adapter_names == ["cold"]
    assert torch.equal(model.upscale(lr), source)
    with pytest.raises(KeyError, match="no adapter named 'warm'"):
        model.set_adapter("warm")


def test_loading_under_an_existing_name_replaces_that_adapter(workspace, base_dir) -> None:
    _, folders = workspace
    lr = lr_batch()
    cold = DAPFSR.from_pretrained(base_dir, adapter=folders["cold"]).upscale(lr)
    model = DAPFSR.from_pretrained(base_dir, adapter=folders["warm"], adapter_name="style")
    model.load_adapter(folders["cold"], adapter_name="style", set_active=False)
    assert model.active_adapter == "style" and model.adapter_names == ["style"]
    assert torch.equal(model.upscale(lr), cold)


def test_damma_on_a_model_with_an_active_adapter_starts_from_the_base(workspace, base_dir) -> None:
    _, folders = workspace
    model = DAPFSR.from_pretrained(base_dir, adapter=folders["warm"])
    before = snapshot(model)
    exemplar = torch.full((1, 3, 32, 32), 0.5)
    result = run_damma(
        model, exemplar, config=ONE_STEP, vgg=VGGFeatures.from_weights_cache(progress=False), progress=False
    )
    assert same_state(before, model.state_dict()) and model.active_adapter == "default"
    model.add_adapter(result.adapter, "fresh")  # made for the same base: accepted
    assert model.active_adapter == "fresh"


# -- several adapters at once (set_adapters), unload ---------------------------------------------
def mixed_model(base_dir: Path, folders: dict, names=("warm", "cold", "thin")) -> DAPFSR:
    model = DAPFSR.from_pretrained(base_dir)
    for name in names:
        model.load_adapter(folders[name], adapter_name=name, set_active=False)
    return model


def test_set_adapters_with_one_adapter_at_weight_one_is_set_adapter(workspace, base_dir) -> None:
    _, folders = workspace
    lr = lr_batch()
    for name in ("warm", "thin"):  # a full and a low-rank adapter
        single, mixed = mixed_model(base_dir, folders), mixed_model(base_dir, folders)
        single.set_adapter(name)
        mixed.set_adapters([name], weights=[1.0])
        assert mixed.active_adapters == [name] and mixed.active_adapter == name and mixed.adapter_weights == [1.0]
        assert same_state(single.state_dict(), mixed.state_dict())
        assert torch.equal(single.upscale(lr), mixed.upscale(lr))
        mixed.set_adapters(name)  # a bare name, weight 1 by default
        assert same_state(single.state_dict(), mixed.state_dict())


def test_set_adapters_at_weight_zero_is_the_base_model(workspace, base_dir) -> None:
    _, folders = workspace
    lr = lr_batch()
    base = DAPFSR.from_pretrained(base_dir)
    model = mixed_model(base_dir, folders)
    model.set_adapters(["warm"], weights=[0.0])
    assert same_state(base.state_dict(), model.state_dict())
    assert torch.equal(base.upscale(lr), model.upscale(lr))
    model.set_adapters(["warm", "thin"], weights=[0.0, 0.0])
    assert same_state(base.state_dict(), model.state_dict())
    model.set_adapters([])
    assert model.active_adapters == [] and model.active_adapter is None
    assert same_state(base.state_dict(), model.state_dict())


def test_set_adapters_mixes_the_adapted_tensors(workspace, base_dir) -> None:
    _, folders = workspace
    lr = lr_batch()
    base = DAPFSR.from_pretrained(base_dir)
    base_state = base.state_dict()
    warm, cold, thin = (Adapter.load(folders[name]) for name in ("warm", "cold", "thin"))
    model = mixed_model(base_dir, folders)

    # two full adapters at [0.5, 0.5]: the average of their tensors on the base model
    model.set_adapters(["warm", "cold"], weights=[0.5, 0.5])
    assert model.active_adapters == ["warm", "cold"] and model.adapter_weights == [0.5, 0.5]
    average = {name: (warm.tensors[name] + cold.tensors[name]) / 2 for name in warm.config.target_parameters}
    manual = DAPFSR.from_pretrained(base_dir)
    manual.load_state_dict(base_state | average)
    state = model.state_dict()
    for name in average:
        assert torch.allclose(state[name], average[name], rtol=0, atol=1e-6), name
    # equal up to float rounding (the mix sums deltas): the decoder's output agrees to 1e-5; the
    # consistency step's iterative registration/refinement amplifies rounding, so the full output
    # is compared with the formula base + sum_i w_i (adapter_i - base), evaluated in that order
    assert torch.allclose(model.upscale(lr, consistency=False), manual.upscale(lr, consistency=False), atol=1e-5)
    formula = {
        name: base_state[name]
        + 0.5 * (warm.tensors[name] - base_state[name])
        + 0.5 * (cold.tensors[name] - base_state[name])
        for name in average
    }
    manual.load_state_dict(base_state | formula)
    assert same_state(manual.state_dict(), model.state_dict())
    assert torch.equal(model.upscale(lr), manual.upscale(lr))
    assert not torch.allclose(model.upscale(lr), base.upscale(lr))

    # a full and a low-rank adapter: base + 0.7 * (warm - base) + 0.3 * up @ down
    model.set_adapters(["warm", "thin"], weights=[0.7, 0.3])
    state = model.state_dict()
    for name, shape in thin.config.target_parameters.items():
        reference = base_state[name]
        low = (
            thin.tensors[name + LOWRANK_UP] @ thin.tensors[name + LOWRANK_DOWN]
            if len(shape) == 2
            else thin.tensors[name] - reference
        )
        expected = reference + 0.7 * (warm.tensors[name] - reference) + 0.3 * low
        assert torch.allclose(state[name], expected, rtol=0, atol=1e-6), name
    # the records of how an adapter was made are not mixed into the model
    assert not any(key.startswith("damma.") for key in state)


def test_disable_adapter_and_delete_with_several_active(workspace, base_dir) -> None:
    _, folders = workspace
    lr = lr_batch()
    source = DAPFSR.from_pretrained(base_dir).upscale(lr)
    model = mixed_model(base_dir, folders)
    model.set_adapters(["warm", "cold"], weights=[0.7, 0.3])
    mixed = model.upscale(lr)
    with model.disable_adapter():
        assert torch.equal(model.upscale(lr), source)
        assert model.active_adapters == ["warm", "cold"]  # still the active ones, only suspended
    assert torch.equal(model.upscale(lr), mixed)
    with pytest.raises(KeyError, match="are active together; pass adapter_name"):
        model.save_adapter(base_dir.parent / "which")
    model.delete_adapter("warm")  # the rest of the mix stays, with its weight
    assert model.active_adapters == ["cold"] and model.adapter_weights == [0.3]
    expected = mixed_model(base_dir, folders, names=("cold",))
    expected.set_adapters(["cold"], weights=[0.3])
    assert torch.equal(model.upscale(lr), expected.upscale(lr))


@pytest.mark.parametrize(
    ("names", "weights", "message"),
    [
        (["warm", "nir"], None, r"no adapter named 'nir'; loaded: warm, cold, thin"),
        (["warm", "cold"], [0.5], r"2 adapter name\(s\) but 1 weight\(s\)"),
        (["warm"], [0.5, 0.5], r"1 adapter name\(s\) but 2 weight\(s\)"),
        (["warm", "cold"], [0.5, float("nan")], r"weight of adapter 'cold' must be a finite number, got nan"),
        (["warm"], [float("inf")], r"weight of adapter 'warm' must be a finite number, got inf"),
        (["warm"], ["0.5"], r"weight of adapter 'warm' must be a finite number, got '0.5'"),
        (["warm", "warm"], [0.5, 0.5], r"adapter\(s\) named more than once: warm"),
    ],
    ids=["unknown", "too-few-weights", "too-many-weights", "nan", "inf", "not-a-number", "repeated"],
)
def test_set_adapters_refuses_bad_arguments_and_leaves_the_model_unchanged(
    workspace, base_dir, names, weights, message
) -> None:
    _, folders = workspace
    model = mixed_model(base_dir, folders)
    model.set_adapters(["warm", "thin"], weights=[0.6, 0.4])
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        model.set_adapters(names, weights=weights)
    assert same_state(before, model.state_dict())
    assert model.active_adapters == ["warm", "thin"] and model.adapter_weights == [0.6, 0.4]


def test_set_adapters_on_a_model_without_adapters(base_dir) -> None:
    model = DAPFSR.from_pretrained(base_dir)
    with pytest.raises(ValueError, match="no adapter named 'warm'; loaded: none"):
        model.set_adapters(["warm"])
    assert model.active_adapters == [] and model.adapter_weights == []


def test_unload_restores_the_base_and_forgets_every_adapter(workspace, base_dir) -> None:
    _, folders = workspace
    lr = lr_batch()
    base = DAPFSR.from_pretrained(base_dir)
    model = mixed_model(base_dir, folders)
    model.set_adapters(["warm", "cold", "thin"], weights=[0.5, 0.3, 0.2])
    assert model.unload() is model
    assert model.adapter_names == [] and model.active_adapters == [] and model.active_adapter is None
    assert same_state(base.state_dict(), model.state_dict())
    assert torch.equal(model.upscale(lr), base.upscale(lr))
    assert model.unload() is model  # nothing to unload: no error
    model.load_adapter(folders["warm"])  # adapters attach again afterwards
    assert torch.equal(model.upscale(lr), DAPFSR.from_pretrained(base_dir, adapter=folders["warm"]).upscale(lr))
    with model.disable_adapter():  # unloading inside the block leaves the base after it, too
        model.unload()
    assert same_state(base.state_dict(), model.state_dict()) and model.adapter_names == []


# -- the format 1 layout (before PEFT's names) -----------------------------------------------------
def _format_1_adapter(folder: Path, target: Path) -> Path:
    """The adapter as format 1 wrote it: DAP-FSR's own field names, no peft_type/target_modules."""

    def edit(config):
        for old, new in (("rank", "r"), ("base_model", "base_model_name_or_path"), ("base_revision", "revision")):
            config[old] = config.pop(new)
        del config["peft_type"], config["target_modules"]
        config["format_version"] = 1

    return _rewrite(folder, target, edit_config=edit)


def test_an_adapter_in_the_format_1_layout_still_loads(workspace, base_dir, tmp_path) -> None:
    _, folders = workspace
    lr = lr_batch()
    for name in ("warm", "thin"):
        old = _format_1_adapter(folders[name], tmp_path / f"old-{name}")
        written = json.loads((old / ADAPTER_CONFIG_NAME).read_text())
        assert written["format_version"] == 1 and "rank" in written and "r" not in written
        adapter = Adapter.load(old)
        current = Adapter.load(folders[name])
        assert adapter.config.r == current.config.r and adapter.config.rank == current.config.r
        assert adapter.config.base_model_name_or_path == current.config.base_model_name_or_path
        assert adapter.config.base_model == current.config.base_model_name_or_path
        assert adapter.config.target_modules == current.config.target_modules
        model = DAPFSR.from_pretrained(base_dir, adapter=old)
        expected = DAPFSR.from_pretrained(base_dir, adapter=folders[name])
        assert torch.equal(model.upscale(lr), expected.upscale(lr))
        # saved again, it is written in the current format
        again = json.loads((model.save_adapter(tmp_path / f"again-{name}") / ADAPTER_CONFIG_NAME).read_text())
        assert again["format_version"] == 2 and again["r"] == written["rank"] and "rank" not in again


def test_a_format_1_adapter_keeps_its_integrity_checks(workspace, base_dir, tmp_path) -> None:
    _, folders = workspace
    model = DAPFSR.from_pretrained(base_dir)
    tampered = _tampered_adapter(_format_1_adapter(folders["warm"], tmp_path / "old"), tmp_path / "tampered")
    with pytest.raises(AdapterError, match="does not match the sha256 recorded in adapter_config.json"):
        model.load_adapter(tampered)
    other = _rewrite(
        _format_1_adapter(folders["warm"], tmp_path / "old2"),
        tmp_path / "other",
        edit_config=lambda c: c.update(base_model_sha256="0" * 64, base_model="someone/else"),
    )
    with pytest.raises(AdapterError, match=r"made for another base model \(someone/else"):
        model.load_adapter(other)
    mixed = _rewrite(
        folders["warm"], tmp_path / "mixed", edit_config=lambda c: c.update(format_version=1, rank=None)
    )  # format 1 does not know the PEFT names, format 2 not the old ones
    with pytest.raises(AdapterError, match="unknown field"):
        model.load_adapter(mixed)
    with pytest.raises(AdapterError, match=r"unknown field\(s\) rank"):
        model.load_adapter(
            _rewrite(folders["warm"], tmp_path / "v2-old-name", edit_config=lambda c: c.update(rank=None))
        )
    assert model.adapter_names == []


# -- refusals: clear error, model unchanged ----------------------------------------------------
def _rewrite(
    folder: Path, target: Path, edit_config=None, edit_tensors=None, keep_hash: bool = False, sync_modules: bool = True
) -> Path:
    """Copy an adapter folder with edited config/tensors; the recorded hash matches the new file
    unless ``keep_hash`` (then the copy looks tampered with). ``target_modules`` follows an
    edited ``target_parameters`` (as any writer's would) unless ``sync_modules`` is false."""
    adapter = Adapter.load(folder)
    config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    tensors = dict(adapter.tensors)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        edit_config(config)
    if sync_modules and "target_modules" in config and isinstance(config["target_parameters"], dict):
        config["target_modules"] = sorted({name.rsplit(".", 1)[0] for name in config["target_parameters"]})
    from safetensors.torch import save_file

    target.mkdir(parents=True)
    save_file(tensors, str(target / ADAPTER_WEIGHTS_NAME))
    if not keep_hash:
        config["weights_sha256"] = sha256_file(target / ADAPTER_WEIGHTS_NAME)
    (target / ADAPTER_CONFIG_NAME).write_text(json.dumps(config))
    return target


def _other_base_adapter(folder: Path, target: Path) -> Path:
    def edit(config):
        config["base_model_sha256"] = "0" * 64
        config["base_model_name_or_path"] = "someone/else"

    return _rewrite(folder, target, edit_config=edit)


def _wrong_shape_adapter(folder: Path, target: Path) -> Path:
    name = "decoder.blocks.0.convs.0.affine.weight"

    def tensors(t):
        t[name] = t[name][:16]

    def config(c):
        c["target_parameters"][name] = [16, 32]

    return _rewrite(folder, target, edit_config=config, edit_tensors=tensors)


def _wrong_geometry_adapter(folder: Path, target: Path) -> Path:
    def tensors(t):
        t["damma.alpha"] = torch.full((10,), 0.5)
        t["damma.exemplar_w"] = torch.zeros(10, 32)

    return _rewrite(folder, target, edit_config=lambda c: c.update(num_ws=10), edit_tensors=tensors)


def _tampered_adapter(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    path = target / ADAPTER_WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one bit pattern in the last tensor's data
    path.write_bytes(bytes(data))
    return target


def _inconsistent_adapter(folder: Path, target: Path) -> Path:
    # claims to be low-rank but holds full tensors (hash recomputed: a bad writer, not tampering)
    return _rewrite(folder, target, edit_config=lambda c: c.update(kind="lowrank", r=2))


def _listed_targets_adapter(folder: Path, target: Path) -> Path:
    return _rewrite(folder, target, edit_config=lambda c: c.update(target_parameters=list(c["target_parameters"])))


def _scalar_shape_adapter(folder: Path, target: Path) -> Path:
    def config(c):
        name = next(iter(c["target_parameters"]))
        c["target_parameters"][name] = 32

    return _rewrite(folder, target, edit_config=config)


def _null_base_hash_adapter(folder: Path, target: Path) -> Path:
    return _rewrite(folder, target, edit_config=lambda c: c.update(base_model_sha256=None))


def _non_finite_adapter(folder: Path, target: Path) -> Path:
    # NaN tensors with the sha256 re-recorded: the hash matches, the values are unusable.
    def tensors(t):
        name = next(n for n in sorted(t) if n.startswith("decoder."))
        t[name] = torch.full_like(t[name], float("nan"))

    return _rewrite(folder, target, edit_tensors=tensors)


def _future_adapter(folder: Path, target: Path) -> Path:
    return _rewrite(folder, target, edit_config=lambda c: c.update(format_version=99))


def _wrong_target_modules_adapter(folder: Path, target: Path) -> Path:
    def config(c):
        c["target_modules"] = c["target_modules"][1:] + ["encoder.ale.0.fc"]

    return _rewrite(folder, target, edit_config=config, sync_modules=False)


def _foreign_parameter_adapter(folder: Path, target: Path) -> Path:
    name = "encoder.ale.0.fc.weight"

    def tensors(t):
        t[name] = torch.zeros(3, 3)

    def config(c):
        c["target_parameters"][name] = [3, 3]

    return _rewrite(folder, target, edit_config=config, edit_tensors=tensors)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (_other_base_adapter, AdapterError, r"made for another base model \(someone/else"),
        (
            _wrong_shape_adapter,
            AdapterError,
            r"does not fit this model: shape mismatch: decoder.blocks.0.convs.0.affine.weight",
        ),
        (_wrong_geometry_adapter, AdapterError, r"model of another shape: num_ws 10 \(model: 8\)"),
        (_foreign_parameter_adapter, AdapterError, r"not modulation parameters of this model: encoder.ale.0.fc.weight"),
        (_tampered_adapter, AdapterError, r"does not match the sha256 recorded in adapter_config.json"),
        (_inconsistent_adapter, AdapterError, r"does not match its adapter_config.json: missing tensor"),
        (_future_adapter, AdapterError, r"format version 99 is not supported"),
        (
            _non_finite_adapter,
            AdapterError,
            r"adapter_model.safetensors: NaN or infinite values in tensor\(s\) decoder\.",
        ),
        (
            _listed_targets_adapter,
            AdapterError,
            r"adapter_config.json: target_parameters must map parameter names to shapes",
        ),
        (_scalar_shape_adapter, AdapterError, r"adapter_config.json: target_parameters\['.*'\] must be a shape"),
        (_null_base_hash_adapter, AdapterError, r"adapter_config.json: base_model_sha256 must be a string, got None"),
        (
            _wrong_target_modules_adapter,
            AdapterError,
            r"adapter_config.json: target_modules must list the modules of target_parameters, sorted \(missing: "
            r"decoder\.blocks\.0\.convs\.0\.affine; not targeted: encoder\.ale\.0\.fc\)",
        ),
        (lambda folder, target: target, FileNotFoundError, r"no such model folder|has no adapter_config.json"),
    ],
    ids=[
        "other-base",
        "wrong-shape",
        "wrong-geometry",
        "foreign-parameter",
        "tampered",
        "inconsistent",
        "future",
        "non-finite",
        "listed-targets",
        "scalar-shape",
        "null-base-hash",
        "wrong-target-modules",
        "missing",
    ],  # fmt: skip
)
def test_bad_adapters_are_refused_and_leave_the_model_unchanged(
    workspace, base_dir, tmp_path, make, error, message
) -> None:
    _, folders = workspace
    model = DAPFSR.from_pretrained(base_dir, adapter=folders["warm"], adapter_name="warm")
    before = snapshot(model)
    bad = make(folders["warm"], tmp_path / "bad")
    with pytest.raises(error, match=message):
        model.load_adapter(bad, adapter_name="bad")
    assert same_state(before, model.state_dict())
    assert model.active_adapter == "warm" and model.adapter_names == ["warm"]


def test_from_pretrained_refuses_an_adapter_for_another_base(workspace, tmp_path) -> None:
    _, folders = workspace
    torch.manual_seed(1)
    other = DAPFSR(DAPFSRConfig.tiny())
    other.refresh_latent_statistics(num_samples=500)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(AdapterError, match="made for another base model"):
        DAPFSR.from_pretrained(tmp_path / "other", adapter=folders["warm"])


def test_an_in_memory_adapter_with_nan_is_refused(workspace, base_dir) -> None:
    _, folders = workspace
    model = DAPFSR.from_pretrained(base_dir)
    adapter = Adapter.load(folders["warm"])
    adapter.tensors["damma.alpha"] = torch.full_like(adapter.alpha, float("inf"))
    with pytest.raises(AdapterError, match=r"adapter 'bad': NaN or infinite values in tensor\(s\) damma.alpha"):
        model.add_adapter(adapter, "bad")
    assert model.adapter_names == []


# -- adapters that travel: the base fingerprint ---------------------------------------------------
def test_the_fingerprint_does_not_change_with_dtype_or_for_a_copy(base_dir) -> None:
    from facetools_dapfsr.hub.adapters import model_fingerprint

    model = DAPFSR.from_pretrained(base_dir)
    fp32 = model_fingerprint(model)
    assert model_fingerprint(DAPFSR.from_pretrained(base_dir)) == fp32
    assert model_fingerprint(model.half()) == fp32
    assert model_fingerprint(model.float()) == fp32
    with torch.no_grad():
        next(model.encoder.parameters()).add_(0.01)  # a different model
    assert model_fingerprint(model) != fp32


def test_an_fp16_model_loads_an_fp32_made_adapter(workspace, base_dir) -> None:
    _, folders = workspace
    assert Adapter.load(folders["warm"]).tensors["damma.alpha"].dtype == torch.float32
    model = DAPFSR.from_pretrained(base_dir).half()
    model.load_adapter(folders["warm"])
    reference = DAPFSR.from_pretrained(base_dir, adapter=folders["warm"])
    state, expected = model.state_dict(), reference.state_dict()
    for name in Adapter.load(folders["warm"]).config.target_parameters:
        assert state[name].dtype == torch.float16
        assert torch.equal(state[name], expected[name].half())


def test_an_adapter_recorded_with_the_old_fingerprint_still_loads(workspace, base_dir, tmp_path) -> None:
    from facetools_dapfsr.hub.adapters import tensor_fingerprint

    _, folders = workspace
    model = DAPFSR.from_pretrained(base_dir)
    old = tensor_fingerprint(model.state_dict())  # what adapters recorded before fingerprint 2
    legacy = _rewrite(folders["warm"], tmp_path / "legacy", edit_config=lambda c: c.update(base_model_sha256=old))
    model.load_adapter(legacy)
    assert model.active_adapter == "default"


def test_a_rebuilt_prior_cache_still_accepts_an_adapter_of_the_builtin_model(weights_cache, tmp_path, monkeypatch):
    from safetensors.torch import load as load_bytes
    from safetensors.torch import save as save_bytes

    from facetools_dapfsr.hub.adapters import AdapterConfig, model_fingerprint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    builtin = DAPFSR.default()
    targets = {"decoder." + n: p for n, p in builtin.decoder.modulation_parameters()}
    config = AdapterConfig(
        kind="full", r=None, base_model_sha256=model_fingerprint(builtin),
        target_parameters={n: list(p.shape) for n, p in targets.items()},
        num_ws=builtin.num_ws, w_dim=builtin.w_dim, resolution=builtin.config.hr_size, lr_size=builtin.config.lr_size,
    )  # fmt: skip
    tensors = {n: p.detach() * 1.01 for n, p in targets.items()}
    tensors["damma.alpha"] = torch.ones(builtin.num_ws)
    tensors["damma.exemplar_w"] = torch.zeros(builtin.num_ws, builtin.w_dim)
    folder = Adapter(config=config, tensors=tensors).save(tmp_path / "adapter")

    # The cache rebuilt from the same pinned artifact: the computed tensors differ in their last
    # bits (as two conversions on different machines may), the provenance still matches.
    entry = "ffhq-mobilestylegan"
    rebuilt = tmp_path / "cache" / entry
    rebuilt.mkdir(parents=True)
    prior = load_bytes((weights_cache / entry / "model.safetensors").read_bytes())
    for name in ("w_mean", "w_std", "frame_landmarks"):
        prior[name] = torch.nextafter(prior[name], torch.full_like(prior[name], float("inf")))
    data = save_bytes(prior, metadata={"source": entry, "format": "pt"})
    (rebuilt / "model.safetensors").write_bytes(data)
    provenance = json.loads((weights_cache / entry / "provenance.json").read_text())
    provenance["safetensors_sha256"] = hashlib.sha256(data).hexdigest()
    (rebuilt / "provenance.json").write_text(json.dumps(provenance))
    monkeypatch.setenv("DAPFSR_CACHE", str(tmp_path / "cache"))

    model = DAPFSR.default()
    assert not torch.equal(model.decoder.w_mean, builtin.decoder.w_mean)  # the rebuilt prior is in use
    model.load_adapter(folder)
    DAPFSR.default().half().load_adapter(folder)


# -- packaging ----------------------------------------------------------------------------------
def test_every_package_is_listed_in_pyproject() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(REPO_ROOT).parts)
        for path in (REPO_ROOT / "facetools_dapfsr").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert on_disk | {"facetools_dapfsr.hub_cards"} == listed, "update [tool.setuptools] packages in pyproject.toml"
    assert pyproject["tool"]["setuptools"]["package-dir"]["facetools_dapfsr.hub_cards"] == "hub_cards"


def test_wheel_ships_the_card_templates_and_the_builtin_model(tmp_path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for name in ("facetools_dapfsr", "hub_cards"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "facetools_dapfsr/hub_cards/adapter.md",
        "facetools_dapfsr/hub_cards/base_model.md",
        "facetools_dapfsr/hub_cards/__init__.py",
        "facetools_dapfsr/default_model/config.json",
        "facetools_dapfsr/default_model/model.safetensors",
        "facetools_dapfsr/default_model/model_card.json",
        "facetools_dapfsr/default_model/README.md",
    } <= names
    assert "facetools_dapfsr/hub/adapters.py" in names
