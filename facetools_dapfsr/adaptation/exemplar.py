"""The one-shot exemplar: read a photo, find its face, align it to the model's template.

DAMMA needs the exemplar as the model sees faces: ``[1, 3, hr, hr]`` in ``[0, 1]``, aligned with
the 5-point template of :mod:`facetools_dapfsr.data.alignment`. Landmarks come from the landmark
service's photo search (:meth:`facetools_dapfsr.data.landmarks.LandmarkDetector.find_face`):
the largest face, searched with grey borders around the photo, since MTCNN misses tightly
cropped faces (Extended Yale B, many ID photos) or finds them with wrong landmarks unless the
photo is padded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facetools_dapfsr.data.alignment import align_face
from facetools_dapfsr.data.detection_fallbacks import DEFAULT_FALLBACKS
from facetools_dapfsr.data.landmarks import LandmarkDetector
from facetools_dapfsr.images import ImageReadError, read_image


class ExemplarError(ValueError):
    """The exemplar cannot be used: unreadable file, or no face in it."""


@dataclass
class Exemplar:
    hr: torch.Tensor
    """``[1, 3, hr, hr]`` aligned face in ``[0, 1]``."""
    valid: torch.Tensor
    """``[1, 1, hr, hr]``: 1 where the aligned face came from inside the photo."""
    landmarks: np.ndarray
    """``[5, 2]`` landmarks found in the photo (pixel coordinates)."""
    lr: torch.Tensor | None = None
    """``[1, 3, lr, lr]`` when an LR image was given."""
    fallback: str | None = None
    """The detection fallback that found the face (None: the photo as it is)."""


def find_landmarks(
    image: torch.Tensor, fallbacks: Sequence[str] = DEFAULT_FALLBACKS, detector: LandmarkDetector | None = None
) -> tuple[np.ndarray, str | None] | None:
    """``(landmarks [5, 2], fallback)`` of the largest face in ``image [3, H, W]``, or None:
    :meth:`LandmarkDetector.find_face <facetools_dapfsr.data.landmarks.LandmarkDetector.find_face>`
    (``fallback`` names the detection fallback that found it, None: the photo as it is).
    ``detector``: one to reuse across photos (its networks are loaded once)."""
    return (detector or LandmarkDetector()).find_face(image, fallbacks)


def read_photo(path: str | os.PathLike[str]) -> torch.Tensor:
    """``[3, H, W]`` in ``[0, 1]``; a clear :class:`ExemplarError` for unreadable files."""
    try:
        return read_image(path).image
    except (ImageReadError, OSError) as error:
        raise ExemplarError(f"cannot read the exemplar: {error}") from error


def load_exemplar(
    path: str | os.PathLike[str],
    hr_size: int,
    lr_path: str | os.PathLike[str] | None = None,
    lr_size: int = 16,
    fallbacks: Sequence[str] = DEFAULT_FALLBACKS,
    landmarks: np.ndarray | None = None,
) -> Exemplar:
    """Read and align an exemplar photo (and its LR face, if given).

    The LR image, when given, must already be the face as the model's LR input sees it (aligned
    like the HR face); it is resized to ``lr_size`` if needed (antialiased area-style).
    ``fallbacks``: what the face search tries when the photo as it is shows no face
    (:func:`find_landmarks`). ``landmarks [5, 2]`` (the photo's pixel coordinates, the
    template's order) skip the search: a user's own detector, a manual annotation, or the
    template points of an already aligned crop (``template_points(side)``).

    Raises:
        ExemplarError: a file cannot be read, or the HR photo holds no face.
    """
    photo = read_photo(path)
    found = find_landmarks(photo, fallbacks) if landmarks is None else (np.asarray(landmarks, dtype=np.float64), None)
    if found is None:
        tried = ", ".join(fallbacks) if fallbacks else "none (--detector-fallbacks none)"
        raise ExemplarError(
            f"no face found in the exemplar {path} (detection fallbacks tried: {tried}): "
            "give a photo with one clearly visible face"
        )
    landmarks, fallback = found
    face, valid = align_face(photo, landmarks, hr_size)
    lr = None
    if lr_path is not None:
        small = read_photo(lr_path).unsqueeze(0)
        if tuple(small.shape[2:]) != (lr_size, lr_size):
            small = F.interpolate(small, size=(lr_size, lr_size), mode="bicubic", antialias=True, align_corners=False)
        lr = small.clamp(0, 1)
    return Exemplar(
        hr=face.unsqueeze(0).clamp(0, 1), valid=valid.unsqueeze(0), landmarks=landmarks, lr=lr, fallback=fallback
    )
