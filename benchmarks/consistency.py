"""Ablation of the LR consistency step (``facetools_dapfsr/models/consistency.py``).

The built-in model's raw output, then the consistency step under each of its settings, on the
same CelebA test faces through the paper's protocol (random affine + 16 px), with bicubic and an
*oracle* row that back-projects under the protocol's true misalignment (what a perfect
registration would give):

    python benchmarks/consistency.py --faces 64 --out benchmarks/records/consistency.json

Prints a markdown table (PSNR / SSIM / LPIPS / face quality / seconds per face) and writes it
as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.config import ConsistencyConfig
from facetools_dapfsr.data.degradation import random_affine
from facetools_dapfsr.evaluation.protocol import Domain, FaceStore, ProtocolConfig
from facetools_dapfsr.evaluation.runner import machine_description
from facetools_dapfsr.fileio import atomic_write_text
from facetools_dapfsr.metrics import LPIPS, FaceQuality
from facetools_dapfsr.metrics.image import psnr, ssim
from facetools_dapfsr.models.consistency import project, register

VARIANTS: dict[str, ConsistencyConfig] = {
    "default": ConsistencyConfig(),
    "weight 0.5": ConsistencyConfig(weight=0.5, detail_weight=0.5),
    "weight 0.8": ConsistencyConfig(weight=0.8, detail_weight=0.8),
    "split, detail weight 0.5": ConsistencyConfig(detail_weight=0.5),
    "split, detail weight 0.3": ConsistencyConfig(detail_weight=0.3),
    "split, detail weight 0.7": ConsistencyConfig(detail_weight=0.7),
    "split at scale 0.0625, detail weight 0.5": ConsistencyConfig(detail_weight=0.5, detail_scale=0.0625),
    "split at scale 0.1875, detail weight 0.5": ConsistencyConfig(detail_weight=0.5, detail_scale=0.1875),
    "3 projection steps": ConsistencyConfig(projection_steps=3),
    "one start angle (0)": ConsistencyConfig(registration_start_degrees=(0.0,)),
    "no registration": ConsistencyConfig(registration_steps=0, registration_start_degrees=(0.0,)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/celeba/test", help="folder of faces (default CelebA test)")
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--out", type=Path, help="JSON record to write")
    args = parser.parse_args()

    domain = Domain.from_folder(args.data)
    protocol = ProtocolConfig(splits=1, draws=1)
    store = FaceStore(domain, 128, 16, protocol)
    indices = list(range(0, len(domain), max(1, len(domain) // args.faces)))[: args.faces]
    hr, valid, lr = store.batch(indices)
    grey = domain.is_grey()
    model = DAPFSR.default().eval()
    lpips = LPIPS.from_weights_cache(progress=False)
    face_quality = FaceQuality.from_weights_cache(progress=False)
    # The protocol's own misalignment of each face (make_lr seeds it by the face's index).
    truth = torch.cat(
        [
            random_affine(1, protocol.degradation, torch.Generator().manual_seed(protocol.seed * 1_000_003 + i))
            for i in indices
        ]
    )

    def score(output: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            lp = torch.cat([lpips(output[i : i + 16], hr[i : i + 16]) for i in range(0, len(output), 16)])
            quality = torch.cat([face_quality(output[i : i + 16]) for i in range(0, len(output), 16)])
        return {
            "psnr": psnr(output, hr, cap=48.0, mask=valid, grey=grey).mean().item(),
            "ssim": ssim(output, hr, mask=valid, grey=grey).mean().item(),
            "lpips": lp.mean().item(),
            "face_quality": quality.mean().item(),
        }

    rows: list[dict] = [{"variant": "HR (the real faces)", **score(hr), "seconds_per_face": None}]
    bicubic = F.interpolate(lr, size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)
    rows.append({"variant": "bicubic", **score(bicubic), "seconds_per_face": None})
    start = time.perf_counter()
    raw = torch.cat([model.upscale(lr[i : i + 16], consistency=False) for i in range(0, len(lr), 16)])
    rows.append({"variant": "raw (paper)", **score(raw), "seconds_per_face": (time.perf_counter() - start) / len(lr)})
    for name, config in VARIANTS.items():
        start = time.perf_counter()
        output = project(raw, lr, register(raw, lr, config), config)
        seconds = (time.perf_counter() - start) / len(lr)
        rows.append({"variant": name, **score(output), "seconds_per_face": seconds, "config": config.to_dict()})
        print(f"{name}: done", flush=True)
    oracle = project(raw, lr, truth, ConsistencyConfig())
    rows.append({"variant": "oracle registration (true misalignment)", **score(oracle), "seconds_per_face": None})

    print(f"\n{len(indices)} faces of {args.data}, the paper's protocol (seed 0)\n")
    print("| variant | PSNR (dB) | SSIM | LPIPS | face quality | s/face (raw: the model; others: the step alone) |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        seconds = "" if row["seconds_per_face"] is None else f"{row['seconds_per_face']:.3f}"
        print(
            f"| {row['variant']} | {row['psnr']:.2f} | {row['ssim']:.3f} | {row['lpips']:.4f} "
            f"| {row['face_quality']:.3f} | {seconds} |"
        )
    if args.out:
        record = {
            "command": "python benchmarks/consistency.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v),
            "faces": len(indices),
            "data": args.data,
            "machine": machine_description(),
            "rows": rows,
            "default_config": dataclasses.asdict(ConsistencyConfig()),
        }
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
