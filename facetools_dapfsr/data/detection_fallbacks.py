"""What the landmark detector tries when it finds no face: the one place for detection fallbacks.

MTCNN is trained on colour photos of evenly lit faces with background around them. The domains
this project adapts to break that: tight crops (Extended Yale B, ID photos) fill the frame,
thermal images show skin bright and hair dark (the inverse of a photo), and harsh or dim light
leaves the face in a few grey levels. When the plain image gives no confident face, the
fallbacks below are tried in order and the first confident detection is kept; its landmarks are
mapped back to the original image, and the name of the fallback is recorded with them.

- ``pad``: a grey border of 40% of the longer side on each side (a face that fills the frame,
  or is cut by it, is found again; a border does not move a face inside the photo);
- ``invert``: ``255 - image`` (thermal and inverted-intensity images);
- ``equalize``: per-channel histogram equalisation (dark or low-contrast images);
- and their combinations.

A face found in the plain image that fills it (:func:`is_tight_crop`) is searched again with
the border when ``pad`` is among the fallbacks, and the bordered result is kept if there is one.

Measured on Extended Yale B (all illuminations) and inverted CelebA faces:
``benchmarks/detection_fallbacks.py``, figures in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

PAD_FRACTION = 0.4
PAD_GREY = 128
TIGHT_EYE_FRACTION = 0.4
"""A face whose eyes are further apart than this fraction of the image width fills the frame:
MTCNN's landmarks on such crops are pushed outwards (Extended Yale B: median 36.7 px off, eyes
about 99 px apart), so :func:`is_tight_crop` faces are searched again with the border."""
TRANSFORMS = ("pad", "invert", "equalize")
DEFAULT_FALLBACKS: tuple[str, ...] = (
    "pad",
    "equalize",
    "pad+equalize",
    "invert",
    "pad+invert",
    "invert+equalize",
    "pad+invert+equalize",
)
"""Cheapest and most common first: tight crops, then dark images, then thermal-like ones."""

Found = TypeVar("Found")


def parse_fallbacks(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"default"``, ``"none"`` or a comma-separated list of fallbacks (``"pad,invert"``)."""
    if not isinstance(text, str):
        names = tuple(text)
    elif text == "default":
        return DEFAULT_FALLBACKS
    elif text == "none":
        return ()
    else:
        names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        parts = name.split("+")
        if not parts or any(part not in TRANSFORMS for part in parts) or len(set(parts)) != len(parts):
            raise ValueError(
                f"unknown detector fallback {name!r}: use 'default', 'none' or a comma-separated list of "
                f"{', '.join(TRANSFORMS)} and their combinations joined by '+'"
            )
    return names


def apply_fallback(image: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """``image [H, W, 3]`` uint8 as the fallback ``name`` shows it to the detector, and the
    border added on each side (subtract it from the landmarks found)."""
    parts = set(name.split("+"))
    out = image
    if "invert" in parts:
        out = 255 - out
    if "equalize" in parts:
        out = equalize(out)
    pad = 0
    if "pad" in parts:
        pad = round(PAD_FRACTION * max(out.shape[:2]))
        out = np.pad(out, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_GREY)
    return np.ascontiguousarray(out), pad


def equalize(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation of each channel of a uint8 image (a constant channel is kept)."""
    out = np.empty_like(image)
    for channel in range(image.shape[2]):
        values = image[..., channel]
        histogram = np.bincount(values.reshape(-1), minlength=256)
        cdf = np.cumsum(histogram)
        low = cdf[np.nonzero(histogram)[0][0]]
        if cdf[-1] == low:
            out[..., channel] = values
            continue
        lut = np.clip(np.round((cdf - low) / (cdf[-1] - low) * 255), 0, 255).astype(np.uint8)
        out[..., channel] = lut[values]
    return out


def is_tight_crop(landmarks: np.ndarray, image_width: int) -> bool:
    """Whether the face found fills the image (see :data:`TIGHT_EYE_FRACTION`)."""
    eyes = np.asarray(landmarks, dtype=np.float64)[:2]
    return float(np.hypot(*(eyes[1] - eyes[0]))) > TIGHT_EYE_FRACTION * image_width


def detect_with_fallbacks(
    detect: Callable[[np.ndarray], tuple[np.ndarray, Found] | None],
    image: np.ndarray,
    fallbacks: Sequence[str],
    try_plain: bool = True,
) -> tuple[tuple[np.ndarray, Found] | None, str | None]:
    """``((landmarks [5, 2], extra), fallback)`` of the first confident detection, or
    ``(None, None)``.

    ``detect`` maps an ``[H, W, 3]`` uint8 image to ``(landmarks, extra)`` or None. The plain
    image is tried first (``fallback`` None), unless ``try_plain`` is False because the caller
    already did (batched detection).
    """
    if try_plain:
        found = detect(image)
        if found is not None:
            return found, None
    for name in fallbacks:
        shown, pad = apply_fallback(image, name)
        found = detect(shown)
        if found is not None:
            landmarks, extra = found
            return (np.asarray(landmarks, dtype=np.float32) - pad, extra), name
    return None, None
