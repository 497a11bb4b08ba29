"""Which input suits dlib's face descriptor on this project's template crops? Same vs different people.

CelebA file names carry the identity (``<identity>_<index>.jpg``). For the first ``--identities``
identities of ``celeba/test`` with at least two photos, the HR template crops (as ``dapfsr
evaluate`` aligns them) are described with each crop of :mod:`facetools_dapfsr.metrics.identity`;
the script prints, per crop, the distances between two photos of the same person, between photos
of different people (each photo against the next identity's first photo), and between an HR face
and its 16 px bicubic reconstruction, with the share under dlib's 0.6 threshold.

    python benchmarks/identity_crop.py --identities 64
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from facetools_dapfsr.data.degradation import DegradationConfig, degrade
from facetools_dapfsr.data.faces import AlignedFaces
from facetools_dapfsr.metrics.identity import CROPS, SAME_PERSON_THRESHOLD, IdentityDescriptor

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba" / "test"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--identities", type=int, default=64)
    args = parser.parse_args()

    faces = AlignedFaces.prepare(str(args.data), 128, show_progress=False)
    by_identity: dict[str, list[int]] = defaultdict(list)
    for index in range(len(faces)):
        by_identity[Path(faces.path(index)).name.split("_")[0]].append(index)
    people = [rows[:2] for _, rows in sorted(by_identity.items()) if len(rows) >= 2][: args.identities]
    first = torch.stack([faces[a][0] for a, _ in people])
    second = torch.stack([faces[b][0] for _, b in people])
    lr = degrade(first, 16, DegradationConfig(), torch.Generator().manual_seed(0))
    bicubic = F.interpolate(lr, size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)
    print(f"{len(people)} CelebA test identities with two photos each ({args.data})")
    print("| crop | same person | different people | HR vs 16 px bicubic | s/face |")
    print("|---|---|---|---|---:|")
    for crop in CROPS:
        descriptor = IdentityDescriptor.from_weights_cache(crop, progress=False)
        start = time.perf_counter()
        d_first, d_second, d_bicubic = (descriptor.descriptors(x) for x in (first, second, bicubic))
        seconds = (time.perf_counter() - start) / (3 * len(people))
        same = (d_first - d_second).norm(dim=1)
        different = (d_first - d_second.roll(1, 0)).norm(dim=1)
        restored = (d_first - d_bicubic).norm(dim=1)

        def cell(distances: torch.Tensor) -> str:
            within = (distances < SAME_PERSON_THRESHOLD).float().mean().item()
            return f"{distances.mean().item():.3f} ({100 * within:.0f}% < 0.6)"

        print(f"| {crop} | {cell(same)} | {cell(different)} | {cell(restored)} | {seconds:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
