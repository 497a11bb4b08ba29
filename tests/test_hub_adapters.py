"""Adapters through real HTTP servers on 127.0.0.1 with the real huggingface_hub client.

Uploads go to the upload server in ``tests/hub_server.py``; downloads come through ``olah`` (an
open-source Hub mirror, offline mode) serving the git repositories that server wrote. The client
runs in subprocesses because ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET``
and ``HF_HUB_OFFLINE`` once, at import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hub_server import HubServer, free_port
from safetensors.torch import load_file

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.adaptation.damma import DAMMAConfig, run_damma
from facetools_dapfsr.fileio import sha256_file
from facetools_dapfsr.losses import VGGFeatures

pytest.importorskip("olah", reason="olah (the Hub mirror used for download tests) is not installed")

ADAPTER_REPO = "faces/dapfsr-adapter-lighting"
TAMPERED_REPO = "faces/dapfsr-adapter-tampered"
BASE_REPO = "faces/dapfsr-tiny"
LR_SEED = 3


def lr_batch() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(LR_SEED))


@pytest.fixture(scope="module")
def local(tmp_path_factory, weights_cache) -> dict[str, Path]:
    """A tiny base model folder and two adapter folders (v1, v2) made for it by DAMMA."""
    root = tmp_path_factory.mktemp("local")
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    model.refresh_latent_statistics(num_samples=500)
    model.save_pretrained(root / "base")
    vgg = VGGFeatures.from_weights_cache(progress=False)
    config = DAMMAConfig(batch_size=2, window=1, max_steps=1)
    paths = {"base": root / "base"}
    for version, (colour, rank) in {"v1": (0.8, 0), "v2": (0.2, 2)}.items():
        exemplar = torch.full((1, 3, 32, 32), colour)
        result = run_damma(model, exemplar, config=dataclasses.replace(config, rank=rank), vgg=vgg, progress=False)
        paths[version] = result.adapter.save(root / version)
    return paths


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server


@pytest.fixture(scope="module")
def olah(tmp_path_factory, hub, pushed):
    """olah in offline mode, mirroring the upload server's repositories (after the pushes)."""
    folder = tmp_path_factory.mktemp("olah")
    port = free_port(hub.port + 1)
    (folder / "olah.toml").write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{folder / "cache"}"\n'
        f'mirrors-path = ["{hub.root}"]\n'
        f'mirror-scheme = "http"\nmirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        "[accessibility]\noffline = true\n"
    )
    executable = shutil.which("olah-cli", path=str(Path(sys.executable).parent)) or shutil.which("olah-cli")
    if executable is None:
        pytest.skip("olah-cli not found")
    log = (folder / "olah.log").open("w")
    process = subprocess.Popen(
        [executable, "-c", str(folder / "olah.toml")], cwd=folder, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"olah did not start: {(folder / 'olah.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def run_client(script: str, args: dict, endpoint: str, hf_home: Path, offline: bool = False) -> dict:
    """Run ``script`` with the real huggingface_hub client configured by environment variables;
    it prints one JSON object as its last line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_TOKEN="hf_test_token",
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps({k: str(v) for k, v in args.items()})],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


PUSH = """
import json, sys
from huggingface_hub import HfApi
from facetools_dapfsr import DAPFSR
a = json.loads(sys.argv[1])
model = DAPFSR.from_pretrained(a["base"])
base_commit = model.push_to_hub(a["base_repo"])
model.load_adapter(a["v1"], adapter_name="v1")
v1 = model.push_adapter_to_hub(a["repo"], adapter_name="v1", commit_message="v1")
model.load_adapter(a["v2"], adapter_name="v2")
v2 = model.push_adapter_to_hub(a["repo"], commit_message="v2")  # the active adapter
model.push_adapter_to_hub(a["tampered"], adapter_name="v1")
# someone replaces the weights of the published adapter, leaving its config as it was
HfApi().upload_file(path_or_fileobj=a["v2"] + "/adapter_model.safetensors",
                    path_in_repo="adapter_model.safetensors", repo_id=a["tampered"], commit_message="new weights")
print(json.dumps({"v1": v1.oid, "v2": v2.oid, "v1_url": str(v1), "base": base_commit}))
"""


@pytest.fixture(scope="module")
def pushed(hub, local, tmp_path_factory) -> dict:
    args = {
        "base": local["base"],
        "v1": local["v1"],
        "v2": local["v2"],
        "repo": ADAPTER_REPO,
        "tampered": TAMPERED_REPO,
        "base_repo": BASE_REPO,
    }
    return run_client(PUSH, args, hub.url, tmp_path_factory.mktemp("hf-push"))


def test_push_creates_commits_with_lfs_weights(hub, local, pushed) -> None:
    repository = hub.repository(ADAPTER_REPO)
    log = repository.git("log", "--format=%H %s").stdout.decode().splitlines()
    assert log[0] == f"{pushed['v2']} v2" and log[1] == f"{pushed['v1']} v1"
    assert pushed["v1_url"] == f"{hub.url}/{ADAPTER_REPO}/commit/{pushed['v1']}"
    files = {item["path"]: item for item in repository.entries(pushed["v1"], "", recursive=True)}
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors"} <= set(files)
    weights = files["adapter_model.safetensors"]
    assert weights["lfs"]["oid"] == sha256_file(local["v1"] / "adapter_model.safetensors")
    assert (
        repository.lfs_path(weights["lfs"]["oid"]).read_bytes()
        == (local["v1"] / "adapter_model.safetensors").read_bytes()
    )
    assert "lfs" not in files["adapter_config.json"]
    # the client went through the Hub's upload protocol, not a shortcut
    assert ("POST", "/api/repos/create") in hub.requests
    assert any(m == "POST" and p.endswith("/preupload/main") for m, p in hub.requests)
    assert any(m == "POST" and p.endswith(".git/info/lfs/objects/batch") for m, p in hub.requests)
    assert any(m == "PUT" and p.startswith(f"/lfs-objects/{ADAPTER_REPO}/") for m, p in hub.requests)
    assert any(m == "POST" and p == f"/api/models/{ADAPTER_REPO}/commit/main" for m, p in hub.requests)


PULL = """
import json, sys, torch
from safetensors.torch import save_file
from facetools_dapfsr import DAPFSR
from facetools_dapfsr.hub.adapters import registry_of
a = json.loads(sys.argv[1])
lr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(int(a["seed"])))
outputs, errors = {}, {}
for name, revision in (("v1", a["v1"]), ("v2", a["v2"]), ("main", None)):
    model = DAPFSR.from_pretrained(a["base"], adapter=a["repo"], adapter_revision=revision)
    outputs[name] = model.upscale(lr)
