"""Face regions of real group photos through the pipeline: resampling, faces pasted as rendered
(the pipeline before the "never worse" rule) and the default pipeline, against the real photo.

A photo is shrunk by ``factor`` (Lanczos), upscaled by ``scale`` and compared, face by face (the
square around the detector's box, resized to 128 px), with the photo shrunk by
``factor / scale``. PSNR (RGB) and LPIPS-VGG, mean over the faces. ``--grid`` saves the crops
(real | resampled | as rendered | default) for looking at them; the shared photos may not be
redistributed, so keep it out of the repository.

    python benchmarks/pipeline_faces.py --photos ../shared/data/photos [--grid runs/pipeline_faces.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import save_image

from facetools_dapfsr import DAPFSR, FaceUpscaler
from facetools_dapfsr.metrics.image import psnr
from facetools_dapfsr.metrics.lpips import LPIPS
from facetools_dapfsr.pipeline import PasteOptions, PathOptions
from facetools_dapfsr.pipeline.resample import resample_image
from facetools_dapfsr.pipeline.upscaler import as_photo

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
CASES = (("t1.jpg", 8, 8), ("t1.jpg", 4, 4), ("breakingbad.jpg", 4, 2))


def shrink(path: Path, factor: float) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    if factor != 1:
        image = image.resize((round(image.width / factor), round(image.height / factor)), Image.LANCZOS)
    return as_photo(image)[0]


def face_crops(faces, scale: float, image: torch.Tensor) -> torch.Tensor:
    crops = []
    for face in faces:
        x0, y0, x1, y1 = (np.asarray(face.box) * scale).round().astype(int)
        half, cx, cy = max(x1 - x0, y1 - y0) // 2, (x0 + x1) // 2, (y0 + y1) // 2
        crop = image[:, max(0, cy - half) : cy + half, max(0, cx - half) : cx + half].float()
        crops.append(F.interpolate(crop[None], size=(128, 128), mode="bicubic", align_corners=False)[0].clamp(0, 1))
    return torch.stack(crops)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--model", help="model folder (default: the built-in model)")
    parser.add_argument("--grid", type=Path, help="PNG of the face crops (not for the repository)")
    parser.add_argument("--out", type=Path, help="JSON record")
    args = parser.parse_args()

    model = (DAPFSR.default() if args.model is None else DAPFSR.from_pretrained(args.model)).eval()
    pipelines = {
        "as rendered": FaceUpscaler.from_pretrained(
            model,
            device="cpu",
            paste=PasteOptions(consistency=False),
            paths=PathOptions(replace="always", max_face_size=1e9),
        ),
        "default": FaceUpscaler.from_pretrained(model, device="cpu"),
    }
    lpips = LPIPS.from_weights_cache("vgg", progress=False)
    rows, grids = [], []
    print(
        "| photo | shrunk | scale | faces | paths (default) | PSNR resample / as rendered / default "
        "| LPIPS resample / as rendered / default |\n|---|---:|---:|---:|---|---|---|"
    )
    for name, factor, scale in CASES:
        image = shrink(args.photos / name, factor)
        results = {key: upscaler.enhance(image, scale=scale).result for key, upscaler in pipelines.items()}
        default = results["default"]
        truth = F.interpolate(
            shrink(args.photos / name, factor / scale)[None], size=default.composite.shape[1:], mode="area"
        )[0]
        composites = {"resample": resample_image(image, default.composite.shape[1:])}
        composites.update({key: result.composite for key, result in results.items()})
        real = face_crops(default.faces, scale, truth)
        crops = {key: face_crops(default.faces, scale, composite / 255) for key, composite in composites.items()}
        with torch.no_grad():
            row = {
                "photo": name,
                "shrunk": factor,
                "scale": scale,
                "faces": len(default.faces),
                "paths": [face.path for face in default.faces],
                "input_sides": [round(face.input_side, 1) for face in default.faces],
                "psnr": {key: psnr(c, real).mean().item() for key, c in crops.items()},
                "lpips": {key: lpips(c, real).mean().item() for key, c in crops.items()},
            }
        rows.append(row)
        paths = ", ".join(f"{row['paths'].count(p)} {p}" for p in sorted(set(row["paths"])))
        print(
            f"| {name} | x{factor} | x{scale} | {row['faces']} | {paths} | "
            + " / ".join(f"{row['psnr'][k]:.2f}" for k in crops)
            + " | "
            + " / ".join(f"{row['lpips'][k]:.3f}" for k in crops)
            + " |"
        )
        grids.append(torch.stack([real, *crops.values()], 1).flatten(0, 1))
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        save_image(torch.cat(grids), args.grid, nrow=4, padding=2, pad_value=1.0)
    if args.out:
        record = {
            "command": "python benchmarks/pipeline_faces.py",
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
