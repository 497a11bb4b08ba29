"""Per-face cost of the built-in model at several batch sizes (issue 14 item 6): does batching pay?

Run:  python benchmarks/batch_speed.py [--batch-sizes 1 8 32] [--threads 1 2] [--rounds 3] [--allocator retain]
                                       [--faces 32] [--parts feed-forward encode render consistency]
                                       [--out FILE.json]

For each part, thread count and batch size it runs ``--faces`` faces (seeded uniform 16 px inputs)
in batches, ``--rounds`` times with the configurations interleaved (round-robin, so that a change
of load on a shared machine hits all of them alike), after one warm-up pass each, and prints per
face: the best wall time, the median process CPU time (user + system, which a busy neighbour
inflates less than the wall time) and the minor page faults (fresh memory the kernel had to map).
The parts, all under ``torch.inference_mode()`` as in the pipeline:

- ``feed-forward``: ``DAPFSR.upscale(lr, consistency=False)``, what ``dapfsr upscale`` runs (its
  paste stage does the consistency against the photo);
- ``encode``: ``DAPFSR.encode``; ``render``: ``decoder.render`` of those codes;
- ``consistency``: the model's own LR consistency without the code refinement (registration +
  back-projection, :mod:`facetools_dapfsr.models.consistency`) on the rendered faces;
- ``refine``: the code refinement (``refine_steps`` of the model's config; slow: seconds per face).

It uses only public APIs, so ``PYTHONPATH=<other checkout>`` measures another version of the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.models import consistency as consistency_module

PARTS = ("feed-forward", "encode", "render", "consistency", "refine")


def _usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--faces", type=int, default=32, help="faces per timed pass (a multiple of each batch size)")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=["feed-forward", "encode", "render", "consistency"]
    )
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--allocator",
        choices=["default", "retain"],
        default="default",
        help="retain: facetools_dapfsr.allocator.retain_freed_memory(), as dapfsr upscale and bench do",
    )
    args = parser.parse_args()
    if args.allocator == "retain":
        from facetools_dapfsr.allocator import retain_freed_memory

        if not retain_freed_memory():
            raise SystemExit("retain_freed_memory() is not in effect on this system")

    model = DAPFSR.default().eval()
    settings = model.config.consistency
    no_refine = dataclasses.replace(settings, refine_steps=0)
    lr_all = torch.rand(
        args.faces, 3, model.config.lr_size, model.config.lr_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        ws_all = model.encode(lr_all)
        faces_all = model.decoder.render(ws_all).clamp(0, 1)
    theta_all = consistency_module.register(faces_all, lr_all, no_refine) if "refine" in args.parts else None

    def step(part: str, start: int, stop: int) -> None:
        lr, ws, faces = lr_all[start:stop], ws_all[start:stop], faces_all[start:stop]
        if part == "feed-forward":
            model.upscale(lr, consistency=False)
        elif part == "encode":
            model.encode(lr)
        elif part == "render":
            model.decoder.render(ws)
        elif part == "consistency":
            consistency_module.enforce_consistency(faces, lr, no_refine)
        else:
            consistency_module.refine_codes(
                model.decoder.render, ws, lr, theta_all[start:stop], model.w_sigma, settings
            )

    def timed_pass(part: str, batch: int) -> tuple[float, float, int]:
        cpu0, faults0 = _usage()
        started = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, args.faces, batch):
                step(part, start, min(start + batch, args.faces))
        wall = time.perf_counter() - started
        cpu1, faults1 = _usage()
        return wall, cpu1 - cpu0, faults1 - faults0

    configs = [(part, threads, batch) for part in args.parts for threads in args.threads for batch in args.batch_sizes]
    samples: dict[tuple[str, int, int], list[tuple[float, float, int]]] = {config: [] for config in configs}
    load_before = os.getloadavg()
    for config in configs:  # warm-up: allocator, kernels, lazy initialisation
        torch.set_num_threads(config[1])
        timed_pass(config[0], config[2])
    for _ in range(args.rounds):
        for config in configs:
            torch.set_num_threads(config[1])
            samples[config].append(timed_pass(config[0], config[2]))
    load_after = os.getloadavg()

    command = " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv])
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "code": str(Path(consistency_module.__file__).resolve().parents[2]),
        "allocator": args.allocator,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"command: {command}")
    print(f"machine: {json.dumps(machine)}")
    print(
        f"{'part':<14}{'threads':>8}{'batch':>6}{'best wall ms/face':>19}{'faces/s':>9}{'median CPU ms/face':>20}"
        f"{'faults/face':>13}"
    )
    rows = []
    for (part, threads, batch), runs in samples.items():
        wall = min(run[0] for run in runs) / args.faces
        cpu = statistics.median(run[1] for run in runs) / args.faces
        faults = statistics.median(run[2] for run in runs) / args.faces
        print(f"{part:<14}{threads:>8}{batch:>6}{wall * 1e3:>19.1f}{1 / wall:>9.2f}{cpu * 1e3:>20.1f}{faults:>13.0f}")
        rows.append(
            {
                "part": part,
                "threads": threads,
                "batch_size": batch,
                "best_wall_ms_per_face": round(wall * 1e3, 2),
                "faces_per_second": round(1 / wall, 3),
                "median_cpu_ms_per_face": round(cpu * 1e3, 2),
                "median_minor_faults_per_face": round(faults),
            }
        )
    for part in args.parts:
        for threads in args.threads:
            by_batch = {row["batch_size"]: row for row in rows if row["part"] == part and row["threads"] == threads}
            if 1 in by_batch and len(by_batch) > 1:
                largest = max(by_batch)
                ratio = by_batch[largest]["faces_per_second"] / by_batch[1]["faces_per_second"]
                cpu_ratio = by_batch[1]["median_cpu_ms_per_face"] / by_batch[largest]["median_cpu_ms_per_face"]
                print(
                    f"{part}, {threads} thread(s): batch {largest} / batch 1 = x{ratio:.2f} faces/s (wall), "
                    f"x{cpu_ratio:.2f} (CPU time)"
                )
    if args.out is not None:
        report = {"command": command, "machine": machine, "faces": args.faces, "rounds": args.rounds, "results": rows}
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
