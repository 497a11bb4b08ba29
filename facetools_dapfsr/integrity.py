"""Integrity of stored tensors: finite values, and a sha256 record of the files that hold them.

A bit flip or a partial overwrite inside a safetensors file leaves a file that parses and loads:
only a recorded hash notices it. Model folders keep the record in ``checksums.json`` next to the
weights (written by ``save_pretrained``), training checkpoints in their ``training_state.json``.
A folder saved before these records existed has none and loads unchecked; a recorded hash that
does not match is always an error naming the file.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from facetools_dapfsr.fileio import atomic_write_text, sha256_file

CHECKSUMS_NAME = "checksums.json"
CHECKSUMS_FORMAT = 1
MAX_LISTED = 8  # names listed in an error before "and N more"
ZIP_MAGIC = b"PK\x03\x04"


class IntegrityError(ValueError):
    """A stored file or tensor is not what was saved: modified, corrupted or non-finite."""


def check_finite(tensors: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Raise :class:`IntegrityError` naming ``source`` and the tensors holding NaN or inf.

    Weights are never legitimately non-finite here; a NaN tensor would run and produce black or
    garbage images without any other sign that something is wrong.
    """
    bad = sorted(name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if bad:
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise IntegrityError(f"{source}: NaN or infinite values in tensor(s) {', '.join(bad[:MAX_LISTED])}{more}")


def file_hashes(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """``relative name -> sha256`` of the named files under ``folder``."""
    return {name: sha256_file(folder / name) for name in sorted(names)}


def verify_file(path: Path, expected: str) -> None:
    """Raise :class:`IntegrityError` unless ``path`` exists and hashes to ``expected``."""
    if not path.is_file():
        raise IntegrityError(f"{path}: missing (its sha256 is recorded, so it was saved with the folder)")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 {actual[:12]}... does not match the recorded {expected[:12]}...; "
            "the file was modified, truncated or corrupted"
        )


def check_torch_archive(path: Path) -> None:
    """Raise :class:`IntegrityError` naming ``path`` unless the ``torch.save`` archive is whole.

    ``torch.save`` writes a zip archive whose members each carry a CRC-32, so a truncated or
    corrupted file is found by reading it, without unpickling anything. A file that does not
    start as a zip archive (torch's legacy format) is left to its loader.
    """
    with path.open("rb") as stream:
        if stream.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise IntegrityError(f"{path}: truncated or corrupt torch.save archive ({error})") from error
    if damaged is not None:
        raise IntegrityError(f"{path}: corrupt torch.save archive (its member {damaged} fails its CRC-32 check)")


def write_checksums(folder: Path, names: Iterable[str]) -> None:
    """Record the sha256 of the named files of ``folder`` in its ``checksums.json``."""
    record = {"format": CHECKSUMS_FORMAT, "sha256": file_hashes(folder, names)}
    atomic_write_text(folder / CHECKSUMS_NAME, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_checksums(path: Path) -> dict[str, str]:
    """The ``name -> sha256`` map of a ``checksums.json``."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IntegrityError(f"{path}: not a valid checksums file ({error})") from error
    hashes = record.get("sha256") if isinstance(record, dict) else None
    if not isinstance(hashes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise IntegrityError(f'{path}: expected {{"sha256": {{file name: sha256}}}}')
    if record.get("format") != CHECKSUMS_FORMAT:
        raise IntegrityError(f"{path}: checksums format {record.get('format')!r} is not supported")
    return hashes
