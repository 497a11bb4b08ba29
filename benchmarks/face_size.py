"""Which faces should the pipeline replace? The model against plain resampling, by face size.

The model sees every face at ``lr_size`` (16 px). A face that is larger in the photo loses
detail when it is shrunk to 16 px, so beyond some size resampling the photo's own pixels beats
re-rendering it. This measures where, on held-out CelebA faces (aligned HR crops at 128 px):
for an input face of side ``s`` px (the HR crop shrunk, antialiased) and an output side ``o``,

- resample: bicubic ``s -> o`` (what the background resampler gives the face);
- model: ``s -> lr_size`` (antialiased), super-resolved, resized to ``o`` (antialiased);
- ground truth: the HR crop resized to ``o``.

It prints PSNR against the ground truth, LPIPS (when ``o >= 64``), the sharpness measure of
:mod:`facetools_dapfsr.pipeline.routing` for both, and how often the pipeline's default rule
(replace only when the model's face is sharper) picks the model. Two settings: ``--scale`` (the
output is ``scale * s``, as in ``dapfsr upscale --scale``) and a fixed 128 px output.

    python benchmarks/face_size.py --faces 64 --out benchmarks/records/face_size.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.data.faces import AlignedFaces
from facetools_dapfsr.data.landmarks import DetectorSettings
from facetools_dapfsr.metrics import psnr
from facetools_dapfsr.metrics.lpips import LPIPS
from facetools_dapfsr.pipeline.routing import sharpness

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba" / "test"
SIZES = (8, 12, 16, 24, 32, 48, 64)


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(image, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the built-in model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--out", type=Path, help="JSON record of the figures")
    args = parser.parse_args()

    model = (DAPFSR.default() if args.model is None else DAPFSR.from_pretrained(args.model)).float().eval()
    lr_size, hr_size = model.config.lr_size, model.config.hr_size
    faces = AlignedFaces.prepare(
        str(args.data), hr_size, settings=DetectorSettings(min_face_size=60), max_images=args.faces
    )
    hr = torch.stack([faces.load(i)[0] for i in range(len(faces))])
    lpips = LPIPS.from_weights_cache("vgg", progress=False)
    started = time.perf_counter()
    rows = []
    for setting in ("scale", "fixed"):
        for s in SIZES:
            o = round(s * args.scale) if setting == "scale" else hr_size
            if o > hr_size or o <= s:
                continue  # no ground truth above the HR crop; no upscaling below the input
            small = resize(hr, s)
            truth = resize(hr, o)
            resampled = F.interpolate(small, size=(o, o), mode="bicubic", align_corners=False).clamp(0, 1)
            with torch.no_grad():
                restored = resize(model.upscale(resize(small, lr_size)), o)
            # The restored face made consistent with the photo: its band below the input's
            # resolution replaced by the photo's own (what the pipeline's consistency step does).
            consistent = (
                restored + F.interpolate(small - resize(restored, s), size=(o, o), mode="bicubic", align_corners=False)
            ).clamp(0, 1)
            sharp_model, sharp_resampled = sharpness(restored), sharpness(resampled)
            picked = sharp_model > sharp_resampled
            chosen = torch.where(picked.view(-1, 1, 1, 1), restored, resampled)
            row = {
                "setting": setting,
                "input_side": s,
                "output_side": o,
                "psnr_resample": psnr(resampled, truth).mean().item(),
                "psnr_model": psnr(restored, truth).mean().item(),
                "psnr_rule": psnr(chosen, truth).mean().item(),
                "psnr_consistent": psnr(consistent, truth).mean().item(),
                "sharpness_consistent": sharpness(consistent).mean().item(),
                "sharpness_resample": sharp_resampled.mean().item(),
                "sharpness_model": sharp_model.mean().item(),
                "rule_picks_model": picked.float().mean().item(),
            }
            if o >= 64:
                with torch.no_grad():
                    row["lpips_resample"] = lpips(resampled, truth).mean().item()
                    row["lpips_model"] = lpips(restored, truth).mean().item()
                    row["lpips_consistent"] = lpips(consistent, truth).mean().item()
            rows.append(row)
    print(f"{len(hr)} faces of {args.data}; model {args.model or 'built-in'}; {time.perf_counter() - started:.0f} s")
    print(
        "| output | input side | output side | PSNR resample / model / consistent | LPIPS resample / model / consistent "
        "| sharpness resample / model / consistent | rule picks model | PSNR of rule |"
    )
    print("|---|---:|---:|---|---|---|---:|---:|")
    for r in rows:
        label = f"x{args.scale:g}" if r["setting"] == "scale" else f"{hr_size} px"
        lp = (
            f"{r['lpips_resample']:.3f} / {r['lpips_model']:.3f} / {r['lpips_consistent']:.3f}"
            if "lpips_model" in r
            else "-"
        )
        print(
            f"| {label} | {r['input_side']} | {r['output_side']} | {r['psnr_resample']:.2f} / {r['psnr_model']:.2f} / "
            f"{r['psnr_consistent']:.2f} | {lp} | {r['sharpness_resample']:.4f} / {r['sharpness_model']:.4f} / "
            f"{r['sharpness_consistent']:.4f} | {r['rule_picks_model']:.2f} | {r['psnr_rule']:.2f} |"
        )
    if args.out:
        record = {
            "command": "python benchmarks/face_size.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "data"),
            "faces": len(hr),
            "rows": rows,
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "load": os.getloadavg(),
                "torch_threads": torch.get_num_threads(),
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
