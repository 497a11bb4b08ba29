"""Hub-format checkpoints: ``config.json`` + ``model.safetensors``; strict loading, no pickle.

A model whose decoder is the imported FFHQ prior does not store the prior's tensors: they come
from the weights cache (``facetools_dapfsr.weights``), so a shipped model stays small.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from facetools_dapfsr.config import DAPFSRConfig, MobileStyleGANConfig
from facetools_dapfsr.fileio import atomic_path, atomic_write_text
from facetools_dapfsr.integrity import CHECKSUMS_NAME, check_finite, read_checksums, verify_file, write_checksums

if TYPE_CHECKING:
    from facetools_dapfsr.hub.cards import ModelCardInfo
    from facetools_dapfsr.models.dapfsr import DAPFSR

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
"""Index of a checkpoint split into several files (the Hub convention, as transformers writes it)."""
HEADER_BYTES_PER_TENSOR = 200
MAX_LISTED = 8  # names listed in an error before "and N more"


def resolve_file(model_id_or_path: str | Path, filename: str, revision: str | None = None) -> Path:
    """Path of ``filename`` in a local folder, or downloaded (and cached) from a Hub repo."""
    local = Path(model_id_or_path)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise FileNotFoundError(f"{local} has no {filename}")
        return path
    # A Hub id is "name" or "org/name"; anything else, or a path under an existing local folder
    # ("runs/mymodel" with runs/ here), is a mistyped folder: say so at once instead of asking
    # the Hub (which retries for half a minute when it cannot be reached).
    text = str(model_id_or_path)
    if (
        local.suffix
        or text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or (len(local.parts) > 1 and local.parent.is_dir())
    ):
        raise FileNotFoundError(f"no such model folder: {model_id_or_path}")
    return Path(_hub_download(str(model_id_or_path), filename, revision))


_REACHED_ENDPOINTS: set[str] = set()
"""Hub endpoints that answered this process, so their files need no reachability check."""


def _hub_download(repo_id: str, filename: str, revision: str | None) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        unreachable = _hub_unreachable(repo_id, filename, revision)
        if unreachable is not None:
            # hf_hub_download would retry for half a minute before falling back to the cache:
            # go to the cache at once, and say why the Hub was not asked.
            try:
                return hf_hub_download(repo_id, filename, revision=revision, local_files_only=True)
            except LocalEntryNotFoundError as error:
                raise FileNotFoundError(
                    f"no such local folder: {repo_id}, and the Hub ({unreachable[0]}) cannot be reached to "
                    f"fetch it as a Hub model ({unreachable[1]}); its {filename} is not in the local Hub cache"
                ) from error
        return hf_hub_download(repo_id, filename, revision=revision)
    except HFValidationError as error:
        raise FileNotFoundError(f"{repo_id!r} is neither a local folder nor a valid Hub repo id") from error
    except RepositoryNotFoundError as error:
        raise FileNotFoundError(f"Hub repository {repo_id!r} not found (or not accessible)") from error
    except RevisionNotFoundError as error:
        raise FileNotFoundError(f"revision {revision!r} not found in Hub repository {repo_id!r}") from error
    # LocalEntryNotFoundError subclasses EntryNotFoundError: test it first.
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(
            f"{filename} of {where} is not in the local Hub cache and the Hub cannot be reached "
            "(HF_HUB_OFFLINE is set or the network is down)"
        ) from error
    except EntryNotFoundError as error:
        raise FileNotFoundError(f"Hub repository {where} has no {filename}") from error


def _hub_unreachable(repo_id: str, filename: str, revision: str | None) -> tuple[str, str] | None:
    """``(endpoint, reason)`` when one request without retries cannot reach the Hub, else None.

    Left to ``hf_hub_download``: offline mode (it reads only the cache), a file the cache holds
    (it falls back to it without retrying) and an endpoint that already answered this process.
    So the check costs one request, for the first file a process downloads.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    endpoint = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE or endpoint in _REACHED_ENDPOINTS:
        return None
    if try_to_load_from_cache(repo_id, filename, revision=revision) is not None:  # a path, or "known absent"
        return None
    try:
        # No retries (huggingface_hub >= 1 retries network errors only inside hf_hub_download).
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    # Both subclass OSError under huggingface_hub < 1 (requests): test them first.
    except OfflineModeIsEnabled:
        return None
    except HfHubHTTPError:
        pass  # the Hub answered (404, 401...): hf_hub_download raises its own error for it
    except _transport_errors() as error:
        return endpoint, f"{type(error).__name__}: {error}"
    _REACHED_ENDPOINTS.add(endpoint)
    return None


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's errors for a server that cannot be reached or does not answer, and OSError.

    huggingface_hub >= 1 speaks httpx (httpx2 from 2.x); earlier versions use requests, whose
    errors are OSErrors.
    """
    import importlib

    errors: list[type[Exception]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def external_prefixes(config: DAPFSRConfig) -> tuple[str, ...]:
    """State-dict prefixes whose tensors live in the weights cache, not in the checkpoint."""
    return ("decoder.",) if isinstance(config.decoder, MobileStyleGANConfig) else ()


def stored_state_dict(model: DAPFSR) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint of ``model`` holds."""
    skip = external_prefixes(model.config)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(skip)} if skip else model.state_dict()