# the base model from the Hub: its commit is recorded for adapters made from it, and adapters
# made from the same tensors elsewhere fit it (identity is the content hash, not the source)
hub_base = DAPFSR.from_pretrained(a["base_repo"])
registry = registry_of(hub_base)
hub_base.load_adapter(a["repo"], revision=a["v1"])
outputs["hub_base_v1"] = hub_base.upscale(lr)
model = DAPFSR.from_pretrained(a["base"])
outputs["base"] = model.upscale(lr)
for key, repo in (("missing", "faces/no-such-adapter"), ("tampered", a["tampered"])):
    try:
        model.load_adapter(repo)
    except Exception as error:
        errors[key] = f"{type(error).__name__}: {error}"
outputs["after_errors"] = model.upscale(lr)
save_file({k: v.contiguous() for k, v in outputs.items()}, a["out"])
print(json.dumps({"errors": errors, "active": model.active_adapter,
                  "base_model": registry.base_model, "base_revision": registry.base_revision}))
"""


def expected_outputs(local) -> dict[str, torch.Tensor]:
    lr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(LR_SEED))
    return {
        version: DAPFSR.from_pretrained(local["base"], adapter=local[version]).upscale(lr) for version in ("v1", "v2")
    } | {"base": DAPFSR.from_pretrained(local["base"]).upscale(lr)}


@pytest.fixture(scope="module")
def pulled(olah, local, pushed, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("pull")
    args = {
        "base": local["base"], "repo": ADAPTER_REPO, "tampered": TAMPERED_REPO, "base_repo": BASE_REPO,
        "v1": pushed["v1"], "v2": pushed["v2"], "seed": LR_SEED, "out": folder / "outputs.safetensors",
    }  # fmt: skip
    report = run_client(PULL, args, olah, folder / "hf-home")
    return {"report": report, "outputs": load_file(str(folder / "outputs.safetensors")), "hf_home": folder / "hf-home"}


def test_pull_by_revision_through_olah(local, pushed, pulled) -> None:
    expected, outputs = expected_outputs(local), pulled["outputs"]
    assert torch.equal(outputs["v1"], expected["v1"])
    assert torch.equal(outputs["v2"], expected["v2"])
    assert torch.equal(outputs["main"], expected["v2"])  # main is the latest push
    assert not torch.equal(outputs["v1"], outputs["v2"])


def test_base_from_the_hub_records_its_commit(pushed, pulled, local) -> None:
    report = pulled["report"]
    assert report["base_model"] == BASE_REPO
    assert report["base_revision"] == pushed["base"].rsplit("/", 1)[-1]
    assert torch.equal(pulled["outputs"]["hub_base_v1"], expected_outputs(local)["v1"])


def test_missing_repo_is_a_clear_error(pulled) -> None:
    error = pulled["report"]["errors"]["missing"]
    assert error.startswith("FileNotFoundError") and "faces/no-such-adapter" in error and "not found" in error


def test_tampered_adapter_is_refused_and_the_model_left_unchanged(pulled) -> None:
    report, outputs = pulled["report"], pulled["outputs"]
    error = report["errors"]["tampered"]
    assert error.startswith("AdapterError") and "does not match the sha256 recorded" in error
    assert report["active"] is None
    assert torch.equal(outputs["after_errors"], outputs["base"])


OFFLINE = """
import json, sys, torch
from facetools_dapfsr import DAPFSR
a = json.loads(sys.argv[1])
lr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(int(a["seed"])))
model = DAPFSR.from_pretrained(a["base"], adapter=a["repo"], adapter_revision=a["v1"])
v1 = model.upscale(lr)
try:
    model.load_adapter("faces/never-downloaded", adapter_name="other")
    error = None
