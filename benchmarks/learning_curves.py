"""Validation curves of training runs side by side: PSNR and LPIPS against CPU-hours.

Reads each run's ``metrics.jsonl`` (written by ``recipes/train_encoder.py``: wall-clock time of
every record, validation PSNR/LPIPS at each validation) and its ``training_args.json``; CPU-hours
are wall hours since the run's first record times the processes' threads (``--threads``, as
the runs were launched), so runs with different step costs compare at equal compute. Prints a
Markdown table and draws ``--out`` (PNG, two panels) with Pillow.

    python benchmarks/learning_curves.py --run image-loss=runs/B --run joint=runs/J --out benchmarks/curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def read_curve(run: Path, threads: int) -> list[tuple[int, float, float, float]]:
    """``(step, cpu_hours, psnr, lpips)`` at each validation of a run."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{run}: metrics.jsonl is empty")
    start = rows[0]["time"]
    return [
        (row["step"], (row["time"] - start) / 3600 * threads, row["val/psnr"], row.get("val/lpips", float("nan")))
        for row in rows
        if "val/psnr" in row
    ]


def draw(curves: dict[str, list[tuple[int, float, float, float]]], path: Path) -> None:
    width, height, margin = 900, 360, 50
    image = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(image)
    panels = [("val PSNR (dB), higher is better", 2), ("val LPIPS-VGG, lower is better", 3)]
    x_max = max(point[1] for curve in curves.values() for point in curve) or 1.0
    panel_width = (width - 3 * margin) // 2
    for p, (title, column) in enumerate(panels):
        left = margin + p * (panel_width + margin)
        values = [point[column] for curve in curves.values() for point in curve]
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        pen.rectangle([left, margin, left + panel_width, height - margin], outline="black")
        pen.text((left, 10), title, fill="black")
        pen.text((left, height - margin + 5), f"0 .. {x_max:.2f} CPU-hours", fill="black")
        pen.text((left - 45, margin), f"{high:.3f}", fill="black")
        pen.text((left - 45, height - margin - 10), f"{low:.3f}", fill="black")
        for c, (name, curve) in enumerate(curves.items()):
            colour = COLOURS[c % len(COLOURS)]
            points = [
                (
                    left + point[1] / x_max * panel_width,
                    height - margin - (point[column] - low) / span * (height - 2 * margin),
                )
                for point in curve
            ]
            if len(points) > 1:
                pen.line(points, fill=colour, width=2)
            for x, y in points:
                pen.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            if p == 0:
                pen.text((left + 10, margin + 10 + 14 * c), name, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=DIR", help="repeatable")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads each run used (default 1)")
    parser.add_argument("--out", type=Path, help="PNG of the curves")
    args = parser.parse_args()
    curves = {}
    for spec in args.run:
        name, _, folder = spec.partition("=")
        curves[name] = read_curve(Path(folder), args.threads)
    print("| run | step | CPU-hours | val PSNR (dB) | val LPIPS |\n|---|---:|---:|---:|---:|")
    for name, curve in curves.items():
        for step, hours, psnr, lpips in curve:
            print(f"| {name} | {step} | {hours:.2f} | {psnr:.2f} | {lpips:.4f} |")
    if args.out:
        draw(curves, args.out)
        print(f"curves drawn in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