def save_model(
    model: DAPFSR, save_directory: str | Path, dtype: torch.dtype | None = None, max_shard_bytes: int | None = None
) -> Path:
    from huggingface_hub import split_torch_state_dict_into_shards

    from facetools_dapfsr.hub.cards import CARD_INFO_NAME, README_NAME, render_model_card

    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in stored_state_dict(model).items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    # huggingface_hub plans the split (file names, index) as transformers does; below the limit
    # it is one model.safetensors, as before. It counts tensor bytes only: leave room for each
    # file's JSON header (name, dtype, shape, offsets: well under HEADER_BYTES_PER_TENSOR each).
    limit = max_shard_bytes - HEADER_BYTES_PER_TENSOR * len(tensors) if max_shard_bytes else 2**62
    if limit <= 0:
        raise ValueError(f"max_shard_bytes={max_shard_bytes} leaves no room for the tensors' headers")
    plan = split_torch_state_dict_into_shards(
        tensors, filename_pattern="model{suffix}.safetensors", max_shard_size=limit
    )
    stale = [directory / WEIGHTS_NAME, directory / WEIGHTS_INDEX_NAME, *directory.glob("model-*-of-*.safetensors")]
    for filename, names in plan.filename_to_tensors.items():
        with atomic_path(directory / filename) as tmp:
            # One metadata key only: safetensors writes several in a per-process random order,
            # which would make the file's bytes (and hash) differ between identical saves.
            save_file({name: tensors[name] for name in names}, str(tmp), metadata={"format": "pt"})
    written = {directory / name for name in plan.filename_to_tensors}
    if plan.is_sharded:
        index = {"metadata": plan.metadata, "weight_map": plan.tensor_to_filename}
        atomic_write_text(directory / WEIGHTS_INDEX_NAME, json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.add(directory / WEIGHTS_INDEX_NAME)
    # The weights' sha256, checked at load: a flipped byte inside a tensor still parses.
    write_checksums(directory, [path.name for path in written])
    for path in stale:  # a previous save with another layout must not be read back
        if path not in written:
            path.unlink(missing_ok=True)
    atomic_write_text(directory / CARD_INFO_NAME, model.card_info.to_json_string())
    atomic_write_text(directory / README_NAME, render_model_card(model))
    atomic_write_text(directory / CONFIG_NAME, model.config.to_json_string())
    return directory


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a truncated or corrupt file into a clear error."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: cannot read safetensors file (truncated or corrupt?): {error}") from error


