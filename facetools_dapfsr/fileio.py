"""Small file helpers shared by every writer in the package: writes are atomic."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On error the temporary file is removed and ``path`` is left as it was, so an interrupted
    write never leaves a truncated file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # Flush to disk before the rename, so a crash cannot leave a renamed but empty file.
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes the file 0600 (and some writers replace it): give the result the
        # permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temporary_target(name: str) -> str | None:
    """The file name an :func:`atomic_path` temporary (``.<name>.<random>.tmp``) was for, else None."""
    if not (name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)):
        return None
    target, dot, _random = name[1 : -len(TEMPORARY_SUFFIX)].rpartition(".")
    return target if dot and target else None


def remove_stale_temporaries(folder: str | Path, is_target: Callable[[str], bool], older_than: float) -> list[Path]:
    """Remove the temporaries a killed writer left in ``folder`` for files ``is_target`` accepts.

    Only temporaries last modified before ``older_than`` (a ``time.time()``) are removed: one that
    is newer may belong to a writer running now (another process of the same run).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        target = temporary_target(path.name)
        if target is None or not is_target(target):
            continue
        try:
            if path.is_file() and path.stat().st_mtime < older_than:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # its writer finished (or removed it) meanwhile
            continue
    return removed


def check_can_create(folder: str | Path, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` when files cannot be created in ``folder``: the
    nearest existing folder on its path is a file, or is not writable. Checked before long work,
    so that it does not fail only at its end."""
    folder = Path(folder)
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                raise ValueError(f"{what}: {existing} is a file, not a folder")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ValueError(f"{what}: {existing} is not writable")
            return


def check_not_an_input(output: str | Path, option: str, inputs: Mapping[str, str | Path | None]) -> None:
    """Raise ``ValueError`` when the output folder ``output`` (given as ``option``) is, or
    contains, one of ``inputs`` (option name -> path): writing there could replace or delete it.

    Only inputs that exist locally are compared: a Hub id or a preset name is not a path.
    Checked before any work, so a run never starts that would destroy what it reads.
    """
    out = Path(output).resolve()
    for name, value in inputs.items():
        if value is None or not Path(value).exists():
            continue
        source = Path(value).resolve()
        if source == out:
            raise ValueError(f"{option} {output} is the {name} input {value}; choose another folder")
        if source.is_relative_to(out):
            raise ValueError(f"{option} {output} contains the {name} input {value}; choose another folder")


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
