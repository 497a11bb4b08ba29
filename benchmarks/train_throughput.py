"""Encoder-training throughput (images/s) with the real FFHQ prior decoder, for 1 and N processes.

Launches ``recipes/train_encoder.py`` through ``accelerate launch`` (``--multi_gpu`` with
``Accelerator(cpu=True)`` on a machine without GPU) on real CelebA faces, with validation and
intermediate checkpoints off, and reads the throughput each run records in
``summary_rank0.json`` (steps after the first two, all processes together). Prints one Markdown
table row per process count, plus the machine.

    python benchmarks/train_throughput.py --processes 1 2

Landmarks of the images are detected once (first run) and cached under ``$DAPFSR_CACHE``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "celeba" / "train"
DEFAULT_CONFIG = REPO / "recipes" / "configs" / "model_prior_render256.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(processes: int, recipe_args: list[str]) -> list[str]:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--dynamo_backend", "no", "--num_machines", "1"]
    if processes > 1:
        launcher += ["--multi_gpu", "--main_process_port", str(free_port())]
    launcher += ["--num_processes", str(processes)]
    return [*launcher, str(REPO / "recipes" / "train_encoder.py"), *recipe_args]


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or platform.machine()
    return (
        f"{platform.node()}: {device}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"load average before the run {load[0]:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--max-images", type=int, default=64)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="model config (preset or JSON)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per process per step")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps (the first 2 are not timed)")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=None, help="OMP threads per process (default: CPUs / processes)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    rows = []
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')} -- {machine()}")
    print("| processes | batch/process | global batch | steps timed | s/step | images/s |")
    print("|---|---|---|---|---|---|")
    for processes in args.processes:
        with tempfile.TemporaryDirectory(prefix="dapfsr-bench-") as output:
            recipe_args = [
                "--config", args.config, "--data", args.data, "--max-images", str(args.max_images),
                "--output-dir", output, "--batch-size", str(args.batch_size), "--max-steps", str(args.steps),
                "--validation-size", "0", "--checkpoint-every", "0", "--report-to", "none",
                "--log-every", str(args.steps), "--mixed-precision", args.mixed_precision,
            ]  # fmt: skip
            env = dict(os.environ)
            threads = args.threads or max(1, (os.cpu_count() or 1) // processes)
            env["OMP_NUM_THREADS"] = str(threads)
            result = subprocess.run(
                launch_command(processes, recipe_args), env=env, capture_output=True, text=True, cwd=REPO, check=False
            )
            if result.returncode != 0:
                print(result.stderr[-4000:], file=sys.stderr)
                return result.returncode
            summary = json.loads((Path(output) / "summary_rank0.json").read_text())
        throughput = summary["throughput"]
        row = {
            "processes": processes,
            "threads_per_process": threads,
            "batch_per_process": args.batch_size,
            "global_batch": args.batch_size * processes,
            **throughput,
        }
        rows.append(row)
        print(
            f"| {processes} | {args.batch_size} | {row['global_batch']} | {throughput['timed_steps']} | "
            f"{throughput['seconds_per_step']:.2f} | {throughput['samples_per_second']:.2f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
