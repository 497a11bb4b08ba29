"""Hub-format checkpoints: round trip, strict loading, clear errors."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from facetools_dapfsr import DAPFSR, DAPFSRConfig, __version__


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    model.refresh_latent_statistics(num_samples=500)
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_round_trip_gives_identical_output(saved) -> None:
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "checksums.json",
        "config.json",
        "model.safetensors",
        "model_card.json",
    ]
    loaded = DAPFSR.from_pretrained(folder)
    assert not loaded.training
    assert loaded.config == model.config
    lr = torch.rand(4, 3, 16, 16)
    assert torch.equal(model.upscale(lr), loaded.upscale(lr))
    assert torch.equal(loaded.w_mu, model.w_mu)


def test_checkpoint_is_plain_safetensors_and_json(saved) -> None:
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "dapfsr" and config["decoder"]["type"] == "stylegan2"
    tensors = load_file(str(folder / "model.safetensors"))
    assert "w_mu" in tensors and any(k.startswith("encoder.ale.") for k in tensors)


def test_missing_tensor_is_named(saved) -> None:
    _, folder = saved
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["w_sigma"]
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "checksums.json").unlink()  # a hand-edited folder, as saved before the record
    with pytest.raises(ValueError, match=r"missing tensor\(s\): w_sigma"):
        DAPFSR.from_pretrained(folder)


def test_unexpected_tensor_is_named(saved) -> None:
    _, folder = saved
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "checksums.json").unlink()  # a hand-edited folder, as saved before the record
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\): extra.weight"):
        DAPFSR.from_pretrained(folder)


def test_config_mismatch_names_shapes(saved) -> None:
    model, folder = saved
    other = dataclasses.replace(model.config, encoder=dataclasses.replace(model.config.encoder, ale_hidden=24))
    (folder / "config.json").write_text(other.to_json_string())
    with pytest.raises(ValueError, match=r"shape mismatch.*expected \(24,"):
        DAPFSR.from_pretrained(folder)


def test_truncated_weights_file(saved) -> None:
    _, folder = saved
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        DAPFSR.from_pretrained(folder)


def test_pickle_is_never_loaded(saved) -> None:
    model, folder = saved
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        DAPFSR.from_pretrained(folder)


def test_missing_folder_and_unknown_hub_repo(tmp_path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        DAPFSR.from_pretrained(tmp_path / "absent")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads HF_HUB_OFFLINE at import time: check in a fresh interpreter
    code = (
        "from facetools_dapfsr import DAPFSR\n"
        "try:\n    DAPFSR.from_pretrained('someone/not-cached')\n"
        "except FileNotFoundError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ERR" in out and "not in the local Hub cache" in out


UNREACHABLE = """
from facetools_dapfsr import DAPFSR
try:
    DAPFSR.from_pretrained("my-modle")
except FileNotFoundError as error:
    print(error)