except FileNotFoundError as e:
    error = str(e)
print(json.dumps({"v1": v1.flatten().tolist(), "error": error}))
"""


def test_cached_adapter_is_reused_offline(local, pushed, pulled) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here: any request would fail
    args = {"base": local["base"], "repo": ADAPTER_REPO, "v1": pushed["v1"], "seed": LR_SEED}
    report = run_client(OFFLINE, args, dead, pulled["hf_home"], offline=True)
    assert torch.equal(torch.tensor(report["v1"]).reshape(2, 3, 32, 32), expected_outputs(local)["v1"])
    assert "not in the local Hub cache" in report["error"] and "HF_HUB_OFFLINE" in report["error"]
    # Without HF_HUB_OFFLINE the Hub is tried once, found unreachable, and the cache serves alone.
    report = run_client(OFFLINE, args, dead, pulled["hf_home"])
    assert torch.equal(torch.tensor(report["v1"]).reshape(2, 3, 32, 32), expected_outputs(local)["v1"])
    assert report["error"].startswith(
        f"no such local folder: faces/never-downloaded, and the Hub ({dead}) cannot be reached"
    )


def test_cli_adapt_pushes_the_adapter(hub, local, data_dir, weights_cache, tmp_path) -> None:
    exemplar = data_dir / "yaleb" / "yaleB01" / "yaleB01_P00A+050E+00.png"
    if not exemplar.is_file():
        pytest.skip(f"{exemplar} not found")
    script = "import sys; from facetools_dapfsr.cli.main import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_test_token",
        HF_HUB_DISABLE_PROGRESS_BARS="1", DAPFSR_CACHE=str(weights_cache),
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", script, "adapt", "--exemplar", str(exemplar), "--model", str(local["base"]),
         "--out", str(tmp_path / "adapter"), "--steps", "1", "--quiet", "--push-to-hub", "faces/from-cli"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"pushed to faces/from-cli: {hub.url}/faces/from-cli/commit/" in done.stdout
    repository = hub.repository("faces/from-cli")
    files = {item["path"]: item for item in repository.entries("main", "", recursive=True)}
    pushed_oid = files["adapter_model.safetensors"]["lfs"]["oid"]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert pushed_oid == config["weights_sha256"] == sha256_file(tmp_path / "adapter" / "adapter_model.safetensors")
