"""Turning ``INPUT...`` (files, folders, glob patterns) and ``-o OUT`` into per-photo jobs."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from facetools_dapfsr.images import writable_suffix

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})
"""Files taken from folders. Files named explicitly or matched by a pattern are all tried (and
reported if they are not images)."""


@dataclass
class Job:
    """One input photo and where its result goes."""

    index: int
    """Position in the run's input list: stable across processes, orders the merged report."""
    input: Path
    output: Path | None
    error: str | None = None
    """Set when the job cannot run at all (input missing, output would overwrite an input)."""


def collect_inputs(specs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand ``specs`` in order, without duplicates.

    Returns:
        ``(files, unmatched)``: files to process, and specs that matched nothing.
    """
    files: list[Path] = []
    unmatched: list[str] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            children = sorted(
                child for child in path.iterdir() if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES
            )
            for child in children:
                add(child)
        elif path.exists():
            add(path)
        elif glob.has_magic(spec):
            matches = sorted(Path(match) for match in glob.glob(spec, recursive=True) if os.path.isfile(match))
            if not matches:
                unmatched.append(spec)
            for match in matches:
                add(match)
        else:
            unmatched.append(spec)
    return files, unmatched


def plan_jobs(inputs: Sequence[Path], output: str | os.PathLike[str]) -> list[Job]:
    """Decide each photo's output path.

    ``output`` is a file when there is exactly one input and it has an image suffix and is not
    an existing folder; otherwise a folder receiving ``<input stem><suffix>`` per photo (with
    ``-2``, ``-3``... when two inputs share a name). Jobs whose output would be one of the
    inputs get an error instead: outputs never overwrite inputs.

    Raises:
        ValueError: ``output`` must be a folder but is an existing file.
    """
    output = Path(output)
    as_file = len(inputs) == 1 and output.suffix.lower() in IMAGE_SUFFIXES and not output.is_dir()
    if not as_file and output.is_file():
        raise ValueError(f"output {output} is a file; with several inputs (or a non-image name) it must be a folder")
    jobs: list[Job] = []
    taken: set[str] = set()
    for index, source in enumerate(inputs):
        if as_file:
            target = output
        else:
            suffix = writable_suffix(source.suffix)
            name = f"{source.stem}{suffix}"
            counter = 1
            while name.lower() in taken:
                counter += 1
                name = f"{source.stem}-{counter}{suffix}"
            taken.add(name.lower())
            target = output / name
        jobs.append(Job(index=index, input=source, output=target))
    protected = {path.resolve() for path in inputs}
    for job in jobs:
        if job.output is not None and job.output.resolve() in protected:
            job.error = f"output {job.output} would overwrite an input; choose another output folder"
    return jobs
