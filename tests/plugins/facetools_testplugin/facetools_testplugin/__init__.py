"""Third-party stages used by the pipeline tests.

- detect ``centre-face``: one face in the middle of the photo, 40% of its shorter side wide;
- super_resolve ``flat-grey``: every face becomes mid-grey (16 px in, 32 px out);
- super_resolve ``broken``: always raises, to exercise error reporting.
"""

from __future__ import annotations

import numpy as np
import torch

from facetools_dapfsr.data.alignment import FACE_TEMPLATE
from facetools_dapfsr.pipeline import Detection, hookimpl


class CentreFace:
    def detect(self, image: torch.Tensor) -> list[Detection]:
        height, width = image.shape[1:]
        side = 0.4 * min(height, width)
        origin = np.array([width / 2 - side / 2, height / 2 - side / 2])
        landmarks = (FACE_TEMPLATE * side + origin).astype(np.float32)
        box = np.array([*origin, *(origin + side)], dtype=np.float32)
        return [Detection(box=box, landmarks=landmarks, score=1.0)]


class FlatGrey:
    lr_size = 16
    hr_size = 32

    def super_resolve(self, faces: torch.Tensor) -> torch.Tensor:
        return torch.full((len(faces), 3, self.hr_size, self.hr_size), 0.5)


class Broken:
    lr_size = 16
    hr_size = 32

    def super_resolve(self, faces: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("broken on purpose")


@hookimpl
def register_stages(register):
    register("detect", "centre-face", lambda config: CentreFace())
    register("super_resolve", "flat-grey", lambda config: FlatGrey())
    register("super_resolve", "broken", lambda config: Broken())
