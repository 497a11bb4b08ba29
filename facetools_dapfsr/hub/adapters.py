"""Domain adapters: DAMMA's adapted modulation tensors, stored and shared in Hub format.

An adapter folder (or Hub repo) holds three files:

- ``adapter_config.json``: :class:`AdapterConfig` (type, format version, the base model's id,
  revision and content hash, target parameter names and shapes, W+ size, resolution, the
  sha256 of the weights file and, for the record, the DAMMA settings and outcome). Where a field
  means what a PEFT field means it has PEFT's name (``peft_type``, ``base_model_name_or_path``,
  ``revision``, ``r``, ``target_modules``); format 1 files, written before, are still read (see
  :data:`FORMAT_1_NAMES`);
- ``adapter_model.safetensors``: the adapted tensors keyed as in the base model's state dict
  (``decoder.<...>.affine.weight``...). A low-rank adapter stores each 2-D weight as two factors
  ``<name>.lowrank_up [out, r]`` and ``<name>.lowrank_down [r, in]`` with
  ``adapted = base + up @ down``; 1-D tensors (biases) are stored adapted, in full. Two more
  tensors record the adaptation: ``damma.alpha [num_ws]`` (the mixing weights) and
  ``damma.exemplar_w [num_ws, w_dim]`` (the exemplar's code ``w_t``);
- ``README.md``: a model card rendered from ``hub_cards/adapter.md``.

On a model, adapters live in an :class:`AdapterRegistry` made on first use. The registry keeps an
in-memory copy of the base model's modulation tensors (taken before any adapter is applied), so
switching or disabling adapters copies tensors in memory and never re-reads the base weights.
Every check runs before anything is changed: an adapter for another base model, with wrong
shapes, or whose file does not match its recorded hash is refused and the model stays as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import string
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from facetools_dapfsr.fileio import atomic_path, atomic_write_text, sha256_file
from facetools_dapfsr.hub.cards import README_NAME, card_template, licence_section, metrics_table
from facetools_dapfsr.hub.checkpoint import (
    CONFIG_NAME,
    MAX_LISTED,
    external_prefixes,
    read_safetensors,
    resolve_file,
    stored_state_dict,
)
from facetools_dapfsr.integrity import IntegrityError, check_finite

if TYPE_CHECKING:
    from facetools_dapfsr.models.dapfsr import DAPFSR

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_TYPE = "dapfsr-damma"
ADAPTER_FORMAT_VERSION = 2
"""2: PEFT's field names (format 1 had ``rank``, ``base_model``, ``base_revision``), plus
``peft_type`` and ``target_modules``."""
PEFT_TYPE = "DAMMA"
FORMAT_1_NAMES = {"rank": "r", "base_model": "base_model_name_or_path", "base_revision": "revision"}
"""Format 1 field name -> its format 2 (PEFT) name; read from format 1 files only."""
DEFAULT_ADAPTER_NAME = "default"
KINDS = ("full", "lowrank")

ALPHA_KEY = "damma.alpha"
EXEMPLAR_CODE_KEY = "damma.exemplar_w"
LOWRANK_UP = ".lowrank_up"
LOWRANK_DOWN = ".lowrank_down"

DECODER_PREFIX = "decoder."
_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


class AdapterError(ValueError):
    """An adapter that cannot be used with this model (refused before anything changed)."""


# -- configuration ---------------------------------------------------------------------------
@dataclass
class AdapterConfig:
    """What ``adapter_config.json`` holds."""

    kind: str
    """``"full"`` (adapted tensors) or ``"lowrank"`` (rank-``r`` deltas on 2-D weights)."""
    r: int | None
    """Rank of the low-rank deltas (PEFT's ``r``); ``None`` for a full adapter."""
    base_model_sha256: str
    """Content hash of the base model's tensors (see :func:`model_fingerprint`): the check that
    decides whether this adapter fits a model."""
    target_parameters: dict[str, list[int]]
    """Base state-dict name -> shape of every parameter the adapter changes."""
    num_ws: int
    w_dim: int
    resolution: int
    """The base model's HR size."""
    lr_size: int
    base_model_name_or_path: str | None = None
    """Hub id or local path the base model was loaded from (informational; format 1: ``base_model``)."""
    revision: str | None = None
    """Commit hash of the base model when it came from the Hub (format 1: ``base_revision``)."""
    base_decoder: str | None = None
    """Decoder type of the base model (``mobilestylegan``, ``stylegan2``): sets the card's licence."""
    weights_sha256: str = ""
    """sha256 of ``adapter_model.safetensors``; loading refuses a file that does not match."""
    training: dict[str, Any] = field(default_factory=dict)
    """DAMMA settings and outcome (steps, convergence, losses), for the record."""
    target_modules: list[str] = field(default_factory=list)
    """Names of the modules that own the target parameters (PEFT's ``target_modules``), derived
    from :attr:`target_parameters`: filled in when empty, refused when it disagrees."""
    peft_type: str = PEFT_TYPE
    """PEFT-style method name; ``adapter_type`` is what identifies a DAP-FSR adapter."""
    adapter_type: str = ADAPTER_TYPE
    format_version: int = ADAPTER_FORMAT_VERSION
    library_version: str = ""

    # Format 1 names, for code written against them.
    @property
    def rank(self) -> int | None:
        return self.r

    @property
    def base_model(self) -> str | None:
        return self.base_model_name_or_path

    @property
    def base_revision(self) -> str | None:
        return self.revision

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AdapterError(f"adapter kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.kind == "lowrank") != (self.r is not None):
            raise AdapterError(f"a {self.kind} adapter {'needs' if self.kind == 'lowrank' else 'has no'} rank r")
        if self.r is not None and (not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1):
            raise AdapterError(f"r (the rank) must be an integer of at least 1, got {self.r!r}")
        if not isinstance(self.target_parameters, dict):
            raise AdapterError(
                f"target_parameters must map parameter names to shapes, got {type(self.target_parameters).__name__}"
            )
        for name, shape in self.target_parameters.items():
            if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
                raise AdapterError(f"target_parameters[{name!r}] must be a shape (a list of sizes), got {shape!r}")
        for name in ("num_ws", "w_dim", "resolution", "lr_size", "format_version"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise AdapterError(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("base_model_sha256", "weights_sha256", "peft_type", "adapter_type", "library_version"):
            if not isinstance(getattr(self, name), str):
                raise AdapterError(f"{name} must be a string, got {getattr(self, name)!r}")
        derived = module_names(self.target_parameters)
        if not isinstance(self.target_modules, list) or (self.target_modules and self.target_modules != derived):
            listed = self.target_modules if isinstance(self.target_modules, list) else []
            missing = sorted(set(derived) - set(map(str, listed)))[:MAX_LISTED]
            extra = sorted(set(map(str, listed)) - set(derived))[:MAX_LISTED]
            raise AdapterError(
                "target_modules must list the modules of target_parameters, sorted "
                f"(missing: {', '.join(missing) or 'none'}; not targeted: {', '.join(extra) or 'none'}), "
                f"got {type(self.target_modules).__name__} of {len(listed)}"
            )
        self.target_modules = derived
        for name in ("base_model_name_or_path", "revision", "base_decoder"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise AdapterError(f"{name} must be a string or null, got {getattr(self, name)!r}")
        if not isinstance(self.training, dict):
            raise AdapterError(f"training must be an object, got {self.training!r}")

    def to_json_string(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> AdapterConfig:
        data = dict(data)
        if data.get("adapter_type") != ADAPTER_TYPE:
            raise AdapterError(f"{source}: not a DAP-FSR adapter (adapter_type {data.get('adapter_type')!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or version > ADAPTER_FORMAT_VERSION:
            raise AdapterError(
                f"{source}: adapter format version {version!r} is not supported "
                f"(this package reads up to {ADAPTER_FORMAT_VERSION}); upgrade facetools-dapfsr"
            )
        if version < 2:
            # Format 1: the same fields under DAP-FSR's own names (no peft_type, no target_modules).
            for old, new in FORMAT_1_NAMES.items():
                if old in data:
                    data[new] = data.pop(old)
            for name in ("peft_type", "target_modules"):
                if name in data:
                    raise AdapterError(f"{source}: unknown field(s) {name} (format {version})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AdapterError(f"{source}: unknown field(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as error:
            raise AdapterError(f"{source}: incomplete adapter config ({error})") from error
        except AdapterError as error:
            raise AdapterError(f"{source}: {error}") from error

    @classmethod
    def from_json_file(cls, path: Path) -> AdapterConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise AdapterError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise AdapterError(f"{path}: expected a JSON object")
        return cls.from_dict(data, str(path))


# -- the adapter ------------------------------------------------------------------------------
@dataclass
class Adapter:
    """An adapter in memory: its config and the tensors of ``adapter_model.safetensors``."""

    config: AdapterConfig
    tensors: dict[str, torch.Tensor]

    @property
    def alpha(self) -> torch.Tensor:
        """DAMMA's layer-wise mixing weights ``[num_ws]`` (1 = source code, 0 = exemplar code)."""
        return self.tensors[ALPHA_KEY]

    @property
    def exemplar_code(self) -> torch.Tensor:
        """The exemplar's code ``w_t [num_ws, w_dim]``."""
        return self.tensors[EXEMPLAR_CODE_KEY]

    def num_bytes(self) -> int:
        """Bytes of tensor data (the safetensors file adds a small JSON header)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def check_layout(self, source: str) -> None:
        """The tensors match the config: every target present with the right shape, no extras."""
        expected = expected_shapes(self.config)
        found = {name: tuple(t.shape) for name, t in self.tensors.items()}
        problems = _compare_shapes(expected, found)
        if problems:
            raise AdapterError(f"{source} does not match its adapter_config.json: {problems}")

    def adapted_tensors(self, base: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Target name -> adapted value, given the base model's values of the targets."""
        adapted = {}
        for name in self.config.target_parameters:
            if name in self.tensors:
                adapted[name] = self.tensors[name]
            else:
                up, down = self.tensors[name + LOWRANK_UP], self.tensors[name + LOWRANK_DOWN]
                reference = base[name]
                delta = up.to(reference.device, torch.float32) @ down.to(reference.device, torch.float32)
                adapted[name] = (reference.float() + delta).to(reference.dtype)
        return adapted

    def deltas(self, base: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Target name -> ``adapted - base`` in float32 (``up @ down`` for a low-rank weight)."""
        deltas = {}
        for name in self.config.target_parameters:
            reference = base[name]
            if name in self.tensors:
                deltas[name] = self.tensors[name].to(reference.device, torch.float32) - reference.float()
            else:
                up, down = self.tensors[name + LOWRANK_UP], self.tensors[name + LOWRANK_DOWN]
                deltas[name] = up.to(reference.device, torch.float32) @ down.to(reference.device, torch.float32)
        return deltas

    # -- files ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the adapter folder (weights, config with the weights' sha256, README)."""
        from facetools_dapfsr import __version__

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.tensors.items()}
        with atomic_path(directory / ADAPTER_WEIGHTS_NAME) as tmp:
            # One metadata key only: safetensors writes the metadata map in a per-process random
            # order, so two keys would make the same adapter hash differently in each process.
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            digest = sha256_file(tmp)
        # Always written in the current format, whatever format the adapter was read from.
        config = dataclasses.replace(
            self.config, weights_sha256=digest, library_version=__version__, format_version=ADAPTER_FORMAT_VERSION
        )
        atomic_write_text(directory / README_NAME, render_card(config, self))
        # The config goes last: a folder with a config always has the files it describes.
        atomic_write_text(directory / ADAPTER_CONFIG_NAME, config.to_json_string())
        self.config = config
        return directory

    @classmethod
    def load(cls, adapter_id_or_path: str | Path, revision: str | None = None) -> Adapter:
        """Read an adapter folder or Hub repo, verifying the weights against the recorded sha256.

        Raises:
            FileNotFoundError: no such folder/repo/revision, or a file is missing.
            AdapterError: not an adapter, unsupported format, tampered or inconsistent file.
        """
        config_path = resolve_file(adapter_id_or_path, ADAPTER_CONFIG_NAME, revision)
        config = AdapterConfig.from_json_file(config_path)
        if not Path(adapter_id_or_path).is_dir() and _COMMIT_HASH.match(config_path.parent.name):
            # Hub cache layout .../snapshots/<commit>/: fetch the weights of that very commit, so
            # a push between the two downloads cannot pair one commit's config with another's
            # weights.
            revision = config_path.parent.name
        weights_path = resolve_file(adapter_id_or_path, ADAPTER_WEIGHTS_NAME, revision)
        digest = sha256_file(weights_path)
        if digest != config.weights_sha256:
            raise AdapterError(
                f"{ADAPTER_WEIGHTS_NAME} of adapter {adapter_id_or_path} does not match the sha256 recorded "
                f"in {ADAPTER_CONFIG_NAME} (recorded {config.weights_sha256 or 'nothing'}, file {digest}): "
                "the file was modified or corrupted; refusing to load it"
            )
        try:
            tensors = read_safetensors(weights_path)
            # The recorded sha256 proves the file is the one saved, not that it is usable: an
            # adapter of NaNs (a diverged DAMMA run, or a hash re-recorded) would paste black faces.
            check_finite(tensors, weights_path)
        except ValueError as error:
            raise AdapterError(str(error)) from error
        adapter = cls(config=config, tensors=tensors)
        adapter.check_layout(str(weights_path))
        return adapter


def module_names(target_parameters: Mapping[str, Any]) -> list[str]:
    """The modules (PEFT's ``target_modules``) that own these parameters, sorted, each once."""
    return sorted({name.rpartition(".")[0] or name for name in target_parameters})


def expected_shapes(config: AdapterConfig) -> dict[str, tuple[int, ...]]:
    """File key -> shape that an adapter with this config must hold."""
    shapes: dict[str, tuple[int, ...]] = {
        ALPHA_KEY: (config.num_ws,),
        EXEMPLAR_CODE_KEY: (config.num_ws, config.w_dim),
    }
    for name, listed in config.target_parameters.items():
        shape = tuple(listed)
        if config.kind == "lowrank" and len(shape) == 2:
            assert config.r is not None  # __post_init__: a lowrank adapter has a rank
            shapes[name + LOWRANK_UP] = (shape[0], config.r)
            shapes[name + LOWRANK_DOWN] = (config.r, shape[1])
        else:
            shapes[name] = shape
    return shapes


def _compare_shapes(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> str:
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{name}: expected {tuple(expected[name])}, got {tuple(found[name])}"
        for name in sorted(set(expected) & set(found))
        if tuple(expected[name]) != tuple(found[name])
    ]
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if names:
            listed = ", ".join(names[:MAX_LISTED])
            more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
            problems.append(f"{label} tensor(s): {listed}{more}")
    return "; ".join(problems)


# -- model card ------------------------------------------------------------------------------
def render_card(config: AdapterConfig, adapter: Adapter) -> str:
    """README.md of an adapter repo: the template with this adapter's facts filled in."""
    training = config.training
    alpha = adapter.alpha.float()
    hub_base = bool(config.base_model_name_or_path and not _is_local_path(config.base_model_name_or_path))
    values = {
        "base_model": config.base_model_name_or_path or "not recorded",
        "base_model_ref": config.base_model_name_or_path if hub_base else "<folder of the base model>",
        # Only a Hub id belongs in the card's metadata; a local path means nothing to readers.
        "base_model_line": f"base_model: {config.base_model_name_or_path}\n" if hub_base else "",
        "base_revision": config.revision or "not recorded (local model)",
        "base_model_sha256": config.base_model_sha256,
        "kind": "low-rank" if config.kind == "lowrank" else "full",
        "rank": str(config.r) if config.r is not None else "n/a",
        "num_targets": str(len(config.target_parameters)),
        "num_parameters": f"{sum(t.numel() for k, t in adapter.tensors.items() if not k.startswith('damma.')):,}",
        "num_ws": str(config.num_ws),
        "w_dim": str(config.w_dim),
        "resolution": str(config.resolution),
        "lr_size": str(config.lr_size),
        "steps": str(training.get("steps", "unknown")),
        "converged": {True: "yes", False: "no (step cap reached)", None: "unknown"}.get(
            training.get("converged"), "unknown"
        ),
        "final_loss": f"{training['final_loss']:.4g}" if isinstance(training.get("final_loss"), float) else "unknown",
        "seconds": f"{training['seconds']:.1f}" if isinstance(training.get("seconds"), float) else "unknown",
        "alpha": ", ".join(f"{v:.2f}" for v in alpha.tolist()),
        "weights_sha256": config.weights_sha256,
        "library_version": config.library_version or "unknown",
        "adapter_type": config.adapter_type,
        "peft_type": config.peft_type,
        "format_version": str(config.format_version),
        "metrics": metrics_table(training.get("metrics", [])),
        "licence": licence_section(config.base_decoder, trained_on_celeba=False),
    }
    return string.Template(card_template("adapter.md")).substitute(values)


def _is_local_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or Path(text).is_dir()


# -- base model identity ---------------------------------------------------------------------
FINGERPRINT_DTYPE = torch.float16
"""Floating tensors are hashed as this dtype: the precision the built-in model ships in, so a
model keeps its fingerprint when it is cast to float16 or back (``half()`` rounds exactly as the
hash does). A cast to bfloat16 rounds differently and changes it: attach adapters before such a
cast, or use autocast."""


def tensor_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes of ``tensors`` (in name order).

    The fingerprint adapters recorded before format 2 of :func:`model_fingerprint`; still
    accepted (see :meth:`AdapterRegistry.check_compatible`).
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model: DAPFSR) -> str:
    """What identifies a base model for its adapters, whatever its dtype, device or cache.

    The sha256 of the tensors a checkpoint of the model stores, floating ones rounded to
    :data:`FINGERPRINT_DTYPE`, plus, for a decoder that comes from the weights cache (the FFHQ
    prior), the identity of its source: the pinned artifacts' sha256 and the converter and its
    revision. The converted tensors themselves are left out: converting the same artifact again
    (another machine, another thread count) may change their last bits, not the model.
    """
    digest = hashlib.sha256(b"dapfsr-fingerprint-2\n")
    stored = stored_state_dict(model)
    for name in sorted(stored):
        tensor = stored[name].detach().cpu()
        kind = "float" if tensor.is_floating_point() else str(tensor.dtype)
        if tensor.is_floating_point():
            tensor = tensor.to(FINGERPRINT_DTYPE)
        digest.update(f"{name}|{kind}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    if external_prefixes(model.config):
        from facetools_dapfsr.weights.sources import get_source

        source = get_source(model.config.decoder.weights)  # type: ignore[union-attr]
        artifacts = sorted(f"{a.package}=={a.version}:{a.sha256}" for a in source.artifacts)
        digest.update(f"external|{source.name}|{source.converter}|{source.revision}|{','.join(artifacts)}\n".encode())
    return digest.hexdigest()


def legacy_model_fingerprint(model: DAPFSR) -> str:
    """The fingerprint adapters recorded before :func:`model_fingerprint` left out the prior's
    converted tensors and the dtype: every tensor of the state dict, as held."""
    return tensor_fingerprint(model.state_dict())


def record_base_source(model: DAPFSR, model_id_or_path: str | Path, revision: str | None) -> None:
    """Remember where a model came from, for the ``base_model``/``base_revision`` of its adapters.

    For a Hub model the exact commit is read from the local Hub cache (no network): the cache
    keeps each file under ``.../snapshots/<commit>/``, even when ``revision`` is a branch.
    """
    local = Path(model_id_or_path)
    if local.is_dir():
        model.__dict__["_dapfsr_base_source"] = (str(local.resolve()), None)
        return
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(model_id_or_path), CONFIG_NAME, revision=revision)
    folder = Path(cached).parent.name if isinstance(cached, str) else ""
    commit = folder if _COMMIT_HASH.match(folder) else revision
    model.__dict__["_dapfsr_base_source"] = (str(model_id_or_path), commit)


# -- the registry on a model -----------------------------------------------------------------
class AdapterRegistry:
    """The adapters attached to one model, the active ones with their weights, and the base
    tensors they replace.

    Created by :func:`registry_of` (no I/O): it copies the base values of the decoder's
    modulation parameters once, while no adapter is applied, and hashes the base state dict.
    """

    def __init__(self, model: DAPFSR) -> None:
        self.model = model
        names = [DECODER_PREFIX + name for name in model.decoder.modulation_parameter_names()]
        parameters = dict(model.named_parameters())
        self.base: dict[str, torch.Tensor] = {name: parameters[name].detach().clone() for name in names}
        self.base_sha256 = model_fingerprint(model)
        self._legacy_sha256: str | None = None
        self.base_model, self.base_revision = model.__dict__.get("_dapfsr_base_source", (None, None))
        self.adapters: dict[str, Adapter] = {}
        self.active_names: list[str] = []
        self.weights: list[float] = []
        self._suspended = 0  # depth of nested disable() blocks

    @property
    def active(self) -> str | None:
        """The first active adapter (PEFT's ``active_adapter``), or None when the base runs."""
        return self.active_names[0] if self.active_names else None

    def legacy_sha256(self) -> str:
        """The base model's fingerprint as adapters made before fingerprint format 2 recorded it
        (computed on first need, from the base values: no adapter applied)."""
        if self._legacy_sha256 is None:
            with self.disable():
                self._legacy_sha256 = legacy_model_fingerprint(self.model)
        return self._legacy_sha256

    # -- checks -----------------------------------------------------------------------------
    def check_compatible(self, adapter: Adapter, source: str) -> None:
        """Raise :class:`AdapterError` unless ``adapter`` was made for this very base model."""
        config, model = adapter.config, self.model
        geometry = {
            "num_ws": (config.num_ws, model.num_ws),
            "w_dim": (config.w_dim, model.w_dim),
            "resolution": (config.resolution, model.config.hr_size),
            "lr_size": (config.lr_size, model.config.lr_size),
        }
        wrong = [f"{key} {theirs} (model: {ours})" for key, (theirs, ours) in geometry.items() if theirs != ours]
        if wrong:
            raise AdapterError(f"adapter {source} was made for a model of another shape: {', '.join(wrong)}")
        # An adapter may target a subset of the modulation parameters, never anything else.
        targets = {name: tuple(shape) for name, shape in config.target_parameters.items()}
        foreign = sorted(set(targets) - set(self.base))
        mismatched = [
            f"{name}: model {tuple(self.base[name].shape)}, adapter {shape}"
            for name, shape in sorted(targets.items())
            if name in self.base and tuple(self.base[name].shape) != shape
        ]
        problems = []
        if foreign:
            more = f" and {len(foreign) - MAX_LISTED} more" if len(foreign) > MAX_LISTED else ""
            problems.append(f"not modulation parameters of this model: {', '.join(foreign[:MAX_LISTED])}{more}")
        if mismatched:
            more = f" and {len(mismatched) - MAX_LISTED} more" if len(mismatched) > MAX_LISTED else ""
            problems.append(f"shape mismatch: {'; '.join(mismatched[:MAX_LISTED])}{more}")
        if problems:
            raise AdapterError(f"adapter {source} does not fit this model: {'; '.join(problems)}")
        if config.base_model_sha256 != self.base_sha256 and config.base_model_sha256 != self.legacy_sha256():
            made_for = config.base_model_name_or_path or "an unrecorded model"
            if config.revision:
                made_for += f"@{config.revision}"
            raise AdapterError(
                f"adapter {source} was made for another base model ({made_for}, tensors sha256 "
                f"{config.base_model_sha256[:12]}...); this model's tensors hash to {self.base_sha256[:12]}...; "
                "load the base model the adapter names (an adapter made before fingerprint format 2, "
                "2026-12, also hashed the prior as its machine's weights cache converted it and the "
                "model's dtype: it loads only there, in float32; make it again with dapfsr adapt)"
            )

    # -- state changes ----------------------------------------------------------------------
    def add(self, adapter: Adapter, name: str, source: str, set_active: bool) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"adapter_name must be a non-empty string, got {name!r}")
        self.check_compatible(adapter, source)
        self.adapters[name] = adapter
        if set_active:
            self.set_active(name)
        elif name in self.active_names:
            # Replacing an active adapter under its own name takes effect at once.
            self.set_mix(self.active_names, self.weights)

    def set_active(self, name: str | None) -> None:
        if name is not None and name not in self.adapters:
            raise KeyError(f"no adapter named {name!r}; loaded: {', '.join(self.adapters) or 'none'}")
        self.set_mix([] if name is None else [name], [] if name is None else [1.0])

    def set_mix(self, names: list[str], weights: list[float]) -> None:
        """Activate ``names`` with ``weights`` (already checked by :func:`check_mix`)."""
        self.active_names, self.weights = list(names), list(weights)
        if not self._suspended:
            self._write_mix()

    def delete(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(f"no adapter named {name!r}; loaded: {', '.join(self.adapters) or 'none'}")
        if name in self.active_names:
            # The others of a mix stay active with their weights; alone, the base comes back.
            kept = [(n, w) for n, w in zip(self.active_names, self.weights, strict=True) if n != name]
            self.set_mix([n for n, _ in kept], [w for _, w in kept])
        del self.adapters[name]

    @contextlib.contextmanager
    def disable(self) -> Iterator[None]:
        """Run the base model inside the block; the active adapter comes back afterwards."""
        self._suspended += 1
        self._write(None)
        try:
            yield
        finally:
            self._suspended -= 1
            if not self._suspended:
                self._write_mix()

    def mixed_tensors(self) -> dict[str, torch.Tensor]:
        """Target name -> ``base + sum_i w_i * (adapter_i - base)`` for the active adapters.

        One adapter at weight 1 gives its adapted values exactly (as :meth:`Adapter.adapted_tensors`);
        otherwise the sum is taken in float32 (low-rank adapters contribute ``w * up @ down``) and
        cast to the parameter's dtype; a weight of 0 contributes nothing. Only the modulation
        tensors mix: an adapter's ``damma.alpha`` and ``damma.exemplar_w`` are records of how it
        was made and take no part in upscaling.
        """
        if len(self.active_names) == 1 and self.weights[0] == 1.0:
            return self.adapters[self.active_names[0]].adapted_tensors(self.base)
        sums: dict[str, torch.Tensor] = {}
        for name, weight in zip(self.active_names, self.weights, strict=True):
            if weight == 0.0:
                continue
            for key, delta in self.adapters[name].deltas(self.base).items():
                sums[key] = sums.get(key, self.base[key].float()) + weight * delta
        return {key: value.to(self.base[key].dtype) for key, value in sums.items()}

    def _write_mix(self) -> None:
        self._write(self.mixed_tensors() if self.active_names else None)

    def _write(self, values: Mapping[str, torch.Tensor] | None) -> None:
        """Copy the base values, or ``values`` (where given), into the model's parameters."""
        values = self.base if values is None else values
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for key in self.base:
                parameters[key].copy_(values.get(key, self.base[key]))


def check_mix(
    registry: AdapterRegistry | None, names: str | list[str], weights: float | list[float] | None
) -> tuple[list[str], list[float]]:
    """``set_adapters``' arguments as lists, or a :class:`ValueError` that says what is wrong."""
    listed = [names] if isinstance(names, str) else list(names)
    loaded = list(registry.adapters) if registry is not None else []
    if not all(isinstance(name, str) for name in listed):
        raise ValueError(f"adapter names must be strings, got {listed!r}")
    unknown = [name for name in listed if name not in loaded]
    if unknown:
        raise ValueError(f"no adapter named {', '.join(map(repr, unknown))}; loaded: {', '.join(loaded) or 'none'}")
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    if duplicates:
        raise ValueError(f"adapter(s) named more than once: {', '.join(duplicates)}")
    if weights is None:
        values: list[float] = [1.0] * len(listed)
    else:
        values = [weights] if isinstance(weights, (int, float)) else list(weights)
    if len(values) != len(listed):
        raise ValueError(f"{len(listed)} adapter name(s) but {len(values)} weight(s)")
    for name, weight in zip(listed, values, strict=True):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"the weight of adapter {name!r} must be a finite number, got {weight!r}")
    return listed, [float(w) for w in values]


def set_adapters(model: DAPFSR, names: str | list[str], weights: float | list[float] | None = None) -> None:
    listed, values = check_mix(existing_registry(model), names, weights)
    registry_of(model).set_mix(listed, values)


def unload(model: DAPFSR) -> None:
    """Restore the base tensors and forget every adapter (and the registry with its base copy)."""
    registry = existing_registry(model)
    if registry is None:
        return
    registry.set_mix([], [])
    if registry._suspended:  # inside disable_adapter(): the base is in place already
        registry._write(None)
    registry.adapters.clear()
    del model.__dict__["_dapfsr_adapters"]


def registry_of(model: DAPFSR) -> AdapterRegistry:
    """The model's adapter registry, created on first use."""
    registry = model.__dict__.get("_dapfsr_adapters")
    if registry is None:
        registry = AdapterRegistry(model)
        # Stored outside nn.Module's attribute machinery: it is not a submodule or a tensor.
        model.__dict__["_dapfsr_adapters"] = registry
    return registry


def existing_registry(model: DAPFSR) -> AdapterRegistry | None:
    return model.__dict__.get("_dapfsr_adapters")


@contextlib.contextmanager
def base_model_only(model: DAPFSR) -> Iterator[None]:
    """The base model inside the block, whether or not adapters are attached."""
    registry = existing_registry(model)
    if registry is None:
        yield
    else:
        with registry.disable():
            yield


# -- operations behind the DAPFSR methods ----------------------------------------------------
def load_adapter(
    model: DAPFSR,
    adapter_id_or_path: str | Path,
    adapter_name: str = DEFAULT_ADAPTER_NAME,
    revision: str | None = None,
    set_active: bool = True,
) -> str:
    adapter = Adapter.load(adapter_id_or_path, revision=revision)
    source = f"{adapter_id_or_path}@{revision}" if revision else str(adapter_id_or_path)
    registry_of(model).add(adapter, adapter_name, source, set_active)
    return adapter_name


def add_adapter(model: DAPFSR, adapter: Adapter, adapter_name: str, set_active: bool = True) -> str:
    try:
        check_finite(adapter.tensors, f"adapter {adapter_name!r}")
    except IntegrityError as error:
        raise AdapterError(str(error)) from error
    registry_of(model).add(adapter, adapter_name, f"{adapter_name!r}", set_active)
    return adapter_name


def get_adapter(model: DAPFSR, adapter_name: str | None) -> Adapter:
    registry = existing_registry(model)
    if adapter_name is None and registry is not None and len(registry.active_names) > 1:
        raise KeyError(f"adapters {', '.join(registry.active_names)} are active together; pass adapter_name")
    name = adapter_name if adapter_name is not None else (registry.active if registry else None)
    if registry is None or name is None:
        raise KeyError("no adapter is active; pass adapter_name" if registry else "this model has no adapters")
    if name not in registry.adapters:
        raise KeyError(f"no adapter named {name!r}; loaded: {', '.join(registry.adapters) or 'none'}")
    return registry.adapters[name]


def save_adapter(model: DAPFSR, directory: str | Path, adapter_name: str | None = None) -> Path:
    return get_adapter(model, adapter_name).save(directory)


def push_adapter(
    adapter: Adapter,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload DAP-FSR adapter",
) -> str:
    """Upload an adapter folder to a Hub model repo (created if needed); returns the commit URL.

    The returned string is a ``huggingface_hub.CommitInfo``: ``.oid`` is the commit hash.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        adapter.save(folder)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, commit_message=commit_message)
