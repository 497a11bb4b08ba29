"""Ablation of the LR consistency step's code refinement (``ConsistencyConfig.refine_steps``).

The built-in model on the same CelebA test faces through the paper's protocol (random affine +
16 px), with the consistency step and each refinement setting (steps, Adam step, W+ slots moved),
scored with PSNR, SSIM, LPIPS, face quality and, with the ``identity`` extra, dlib's identity
distance; the seconds per face are those of the whole ``upscale`` call:

    python benchmarks/code_refinement.py --faces 32 --out benchmarks/records/code_refinement.json

Prints a markdown table and writes it as JSON.
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
from facetools_dapfsr.evaluation.protocol import Domain, FaceStore, ProtocolConfig
from facetools_dapfsr.evaluation.runner import Scorer, machine_description
from facetools_dapfsr.fileio import atomic_write_text

BASE = ConsistencyConfig(refine_steps=0)
VARIANTS: dict[str, ConsistencyConfig] = {
    "no refinement": BASE,
    "15 steps, 8 slots, step 0.1 (shipped)": dataclasses.replace(BASE, refine_steps=15),
    "30 steps, 8 slots, step 0.1": dataclasses.replace(BASE, refine_steps=30),
    "30 steps, 4 slots, step 0.1": dataclasses.replace(BASE, refine_steps=30, refine_slots=4),
    "30 steps, 12 slots, step 0.1": dataclasses.replace(BASE, refine_steps=30, refine_slots=12),
    "30 steps, all slots, step 0.05": dataclasses.replace(
        BASE, refine_steps=30, refine_slots=0, refine_learning_rate=0.05
    ),
    "10 steps, all slots, step 0.15": dataclasses.replace(
        BASE, refine_steps=10, refine_slots=0, refine_learning_rate=0.15
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/celeba/test", help="folder of faces (default CelebA test)")
    parser.add_argument("--faces", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, help="JSON record to write")
    args = parser.parse_args()

    domain = Domain.from_folder(args.data)
    store = FaceStore(domain, 128, 16, ProtocolConfig(splits=1, draws=1))
    indices = list(range(0, len(domain), max(1, len(domain) // args.faces)))[: args.faces]
    hr, valid, lr = store.batch(indices)
    scorer = Scorer.from_weights_cache(grey=domain.is_grey())
    model = DAPFSR.default().eval()

    def run(config: ConsistencyConfig | bool) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        chunks = [
            model.upscale(lr[i : i + args.batch_size], consistency=config) for i in range(0, len(lr), args.batch_size)
        ]
        return torch.cat(chunks), (time.perf_counter() - start) / len(lr)

    def mean_scores(output: torch.Tensor) -> dict[str, float | None]:
        scores = scorer.score(output, hr, valid)
        return {name: (sum(v) / len(v) if v and v[0] is not None else None) for name, v in scores.items()}

    rows = [{"variant": "HR (the real faces)", **mean_scores(hr), "seconds_per_face": None}]
    bicubic = F.interpolate(lr, size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)
    rows.append({"variant": "bicubic", **mean_scores(bicubic), "seconds_per_face": None})
    raw, seconds = run(False)
    rows.append({"variant": "raw decoder output", **mean_scores(raw), "seconds_per_face": seconds})
    for name, config in VARIANTS.items():
        output, seconds = run(config)
        rows.append({"variant": name, **mean_scores(output), "seconds_per_face": seconds, "config": config.to_dict()})
        print(f"{name}: done ({seconds:.2f} s/face)", flush=True)

    columns = ["psnr", "ssim", "lpips", "face_quality", "identity_distance", "identity_verified"]
    print(f"\n{len(indices)} faces of {args.data}, the paper's protocol (seed 0)\n")
    print("| variant | PSNR (dB) | SSIM | LPIPS | face quality | identity distance | same person | s/face |")
    print("|---|" + "---:|" * 7)
    for row in rows:
        cells = ["" if row.get(c) is None else f"{row[c]:.4f}" if c == "lpips" else f"{row[c]:.3f}" for c in columns]
        cells[0] = "" if row.get("psnr") is None else f"{row['psnr']:.2f}"
        seconds = "" if row["seconds_per_face"] is None else f"{row['seconds_per_face']:.2f}"
        print(f"| {row['variant']} | " + " | ".join(cells) + f" | {seconds} |")
    if args.out:
        record = {
            "command": "python benchmarks/code_refinement.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v),
            "faces": len(indices),
            "data": args.data,
            "machine": machine_description(),
            "threads": torch.get_num_threads(),
            "rows": rows,
        }
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
