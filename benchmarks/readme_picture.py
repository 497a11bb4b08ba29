"""The README's before/after picture: the bundled public-domain sample photo (examples/astronaut.png,
128 px, a 22 px face) upscaled x4, the face region in four columns: the input (nearest), plain
resampling (bicubic), the face pasted as rendered (the pipeline before its never-worse rule) and
the default pipeline.

    python benchmarks/readme_picture.py --out benchmarks/pipeline_before_after.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from facetools_dapfsr import DAPFSR, FaceUpscaler
from facetools_dapfsr.pipeline import PasteOptions, PathOptions
from facetools_dapfsr.pipeline.resample import resample_image
from facetools_dapfsr.pipeline.upscaler import as_photo

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
SCALE = 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = DAPFSR.default().eval()
    image, _ = as_photo(SAMPLE)
    old = FaceUpscaler.from_pretrained(
        model, device="cpu", paste=PasteOptions(consistency=False), paths=PathOptions(replace="always")
    )
    new = FaceUpscaler.from_pretrained(model, device="cpu")
    result = new.enhance(image, scale=SCALE).result
    size = result.composite.shape[1:]
    columns = [
        F.interpolate(image[None], size=size, mode="nearest")[0],
        resample_image(image, size).float() / 255,
        old.enhance(image, scale=SCALE).result.composite.float() / 255,
        result.composite.float() / 255,
    ]
    x0, y0, x1, y1 = (np.asarray(result.faces[0].box) * SCALE).round().astype(int)
    half, cx, cy = int(max(x1 - x0, y1 - y0) * 0.8), (x0 + x1) // 2, (y0 + y1) // 2
    crops = [c[:, max(0, cy - half) : cy + half, max(0, cx - half) : cx + half] for c in columns]
    save_image(torch.stack(crops), args.out, nrow=4, padding=2, pad_value=1.0)
    print(f"{args.out}: input (nearest) | bicubic | as rendered | default; face path: {result.faces[0].path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
