"""Background upsamplers: speed (output megapixels/s) and quality of ``realesrgan`` vs ``bicubic``.

Speed: one x4 upscale of a crop of a real photo through the pipeline's background stage
(default tiles), timed after a warm-up tile, at each ``--threads`` setting; peak resident memory
of the process is reported too. Quality: each photo is halved (antialiased: the files are softer
than their pixel grid, their half is sharp), shrunk x4 (bicubic, antialiased) and brought back
x4 by each background; PSNR, LPIPS-alex, LPIPS-vgg and sharpness (mean absolute Laplacian of the
luma, as the paste stage's "sharper" rule) against the halved photo. ``--out`` saves a crop
bicubic | realesrgan | original.

    OMP_NUM_THREADS=1 python benchmarks/background.py --threads 1,2 --out runs/background.png
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from facetools_dapfsr.metrics import psnr
from facetools_dapfsr.metrics.lpips import LPIPS
from facetools_dapfsr.models.rrdbnet import RRDBNet
from facetools_dapfsr.pipeline.background import BicubicBackground, RealESRGANBackground
from facetools_dapfsr.pipeline.config import RealESRGANOptions
from facetools_dapfsr.pipeline.routing import sharpness
from facetools_dapfsr.pipeline.upscaler import as_photo

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"


def half(path: Path) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    return as_photo(image.resize((image.width // 2, image.height // 2), Image.LANCZOS))[0]


def speed(background: object, image: torch.Tensor, scale: int = 4) -> float:
    """Output megapixels per second of one upscale of ``image``."""
    out_size = (image.shape[1] * scale, image.shape[2] * scale)
    started = time.perf_counter()
    background.upscale(image, out_size)
    return out_size[0] * out_size[1] / 1e6 / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, nargs="+", default=[PHOTOS / "t1.jpg", PHOTOS / "breakingbad.jpg"])
    parser.add_argument("--threads", default="1", help="comma-separated torch thread counts to time")
    parser.add_argument("--crop", type=int, default=256, help="side of the input crop timed (input pixels)")
    parser.add_argument("--tile", type=int, default=RealESRGANOptions().tile)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="PNG: bicubic | realesrgan | original, 256 px crop of the first photo")
    args = parser.parse_args()

    network = RRDBNet.from_weights_cache(progress=False)
    realesrgan = RealESRGANBackground(network, RealESRGANOptions(tile=args.tile), device=args.device)
    bicubic = BicubicBackground()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}, device {args.device}, tile {args.tile}"
    )

    first = half(args.photos[0])
    crop = first[:, : args.crop, : args.crop]
    realesrgan.upscale(crop[:, :32, :32], (128, 128))  # warm-up
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        fast = speed(bicubic, crop)
        slow = speed(realesrgan, crop)
        print(
            f"x4 of {crop.shape[2]}x{crop.shape[1]}, {threads} thread(s): realesrgan {slow:.4f} MP/s "
            f"({crop.shape[1] * crop.shape[2] * 16 / 1e6 / slow:.1f} s), bicubic {fast:.1f} MP/s"
        )
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

    lpips = {net: LPIPS.from_weights_cache(net, progress=False) for net in ("alex", "vgg")}
    print("| photo (halved) | method | PSNR dB | LPIPS-alex | LPIPS-vgg | sharpness (original) |")
    print("|---|---|---|---|---|---|")
    for path in args.photos:
        truth = half(path)
        height, width = truth.shape[1] // 4 * 4, truth.shape[2] // 4 * 4
        truth = truth[:, :height, :width]
        lr = F.interpolate(truth.unsqueeze(0), scale_factor=0.25, mode="bicubic", antialias=True)[0].clamp(0, 1)
        outputs = {
            name: stage.upscale(lr, (height, width)).float() / 255
            for name, stage in (("bicubic", bicubic), ("realesrgan", realesrgan))
        }
        for name, output in outputs.items():
            a, b = output.unsqueeze(0), truth.unsqueeze(0)
            print(
                f"| {path.name} {width}x{height} | {name} | {float(psnr(a, b)):.2f} | {lpips['alex'](a, b).item():.3f} | "
                f"{lpips['vgg'](a, b).item():.3f} | {float(sharpness(a)):.4f} ({float(sharpness(b)):.4f}) |"
            )
        if args.out is not None and path == args.photos[0]:
            top, left = (height - 256) // 2, (width - 256) // 2
            window = (slice(None), slice(top, top + 256), slice(left, left + 256))
            row = torch.cat([outputs["bicubic"][window], outputs["realesrgan"][window], truth[window]], dim=2)
            Image.fromarray((row.permute(1, 2, 0) * 255).round().byte().numpy()).save(args.out)
            print(f"saved {args.out} (bicubic | realesrgan | original, centre 256 px)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
