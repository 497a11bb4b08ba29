"""Side-by-side faces of several models on the same LR inputs: LR | bicubic | model... | HR.

The faces and their LR come from the evaluation protocol (``dapfsr evaluate``'s domain loading,
alignment and seeded degradation), so the picture shows what the tables measure. Rows are faces,
columns the methods, labelled in the printed legend.

    python benchmarks/compare_models.py --target ../shared/data/celeba/test \\
        --model old=runs/old_model --model new=default --faces 8 --out benchmarks/compare_celeba.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.data.degradation import DegradationConfig
from facetools_dapfsr.evaluation.protocol import Domain, FaceStore, ProtocolConfig


def load(spec: str) -> tuple[str, DAPFSR]:
    name, _, where = spec.partition("=")
    if not where:
        raise SystemExit(f"--model takes NAME=PATH (or NAME=default), got {spec!r}")
    return name, (DAPFSR.default() if where == "default" else DAPFSR.from_pretrained(where)).float().eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=Path, required=True, help="face folder (Yale B is recognised)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH", help="repeatable")
    parser.add_argument("--faces", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="protocol seed (the LR of each face)")
    parser.add_argument("--degradation", default="paper", help="paper, realistic or a JSON file")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="also show each model's raw decoder output (LR consistency off), before its own",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    models = [load(spec) for spec in args.model]
    first = models[0][1]
    protocol = ProtocolConfig(
        splits=1, draws=1, seed=args.seed, degradation=DegradationConfig.from_name_or_file(args.degradation)
    )
    domain = Domain.from_folder(args.target, show_progress=False, max_images=max(64, args.faces))
    store = FaceStore(domain, first.config.hr_size, first.config.lr_size, protocol)
    step = max(1, len(domain) // args.faces)
    indices = list(range(0, step * args.faces, step))[: args.faces]
    hr, _valid, lr = store.batch(indices)
    size = first.config.hr_size
    columns = [
        F.interpolate(lr, size=(size, size), mode="nearest"),
        F.interpolate(lr, size=(size, size), mode="bicubic").clamp(0, 1),
    ]
    names = []
    for name, model in models:
        if args.raw:
            columns.append(model.upscale(lr, consistency=False))
            names.append(f"{name} (raw)")
        columns.append(model.upscale(lr))
        names.append(name)
    columns.append(hr)
    grid = torch.stack(columns, 1).flatten(0, 1)  # row = face, columns = methods
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, args.out, nrow=len(columns), padding=2, pad_value=1.0)
    legend = " | ".join(["LR (nearest)", "bicubic", *names, "HR"])
    print(f"{args.out}: columns {legend}; faces {indices} of {args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
