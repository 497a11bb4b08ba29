"""Is the prior conversion deterministic? Build the ``ffhq-mobilestylegan`` weight-cache entry
twice, each in a fresh temporary cache folder and a fresh process, and compare every tensor.

A rebuilt cache must give bit-identical tensors: the built-in model's fingerprint, which every
adapter names, is computed from them. Each build runs in its own process (as on another machine)
with a different ``OMP_NUM_THREADS`` (default 1 and 2), since the thread count is what made
conversions differ before. The pinned ``random-face`` wheel is taken from the existing cache's
``artifacts/`` folder (symlinked, verified by its sha256 as usual), so nothing is downloaded when
it is there. Each conversion takes about 1.5 minutes on two CPU cores.

Prints, per build, the safetensors sha256 and the time; then whether every tensor is
bit-identical, and for each differing tensor its max absolute difference. With ``--reference``
(default: the entry in ``$DAPFSR_CACHE`` when present, only read) the builds are also compared
with that existing entry.

    PYTHONPATH=. python benchmarks/prior_conversion.py [--threads 1,2] [--reference DIR|none]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from facetools_dapfsr.weights.cache import PROVENANCE_FILENAME, WEIGHTS_FILENAME, artifacts_dir, cache_root
from facetools_dapfsr.weights.sources import get_source

SOURCE = "ffhq-mobilestylegan"


def build_here(root: Path) -> None:
    """Build the entry into the (new) cache ``root``: run in a child process by :func:`build`."""
    from facetools_dapfsr.weights.cache import fetch

    os.environ["DAPFSR_CACHE"] = str(root)  # cache_root() reads it at each call
    fetch(SOURCE, force=True, progress=False)


def build(root: Path, threads: int, artifacts: Path) -> tuple[Path, float]:
    """A fresh cache at ``root`` with the pinned artifacts linked in; the entry built by a child
    process with ``OMP_NUM_THREADS=threads``. Returns the entry's safetensors and the seconds."""
    (root / "artifacts").mkdir(parents=True)
    for artifact in get_source(SOURCE).artifacts:
        kept = artifacts / artifact.filename
        if kept.is_file():  # else the build downloads it, as a first fetch would
            (root / "artifacts" / artifact.filename).symlink_to(kept.resolve())
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), DAPFSR_CACHE=str(root))
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--build-into", str(root)], env=env, check=True)
    return root / SOURCE / WEIGHTS_FILENAME, time.perf_counter() - start


INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as same-size integers: compared bit for bit (``torch.equal`` on
    floats takes -0.0 for 0.0 and never matches a NaN)."""
    return tensor.contiguous().view(INT_OF_SIZE[tensor.element_size()])


def compare(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> list[str]:
    """One line per difference (missing tensors, shapes, dtypes, bits); empty when identical."""
    lines = [f"  only in one build: {name}" for name in sorted(set(first) ^ set(second))]
    for name in sorted(set(first) & set(second)):
        a, b = first[name], second[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            lines.append(f"  {name}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")
            continue
        differ = bits(a) != bits(b)
        if bool(differ.any()):
            diff = (a.double() - b.double()).abs()[differ]  # NaN only where a NaN differs
            count, equal_values = int(differ.sum()), int((differ & (a == b)).sum())
            lines.append(
                f"  {name} {tuple(a.shape)}: {count} of {a.numel()} elements differ in bits, "
                f"max |diff| {float(diff.max()):.3g} ({equal_values} of them equal in value: signed zeros)"
            )
    return lines


def header(path: Path) -> dict:
    """The safetensors JSON header (names, dtypes, shapes, offsets, metadata)."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(size))


def report(label: str, first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    lines = compare(first, second)
    if not lines:
        print(f"{label}: all {len(first)} tensors bit-identical")
        return True
    print(f"{label}: {len(lines)} of {len(set(first) | set(second))} tensors differ")
    print("\n".join(lines))
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="OMP_NUM_THREADS of the two builds (default: %(default)s)")
    parser.add_argument("--reference", default=None, help="existing entry folder to compare with, or 'none'")
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.build_into is not None:
        build_here(args.build_into)
        return 0

    threads = [int(t) for t in args.threads.split(",")]
    if len(threads) != 2:
        parser.error(f"--threads takes two counts, got {args.threads!r}")
    artifacts = artifacts_dir(cache_root())
    builds: list[dict[str, torch.Tensor]] = []
    headers: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="prior-conversion-") as tmp:
        for index, count in enumerate(threads):
            path, seconds = build(Path(tmp) / f"cache{index}", count, artifacts)
            sha = json.loads((path.parent / PROVENANCE_FILENAME).read_text())["safetensors_sha256"]
            print(f"build {index} (OMP_NUM_THREADS={count}): {seconds:.0f} s, safetensors sha256 {sha}")
            builds.append(load_file(path))
            headers.append(header(path))
    identical = report("build 0 vs build 1", builds[0], builds[1])
    # Identical tensors in a differently laid out file would still change the file's sha256.
    print(f"safetensors headers (names, dtypes, shapes, offsets) {'equal' if headers[0] == headers[1] else 'differ'}")

    reference = Path(args.reference) if args.reference not in (None, "none") else None
    if args.reference is None and (cache_root() / SOURCE / WEIGHTS_FILENAME).is_file():
        reference = cache_root() / SOURCE
    if reference is not None:
        sha = json.loads((reference / PROVENANCE_FILENAME).read_text()).get("safetensors_sha256")
        print(f"reference {reference}: safetensors sha256 {sha}")
        report("build 0 vs reference", builds[0], load_file(reference / WEIGHTS_FILENAME))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
