"""How often the landmark detector finds the face, with and without detection fallbacks.

    python benchmarks/detection_fallbacks.py --yaleb ../shared/data/yaleb --celeba ../shared/data/celeba/test \
        --celeba-faces 200 --out benchmarks/records/detection_fallbacks.json

Sets: every Extended Yale B image (all 64 illuminations of every subject, tight 168x192 grey
crops), CelebA test photos as they are, and the same photos with inverted intensities (what a
thermal image looks like to a detector trained on photos). The detector is the one training data and
``dapfsr evaluate`` folders use (:class:`facetools_dapfsr.data.landmarks.LandmarkDetector`, default
settings). Yale B's 64 images of a subject are pixel-registered, so the landmarks found
on its frontal-lit image by the padded search of ``dapfsr adapt`` (what the evaluation protocol uses
for every image of the subject) are a reference for the others: the error column is the median
distance of the 5 points to it, in pixels (the eyes are about 99 px apart).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from facetools_dapfsr.data.landmarks import DetectorSettings, LandmarkDetector
from facetools_dapfsr.evaluation.runner import machine_description
from facetools_dapfsr.fileio import atomic_write_text


def read_rgb(path: Path, invert: bool = False) -> np.ndarray:
    image = np.asarray(Image.open(path).convert("RGB"))
    return 255 - image if invert else image


def run(detector: LandmarkDetector, images: list[np.ndarray]) -> list[tuple[np.ndarray, float, str | None] | None]:
    # One image at a time: the sets mix sizes, and the fallbacks run per image anyway.
    return [detector.detect_with_fallbacks([image])[0] for image in images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yaleb", type=Path, default=Path("../shared/data/yaleb"))
    parser.add_argument("--celeba", type=Path, default=Path("../shared/data/celeba/test"))
    parser.add_argument("--celeba-faces", type=int, default=200, help="first N CelebA test photos (sorted)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    yaleb = sorted(args.yaleb.glob("*/*.png"))
    celeba = sorted(args.celeba.glob("*.jpg"))[: args.celeba_faces]
    sets = {
        "Extended Yale B, all illuminations": [read_rgb(p) for p in yaleb],
        "CelebA test": [read_rgb(p) for p in celeba],
        "CelebA test, inverted intensities": [read_rgb(p, invert=True) for p in celeba],
    }
    rows = []
    for fallbacks, label in (((), "none"), (DetectorSettings().fallbacks, "default")):
        detector = LandmarkDetector(dataclasses.replace(DetectorSettings(), fallbacks=fallbacks))
        for name, images in sets.items():
            start = time.perf_counter()
            found = run(detector, images)
            seconds = time.perf_counter() - start
            row = {
                "set": name,
                "fallbacks": label,
                "images": len(images),
                "found": sum(f is not None for f in found),
                "by_fallback": dict(Counter(f[2] for f in found if f is not None and f[2] is not None)),
                "seconds_per_image": seconds / len(images),
            }
            if name.startswith("Extended Yale B"):
                row["median_error_px"] = yaleb_error(yaleb, found)
                row["median_error_px_by_fallback"] = {
                    str(fallback): yaleb_error(
                        yaleb, [f if f is not None and f[2] == fallback else None for f in found]
                    )
                    for fallback in sorted({f[2] for f in found if f is not None}, key=str)
                }
                # Which lights the misses have: "A<azimuth>E<elevation>" (the file name's code).
                misses = Counter(p.stem.split("_P00")[-1] for p, f in zip(yaleb, found, strict=True) if f is None)
                row["misses_by_light"] = dict(misses.most_common())
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| set | fallbacks | found | of | rate | found by a fallback | median error (px) | s/image |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    for row in rows:
        by = ", ".join(f"{name} {count}" for name, count in sorted(row["by_fallback"].items())) or "-"
        error = f"{row['median_error_px']:.1f}" if row.get("median_error_px") is not None else ""
        print(
            f"| {row['set']} | {row['fallbacks']} | {row['found']} | {row['images']} | "
            f"{row['found'] / row['images']:.1%} | {by} | {error} | {row['seconds_per_image']:.3f} |"
        )
    if args.out:
        record = {
            "command": "python benchmarks/detection_fallbacks.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
            "machine": machine_description(),
            "rows": rows,
        }
        atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")


_REFERENCES: dict[tuple[Path, ...], dict[str, np.ndarray]] = {}


def yaleb_error(paths: list[Path], found: list) -> float | None:
    """Median distance of the points found on each image to its subject's reference points: those
    the evaluation protocol uses (the padded search of ``dapfsr adapt`` on the frontal-lit
    image; all of a subject's images are pixel-registered)."""
    from facetools_dapfsr.adaptation.exemplar import find_landmarks, read_photo

    key = tuple(paths)
    if key not in _REFERENCES:
        _REFERENCES[key] = {}
        for path in paths:
            if "P00A+000E+00" in path.name:
                result = find_landmarks(read_photo(path), fallbacks=())
                if result is not None:
                    _REFERENCES[key][path.parent.name] = result[0]
    reference = _REFERENCES[key]
    errors = [
        float(np.median(np.linalg.norm(result[0] - reference[path.parent.name], axis=1)))
        for path, result in zip(paths, found, strict=True)
        if result is not None and path.parent.name in reference
    ]
    return float(np.median(errors)) if errors else None


if __name__ == "__main__":
    main()
