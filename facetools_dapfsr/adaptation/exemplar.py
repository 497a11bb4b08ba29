"""The one-shot exemplar: read a photo, find its face, align it to the model's template.

DAMMA needs the exemplar as the model sees faces: ``[1, 3, hr, hr]`` in ``[0, 1]``, aligned with
the 5-point template of :mod:`facetools_dapfsr.data.alignment`. Landmarks come from MTCNN (the
pipeline's detector); the largest face is used. Tightly cropped faces (Extended Yale B, many ID
photos) are not found, or found with wrong landmarks, by MTCNN unless the photo is padded, so
every photo is searched with a grey border around it (see ``PADDINGS``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facetools_dapfsr.data.alignment import align_face
from facetools_dapfsr.data.detection_fallbacks import (
    DEFAULT_FALLBACKS,
    detect_with_fallbacks,
)
from facetools_dapfsr.images import ImageReadError, read_image

# MTCNN misses faces that fill the whole frame, or finds them with landmarks pushed outwards (the
# face is cut by the frame). A grey border (per side, as a fraction of the longer side) fixes
# both; these are tried in order. Measured on the frontal-lit Extended Yale B crops: with 0.4
# (or 0.3) the eyes come out about 95-100 px apart at y 42-50 (the true layout), with 0.2 or no
# border often 110-150 px apart. A border does not change a face that lies inside the photo.
PADDINGS = (0.4, 0.3, 0.5, 0.2, 0.6, 0.0)
PADDING_GREY = 0.5
MIN_FACE_SIZE = 20.0


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
    image: torch.Tensor, fallbacks: Sequence[str] = DEFAULT_FALLBACKS
) -> tuple[np.ndarray, str | None] | None:
    """``(landmarks [5, 2], fallback)`` of the largest face in ``image [3, H, W]``, or None.

    The photo is searched with the grey borders of ``PADDINGS``; where none finds a face, the
    intensity changes of ``fallbacks`` (:mod:`facetools_dapfsr.data.detection_fallbacks`: the
    search pads already, so ``pad`` adds nothing here) are tried in order, and ``fallback``
    names the one that found it (None: the photo as it is).
    """
    from facetools_dapfsr.pipeline.detect_mtcnn import MTCNNDetector

    detector = MTCNNDetector(min_face_size=MIN_FACE_SIZE)

    def padded_search(photo: torch.Tensor) -> tuple[np.ndarray, None] | None:
        for fraction in PADDINGS:
            pad = round(fraction * max(photo.shape[1:]))
            padded = F.pad(photo.unsqueeze(0), (pad, pad, pad, pad), value=PADDING_GREY)[0] if pad else photo
            detections = detector.detect(padded)
            if detections:
                largest = max(detections, key=lambda d: float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
                return np.asarray(largest.landmarks, dtype=np.float64) - pad, None
        return None

    found = padded_search(image)
    if found is not None:
        return found[0], None
    intensity = dict.fromkeys("+".join(p for p in name.split("+") if p != "pad") for name in fallbacks)
    intensity.pop("", None)
    as_uint8 = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    found, fallback = detect_with_fallbacks(
        lambda shown: padded_search(torch.from_numpy(shown).permute(2, 0, 1).float() / 255),
        as_uint8,
        list(intensity),
        try_plain=False,
    )
    return None if found is None else (np.asarray(found[0], dtype=np.float64), fallback)


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
