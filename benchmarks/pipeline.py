"""End-to-end speed of the detect -> upscale pipeline on the two group photos (issue: pipeline).

Run:  python benchmarks/pipeline.py [--model PATH|HUB_ID] [--device cpu|cuda] [--scale 4]
                                    [--factors 4 8] [--repeats 3] [--data DIR] [--out FILE.json]
                                    [--allocator retain]

For each photo of ``<data>/photos`` shrunk 4x and 8x (faces 10-35 px tall), prints the median
seconds per photo of one ``FacePipeline`` call (MTCNN detection, alignment, batched
super-resolution, background resampling, pasting; file decoding and encoding excluded), faces
found, faces/s end to end, and the seconds spent per stage. Without ``--model`` it uses a tiny
random-weight model (``DAPFSRConfig.tiny()``, 16 -> 32 px): the figures then measure the
pipeline's mechanics, not a real model's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facetools_dapfsr import DAPFSR, DAPFSRConfig, __version__
from facetools_dapfsr.pipeline import FacePipeline, PipelineConfig, make_plugin_manager

PHOTOS = ("t1.jpg", "breakingbad.jpg")


def machine(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "facetools_dapfsr": __version__,
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def default_data_dir() -> Path:
    configured = os.environ.get("DAPFSR_DATA")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"


def load_photo(path: Path, factor: int) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    small = image.resize((round(image.width / factor), round(image.height / factor)), Image.LANCZOS)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or Hub id (default: tiny random-weight model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--factors", type=int, nargs="+", default=[4, 8], help="downscaling of the photos")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--allocator",
        choices=["default", "retain"],
        default="default",
        help="retain: facetools_dapfsr.allocator.retain_freed_memory(), as dapfsr upscale does",
    )
    args = parser.parse_args()
    if args.allocator == "retain":
        from facetools_dapfsr.allocator import retain_freed_memory

        if not retain_freed_memory():
            raise SystemExit("retain_freed_memory() is not in effect on this system")

    if args.model is None:
        torch.manual_seed(0)
        model, model_name = DAPFSR(DAPFSRConfig.tiny()).eval(), "tiny random-weight model (DAPFSRConfig.tiny)"
    else:
        model, model_name = DAPFSR.from_pretrained(args.model), args.model
    config = PipelineConfig(model=model, scale=args.scale, device=args.device)
    pipeline = FacePipeline.from_config(config, make_plugin_manager(autoload=False))

    command = " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv])
    print(f"command: {command}")
    print(f"machine: {json.dumps(machine(args.device))}")
    print(f"model:   {model_name} ({model.config.lr_size} -> {model.config.hr_size} px); scale x{args.scale:g}")
    print(f"{'photo':<16}{'shrink':>7}{'size':>11}{'faces':>6}{'s/photo':>9}{'faces/s':>9}  stages (s)")
    rows = []
    for name in PHOTOS:
        for factor in args.factors:
            image = load_photo(args.data / "photos" / name, factor)
            pipeline(image)  # warm-up: loads MTCNN, first-call allocations
            runs = []
            for _ in range(args.repeats):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                result = pipeline(image, source=name)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                runs.append((time.perf_counter() - start, result))
            seconds, result = sorted(runs, key=lambda run: run[0])[len(runs) // 2]  # the median run
            faces = len(result.faces)
            stages = {stage: round(t, 3) for stage, t in result.timings.items()}
            size = f"{image.shape[2]}x{image.shape[1]}"
            print(f"{name:<16}{factor:>6}x{size:>11}{faces:>6}{seconds:>9.3f}{faces / seconds:>9.2f}  {stages}")
            rows.append(
                {
                    "photo": name,
                    "downscale": factor,
                    "input_size": size,
                    "faces": faces,
                    "seconds_per_photo": round(seconds, 4),
                    "faces_per_second": round(faces / seconds, 3),
                    "stage_seconds": stages,
                }
            )
    if args.out is not None:
        report = {
            "command": command,
            "machine": machine(args.device),
            "model": model_name,
            "scale": args.scale,
            "results": rows,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