def read_weights(model_id_or_path: str | Path, revision: str | None = None) -> tuple[dict[str, torch.Tensor], Path]:
    """The checkpoint's tensors, from ``model.safetensors`` or the files its index lists.

    Every file is checked against the sha256 that ``checksums.json`` records for it (folders
    saved before that file existed are read unchecked), and every tensor must be finite.
    """
    checksums = read_folder_checksums(model_id_or_path, revision)

    def read(path: Path) -> dict[str, torch.Tensor]:
        if path.name in checksums:
            verify_file(path, checksums[path.name])
        tensors = read_safetensors(path)
        check_finite(tensors, path)
        return tensors

    try:
        path = resolve_file(model_id_or_path, WEIGHTS_NAME, revision)
        return read(path), path
    except FileNotFoundError as single_error:
        try:
            index_path = resolve_file(model_id_or_path, WEIGHTS_INDEX_NAME, revision)
        except FileNotFoundError:
            raise single_error from None
    if index_path.name in checksums:
        verify_file(index_path, checksums[index_path.name])
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{index_path}: not a safetensors index ({error})") from error
    tensors: dict[str, torch.Tensor] = {}
    for filename in sorted(set(weight_map.values())):
        shard = read(resolve_file(model_id_or_path, filename, revision))
        listed = {name for name, file in weight_map.items() if file == filename}
        if set(shard) != listed:
            raise ValueError(f"{filename} does not hold the tensors {index_path.name} lists for it")
        tensors.update(shard)
    return tensors, index_path


def read_folder_checksums(model_id_or_path: str | Path, revision: str | None = None) -> dict[str, str]:
    """The model's recorded ``file name -> sha256``; empty for a model saved without a record."""
    try:
        path = resolve_file(model_id_or_path, CHECKSUMS_NAME, revision)
    except FileNotFoundError:
        return {}
    return read_checksums(path)


def check_tensors(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ValueError naming every missing, unexpected or mis-shaped tensor."""
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{name}: expected {tuple(expected[name].shape)}, got {tuple(found[name].shape)}"
        for name in sorted(set(expected) & set(found))
        if expected[name].shape != found[name].shape
    ]
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if names:
            listed = ", ".join(names[:MAX_LISTED])
            more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
            problems.append(f"{label} tensor(s): {listed}{more}")
    if problems:
        raise ValueError(f"{source} does not match the model config: " + "; ".join(problems))


def load_model(cls: type[DAPFSR], model_id_or_path: str | Path, revision: str | None = None) -> DAPFSR:
    config_path = resolve_file(model_id_or_path, CONFIG_NAME, revision)
    config = DAPFSRConfig.from_json_file(config_path)
    tensors, weights_path = read_weights(model_id_or_path, revision)
    model = cls(config)
    check_tensors(stored_state_dict(model), tensors, str(weights_path))
    skip = external_prefixes(config)
    if skip:
        from facetools_dapfsr.models.mobilestylegan import MobileStyleGANDecoder

        assert isinstance(config.decoder, MobileStyleGANConfig)  # the one decoder with external_prefixes
        model.decoder = MobileStyleGANDecoder.from_weights_cache(config.decoder)
    # Tensors stored in half precision (the built-in model) are cast to the model's dtype here.
    missing, unexpected = model.load_state_dict(tensors, strict=not skip)
    assert not unexpected and all(name.startswith(skip) for name in missing)
    model.card_info = read_card_info(model_id_or_path, revision)
    return model.eval()


def read_card_info(model_id_or_path: str | Path, revision: str | None = None) -> ModelCardInfo:
    """The model's ``model_card.json``; models saved before it existed get an empty one."""
    from facetools_dapfsr.hub.cards import CARD_INFO_NAME, ModelCardInfo

    try:
        path = resolve_file(model_id_or_path, CARD_INFO_NAME, revision)
    except FileNotFoundError:
        return ModelCardInfo()
    return ModelCardInfo.from_json_file(path)


def push_model(
    model: DAPFSR,
    repo_id: str,
    *,
    revision: str | None,
    private: bool | None,
    token: str | None,
    commit_message: str,
) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        save_model(model, folder)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, revision=revision, commit_message=commit_message
        )
    return str(commit)
