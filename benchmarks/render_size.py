"""The same encoder's codes rendered at the prior's 256 px exit, 512 px exit and full frame.

An encoder trained through one exit learns codes for that exit. Rendering them at another size
shows whether they lie on the prior's manifold (then a larger frame is the same face, sharper)
or exploit the exit's approximation (then the face changes). Scores PSNR (RGB) and LPIPS-VGG on
the first ``--faces`` faces of a folder, LR by the paper's degradation with the validation seeds
of the training recipe, and saves LR | one column per size | HR.

    python benchmarks/render_size.py --model runs/old_model --faces 32 --out benchmarks/render_size.png
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.data.degradation import DegradationConfig
from facetools_dapfsr.data.faces import AlignedFaces
from facetools_dapfsr.data.landmarks import DetectorSettings
from facetools_dapfsr.metrics import psnr
from facetools_dapfsr.metrics.lpips import LPIPS
from facetools_dapfsr.models.mobilestylegan import RENDER_SIZES, MobileStyleGANDecoder
from facetools_dapfsr.training.pairs import ValidationPairs

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba" / "test"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the built-in model); its decoder must be the prior")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--faces", type=int, default=32)
    parser.add_argument("--out", type=Path, help="PNG: LR | each render size | HR, first 8 faces")
    args = parser.parse_args()

    base = (DAPFSR.default() if args.model is None else DAPFSR.from_pretrained(args.model)).float().eval()
    faces = AlignedFaces.prepare(
        str(args.data), base.config.hr_size, settings=DetectorSettings(min_face_size=60), max_images=args.faces
    )
    pairs = ValidationPairs(faces, base.config.lr_size, DegradationConfig(), seed=0, size=args.faces)
    lr = torch.stack([pairs[i][0] for i in range(len(pairs))])
    hr = torch.stack([pairs[i][1] for i in range(len(pairs))])
    lpips = LPIPS.from_weights_cache("vgg", progress=False)
    with torch.no_grad():
        ws = base.encode(lr)
    columns = [F.interpolate(lr[:8], size=hr.shape[-2:], mode="nearest")]
    print(
        f"{len(hr)} faces of {args.data}; model {args.model or 'built-in'} (trained at {base.config.decoder.render_size} px)"
    )
    print("| render size | PSNR (dB) | LPIPS | s/face |\n|---:|---:|---:|---:|")
    for size in RENDER_SIZES:
        decoder = MobileStyleGANDecoder.from_weights_cache(dataclasses.replace(base.config.decoder, render_size=size))
        start = time.perf_counter()
        with torch.no_grad():
            sr = torch.cat([decoder.synthesis(ws[i : i + 8]).clamp(0, 1) for i in range(0, len(ws), 8)])
            score = (psnr(sr, hr).mean().item(), lpips(sr, hr).mean().item())
        seconds = (time.perf_counter() - start) / len(sr)
        print(f"| {size} | {score[0]:.2f} | {score[1]:.4f} | {seconds:.3f} |")
        columns.append(sr[:8])
    columns.append(hr[:8])
    if args.out:
        save_image(torch.stack(columns, 1).flatten(0, 1), args.out, nrow=len(columns), padding=2, pad_value=1.0)
        print(f"{args.out}: LR | " + " | ".join(f"{s} px" for s in RENDER_SIZES) + " | HR")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