"""


def answer_nothing(server: socket.socket, hang_up: bool, requests: list[str], connections: list[socket.socket]) -> None:
    """Accept connections, read each request line, then hang up or keep the connection silent."""
    while True:
        try:
            connection, _ = server.accept()
        except OSError:  # closed: the test is over
            return
        connections.append(connection)
        with connection.makefile("rb") as stream:
            requests.append(stream.readline().decode().strip())
        if hang_up:
            connection.close()


def test_a_mistyped_name_with_the_hub_unreachable_fails_at_once(tmp_path) -> None:
    """A name that is no local folder, with the Hub down: one request, then a message saying both."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf")

    def load(endpoint: str) -> str:
        # huggingface_hub reads HF_ENDPOINT at import: a fresh interpreter per endpoint
        done = subprocess.run(
            [sys.executable, "-c", UNREACHABLE], env={**env, "HF_ENDPOINT": endpoint},
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    # A bound socket that does not listen refuses every connection.
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{refusing.getsockname()[1]}"
        message = load(endpoint)
    assert message.startswith(f"no such local folder: my-modle, and the Hub ({endpoint}) cannot be reached")
    assert "Connection refused" in message and "config.json is not in the local Hub cache" in message

    # Servers that read each request and then hang up, or never answer (a dead proxy, a firewall
    # that drops packets): hf_hub_download alone raised httpx's RemoteProtocolError for the first
    # and asked the second again with a 60 s timeout, five times over.
    for hang_up, reason in ((True, "RemoteProtocolError"), (False, "ReadTimeout")):
        requests: list[str] = []
        connections: list[socket.socket] = []
        with socket.create_server(("127.0.0.1", 0)) as server:
            threading.Thread(target=answer_nothing, args=(server, hang_up, requests, connections), daemon=True).start()
            endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
            env["HF_HUB_ETAG_TIMEOUT"] = "1"  # the client's own timeout for a Hub request
            message = load(endpoint)
            for connection in connections:
                connection.close()
        assert message.startswith(f"no such local folder: my-modle, and the Hub ({endpoint}) cannot be reached")
        assert reason in message
        # (huggingface_hub also asks once for its /api/agent-harnesses list, for its user agent)
        assert [line for line in requests if "/my-modle/" in line] == [
            "HEAD /my-modle/resolve/main/config.json HTTP/1.1"
        ]


def test_cli_help_and_version() -> None:
    # the console script installed next to this interpreter (pip install -e .)
    dapfsr = str(Path(sys.executable).parent / "dapfsr")
    out = subprocess.run([dapfsr, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"dapfsr {__version__}"
    out = subprocess.run([dapfsr, "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: dapfsr" in out


def test_sharded_save_round_trips_and_replaces_an_earlier_layout(tmp_path) -> None:
    import json

    import torch

    from facetools_dapfsr import DAPFSR, DAPFSRConfig

    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    folder = model.save_pretrained(tmp_path / "m", max_shard_bytes=400_000)
    shards = sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and not (folder / "model.safetensors").exists()
    assert all((folder / name).stat().st_size <= 400_000 for name in shards)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    lr = torch.rand(2, 3, 16, 16)
    assert torch.equal(DAPFSR.from_pretrained(folder).upscale(lr), model.upscale(lr))

    # An index that does not match its files is refused, naming the file.
    name, first = next(iter(index["weight_map"].items()))
    other = next(f for f in shards if f != first)
    broken = dict(index, weight_map={**index["weight_map"], name: other})
    (folder / "model.safetensors.index.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="model.safetensors.index.json: sha256"):  # the recorded hash
        DAPFSR.from_pretrained(folder)
    (folder / "checksums.json").unlink()  # as saved before the record: the layout check remains
    with pytest.raises(ValueError, match="does not hold the tensors"):
        DAPFSR.from_pretrained(folder)

    # Saving again as one file leaves no shard or index behind to be read instead.
    model.save_pretrained(folder)
    assert sorted(p.name for p in folder.glob("model*safetensors*")) == ["model.safetensors"]
    assert torch.equal(DAPFSR.from_pretrained(folder).upscale(lr), model.upscale(lr))


def test_a_mistyped_local_folder_is_not_sent_to_the_hub(tmp_path, monkeypatch) -> None:
    from facetools_dapfsr.hub import checkpoint

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was asked for a local path")

    monkeypatch.setattr(checkpoint, "_hub_download", no_hub)
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    for mistyped in ("runs/my-modle", "runs/a/b", "./my-model", str(tmp_path / "nope")):
        with pytest.raises(FileNotFoundError, match="no such model folder"):
            DAPFSR.from_pretrained(mistyped)


def test_mistyped_config_and_card_files_are_named(tmp_path) -> None:
    model = DAPFSR(DAPFSRConfig.tiny())
    folder = model.save_pretrained(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    for field, value, message in (
        ("lr_size", "16", "'lr_size' must be an integer, got '16'"),
        ("lr_size", True, "'lr_size' must be an integer"),
        ("format_version", "1", "'format_version' must be an integer, got '1'"),
        ("encoder", None, "'encoder' must be an object, got None"),
        ("decoder", [1], r"'decoder' must be an object, got \[1\]"),
        ("consistency", "yes", "'consistency' must be an object, got 'yes'"),
    ):
        (folder / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(ValueError, match=message) as caught:
            DAPFSR.from_pretrained(folder)
        assert "config.json" in str(caught.value)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: a config is a JSON object, got list"):
        DAPFSR.from_pretrained(folder)
    broken = dict(config, encoder={**config["encoder"], "istn_stages": "0,1"})
    (folder / "config.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="'istn_stages' must be a list of integers"):
        DAPFSR.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model_card.json").write_text("{not json")
    with pytest.raises(ValueError, match="model_card.json: not valid JSON"):
        DAPFSR.from_pretrained(folder)


def test_cli_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch) -> None:
    from facetools_dapfsr.cli import sample
    from facetools_dapfsr.cli.main import main

    command = ["upscale", str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "nope")]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("dapfsr: error:") and "Traceback" not in err
    assert main(["--debug", *command]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "dapfsr: error:" in err

    # An error no command expects (a bug) is named as one, with the way to see where it came from.
    def broken(args) -> int:
        return {}["no such key"]

    monkeypatch.setattr(sample, "run", broken)
    assert main(["sample", "--out", str(tmp_path / "s")]) == 3
    err = capsys.readouterr().err
    assert "dapfsr: internal error: KeyError" in err and "--debug" in err and "Traceback" not in err
    assert main(["--debug", "sample", "--out", str(tmp_path / "s")]) == 3
    assert "Traceback (most recent call last)" in capsys.readouterr().err
