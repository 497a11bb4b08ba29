"""Writes an evaluation: ``results.json``, ``results.md`` (the paper's table layout), ``grid.png``.

The table follows the paper's Table 1/2 layout: one row per method, columns PSNR (dB) up,
SSIM up, LPIPS down, face quality up; mean over splits and draws, standard deviation in
parentheses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from facetools_dapfsr.evaluation.runner import EvaluationResult, GridSample
from facetools_dapfsr.fileio import atomic_write_text

RESULTS_JSON = "results.json"
RESULTS_MARKDOWN = "results.md"
GRID_PNG = "grid.png"
COLUMNS = (
    ("psnr", "PSNR (dB) ↑", 2),
    ("ssim", "SSIM ↑", 3),
    ("lpips", "LPIPS ↓", 3),
    ("face_quality", "Face quality ↑", 3),
    ("identity_distance", "Identity distance ↓", 3),
    ("identity_verified", "Same person ↑", 2),
)


def _cell(entry: dict[str, Any], metric: str, digits: int) -> str:
    value, std = entry.get(metric), entry.get(f"{metric}_std")
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    return f"{text} ({std:.{digits}f})" if std else text


def markdown_table(result: dict[str, Any]) -> str:
    """The results as a markdown table (one row per method) with a short header of the setting."""
    protocol = result["protocol"]
    target = result["target"]
    setting = (
        f"Target domain: {target['name']} ({target['kind']}, {target['images']} images); "
        f"{protocol['splits']} splits x {protocol['draws']} exemplar draws, seed {protocol['seed']}; "
        f"PSNR/SSIM on {result['metrics']['psnr_ssim_on']}; padded fraction of the ground truth "
        f"{result['padded_fraction']:.4f} (excluded from PSNR/SSIM). Mean (std over draws)."
    )
    if result.get("hr_face_quality") is not None:
        setting += f" Face quality of the HR faces themselves: {result['hr_face_quality']:.3f}."
    lines = [
        setting,
        "",
        "| Method | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for entry in result["summary"].values():
        cells = [_cell(entry, metric, digits) for metric, _, digits in COLUMNS]
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def grid_image(grid: GridSample, labels: dict[str, str] | None = None) -> torch.Tensor:
    """``[3, H, W]`` image: one row per face, columns LR | methods in order | HR.

    The LR face is enlarged with nearest-neighbour sampling so its pixels stay visible.
    """
    size = grid.hr.shape[-1]
    lr = F.interpolate(grid.lr, size=(size, size), mode="nearest")
    columns = [lr, *grid.outputs.values(), grid.hr]
    gap = 2
    rows = []
    for index in range(len(grid.hr)):
        tiles = []
        for column in columns:
            tiles.append(column[index].clamp(0, 1))
            tiles.append(torch.ones(3, size, gap))
        rows.append(torch.cat(tiles[:-1], dim=2))
        rows.append(torch.ones(3, gap, rows[-1].shape[2]))
    return torch.cat(rows[:-1], dim=1)


def write_report(result: EvaluationResult, out: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``grid.png`` (and ``grid.txt`` naming its
    columns) into ``out``; returns the paths written."""
    from facetools_dapfsr.images import save_image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    paths = {"json": out / RESULTS_JSON, "markdown": out / RESULTS_MARKDOWN}
    atomic_write_text(paths["json"], json.dumps(data, indent=2) + "\n")
    atomic_write_text(paths["markdown"], markdown_table(data))
    if result.grid is not None and len(result.grid.hr):
        paths["grid"] = save_image(grid_image(result.grid), out / GRID_PNG)
        columns = [f"LR (nearest x{result.grid.hr.shape[-1] // result.grid.lr.shape[-1]})"]
        columns += [result.summary[name]["label"] for name in result.grid.outputs]
        columns.append("HR (ground truth)")
        paths["grid_columns"] = out / "grid.txt"
        atomic_write_text(paths["grid_columns"], "grid.png columns, left to right: " + " | ".join(columns) + "\n")
    return paths
