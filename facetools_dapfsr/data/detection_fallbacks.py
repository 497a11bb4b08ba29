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
- ``lift``: a shadow-lifting tone curve (:data:`LIFT_GAMMA`), for faces lit from the side or from
  below, where equalisation spreads the bright half and leaves the shadowed one dark;
- ``mirror``: the image flipped left-right, the landmarks flipped back (MTCNN is not symmetric:
  a face lit from one side is sometimes found lit from the other);
- ``symmetric``: the brighter of each pixel and its mirror image about the vertical centre line
  (a side-lit face centred in its crop gets its shadowed half from its lit half; no use on a
  face away from the centre, so it comes last);
- ``upscale``: the image enlarged x2 (bicubic) before the border, so the detector's pyramid
  sees the face at other scales;
- and their combinations.

A detection on a fallback's image counts with a lower score than on the plain image
(``DetectorSettings.fallback_min_score``, 0.7 against 0.95) when its points have the geometry
of an upright face of a plausible size (:func:`is_plausible_face`), and only when no fallback
gives a detection at the usual score (inverted CelebA faces are then still found by ``invert``
at 0.99 rather than by ``pad`` at 0.75 with 20 px errors).

A face found in the plain image that fills it (:func:`is_tight_crop`) is searched again with
the border when ``pad`` is among the fallbacks, and the bordered result is kept if there is one;
likewise a face found by a fallback without the border, when the fallback with it is listed.

Measured on Extended Yale B (all illuminations) and inverted CelebA faces:
``benchmarks/detection_fallbacks.py``, figures in ``benchmarks/RESULTS.md``. How the transforms
for side and low light were chosen: each alone (with ``pad``) on the 663 Yale B images the first
seven defaults missed; faces found at score 0.95 / at 0.7 with plausible geometry, and the
median error of their points against the subject's frontal-lit points (eyes about 99 px apart):

- ``pad+lift`` 187 / 306, 6.3 / 7.2 px (gamma 0.3: 193 / 306; 0.5: 131; a log curve: 168 / 274,
  7.2 / 8.2 px);
- ``pad+equalize+lift`` 200 / 304 (at 0.8), ``pad+equalize+mirror`` 147 / 323, 8.5 / 9.4 px,
  ``pad+mirror`` 48 / 106;
- ``pad+symmetric`` 104 / 216, 7.6 / 7.4 px;
- ``pad+lift+upscale`` 196 at 0.95 (5.7 px), but 2 faces beyond the others at 0.7, so only
  ``pad+lift+mirror+upscale`` is a default (6 beyond the others);
- the lower score alone (``pad`` and ``pad+equalize`` at 0.7) 77 and 248, the latter with 36 faces
  more than 25 px off, which is why the new transforms are tried as well;
- a local (CLAHE-like, 8x8 tiles, clip 2) equalisation: 14 / 61, 7.9 / 14.8 px; not kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

from facetools_dapfsr.data.alignment import original_points

PAD_FRACTION = 0.4
PAD_GREY = 128
LIFT_GAMMA = 0.4
"""The tone curve of ``lift``: ``255 * (v / 255) ** 0.4`` (measured against 0.3, 0.5, 0.6 and a
log curve on the Yale B faces the other fallbacks miss: 0.4 finds the most, 0.3 about as many
with larger errors, 0.5 and 0.6 fewer; the log curve fewer with larger errors)."""
UPSCALE_FACTOR = 2
TIGHT_EYE_FRACTION = 0.4
"""A face whose eyes are further apart than this fraction of the image width fills the frame:
MTCNN's landmarks on such crops are pushed outwards (Extended Yale B: median 36.7 px off, eyes
about 99 px apart), so :func:`is_tight_crop` faces are searched again with the border."""
MIN_EYE_FRACTION = 0.15
"""A fallback's face below the usual score must have its eyes at least this fraction of the image's shorter side apart:
where the plain image shows no face, a smaller one is more often a pattern taken for a face
(on Yale B, an eye found as a whole face). Measured on the Yale B faces the new fallbacks find:
it drops 14 of 61 faces more than 25 px off, and 4 good ones."""
TRANSFORMS = ("invert", "equalize", "lift", "symmetric", "mirror", "upscale", "pad")
"""Every transform, in the order they are applied whatever the order of a name's parts."""
MIRROR_ORDER = (1, 0, 2, 4, 3)
"""The 5 landmarks of a mirrored face in the template's order (the eyes and the mouth corners swap)."""
DEFAULT_FALLBACKS: tuple[str, ...] = (
    "pad",
    "equalize",
    "pad+equalize",
    "invert",
    "pad+invert",
    "invert+equalize",
    "pad+invert+equalize",
    "pad+lift",
    "pad+lift+mirror",
    "pad+equalize+mirror",
    "pad+equalize+lift",
    "pad+lift+mirror+upscale",
    "pad+symmetric",
)
"""Cheapest and most common first: tight crops, then dark images, then thermal-like ones, then
the shadow-lifted, mirrored and enlarged views for faces lit from the side or from below."""

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


@dataclass(frozen=True)
class Shown:
    """An image as a fallback shows it to the detector, and the way back to the original's pixels."""

    image: np.ndarray
    """``[H', W', 3]`` uint8, what the detector sees."""
    pad: int = 0
    """Border added on each side (after any upscaling)."""
    scale: int = 1
    """Upscaling factor (before the border)."""
    mirrored_width: int | None = None
    """The original's width when the image was mirrored left-right, else None."""

    def to_original(self, landmarks: np.ndarray) -> np.ndarray:
        """``landmarks [5, 2]`` found in :attr:`image` -> the original image's pixel coordinates
        (pixel centres at integers) and the template's order."""
        points = original_points(np.asarray(landmarks, dtype=np.float32) - self.pad, self.scale)
        if self.mirrored_width is not None:
            points = points[list(MIRROR_ORDER)].copy()
            points[:, 0] = self.mirrored_width - 1 - points[:, 0]
        return points


def apply_fallback(image: np.ndarray, name: str) -> Shown:
    """``image [H, W, 3]`` uint8 as the fallback ``name`` shows it to the detector."""
    parts = set(name.split("+"))
    out = image
    if "invert" in parts:
        out = 255 - out
    if "equalize" in parts:
        out = equalize(out)
    if "lift" in parts:
        out = lift_shadows(out)
    if "symmetric" in parts:
        out = np.maximum(out, out[:, ::-1])
    mirrored_width = None
    if "mirror" in parts:
        out, mirrored_width = out[:, ::-1], out.shape[1]
    scale = 1
    if "upscale" in parts:
        scale = UPSCALE_FACTOR
        height, width = out.shape[:2]
        resized = Image.fromarray(np.ascontiguousarray(out)).resize(
            (width * scale, height * scale), Image.Resampling.BICUBIC
        )
        out = np.array(resized)  # writable (torch.from_numpy warns on a read-only array)
    pad = 0
    if "pad" in parts:
        pad = round(PAD_FRACTION * max(out.shape[:2]))
        out = np.pad(out, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_GREY)
    return Shown(np.ascontiguousarray(out), pad, scale, mirrored_width)


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


def lift_shadows(image: np.ndarray, gamma: float = LIFT_GAMMA) -> np.ndarray:
    """The tone curve ``255 * (v / 255) ** gamma`` on a uint8 image: dark levels spread out, black
    and white stay. (Before :func:`equalize` it would change nothing: equalisation only sees the
    order of the levels, so ``equalize+lift`` lifts the equalised image.)"""
    lut = np.round(255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)
    return lut[image]


def is_tight_crop(landmarks: np.ndarray, image_width: int) -> bool:
    """Whether the face found fills the image (see :data:`TIGHT_EYE_FRACTION`)."""
    eyes = np.asarray(landmarks, dtype=np.float64)[:2]
    return float(np.hypot(*(eyes[1] - eyes[0]))) > TIGHT_EYE_FRACTION * image_width


def is_plausible_face(landmarks: np.ndarray, image_shape: tuple[int, ...] | None = None) -> bool:
    """Whether 5 points ``[left eye, right eye, nose, left mouth, right mouth]`` look like an
    upright face: the eyes within 30 degrees of level and in order, the mouth below them and in
    order, the nose between the eye and mouth lines, the eye-to-mouth distance 0.6-1.6 times the
    eye distance, and with ``image_shape`` (``(H, W, ...)``) the eyes at least
    :data:`MIN_EYE_FRACTION` of its shorter side apart. Fallback detections below the usual
    score must pass it (a confident one need not: tilted faces fail the level-eyes rule)."""
    left_eye, right_eye, nose, left_mouth, right_mouth = np.asarray(landmarks, dtype=np.float64)
    eyes, mouth = (left_eye + right_eye) / 2, (left_mouth + right_mouth) / 2
    eye_vector = right_eye - left_eye
    eye_distance = float(np.hypot(*eye_vector))
    if eye_vector[0] <= 0 or right_mouth[0] <= left_mouth[0]:
        return False
    tilt = abs(float(np.degrees(np.arctan2(eye_vector[1], eye_vector[0]))))
    ratio = float(np.hypot(*(mouth - eyes))) / eye_distance
    large_enough = image_shape is None or eye_distance >= MIN_EYE_FRACTION * min(image_shape[:2])
    return large_enough and tilt < 30 and 0.6 < ratio < 1.6 and eyes[1] < nose[1] < mouth[1]


def search_again_with_border(
    attempt: Callable[[str], tuple[np.ndarray, Found] | None],
    found: tuple[np.ndarray, Found],
    name: str | None,
    fallbacks: Sequence[str],
    image_width: int,
) -> tuple[tuple[np.ndarray, Found], str | None]:
    """``(found, name)``, or the same face searched again with the border when ``found`` (its
    landmarks first), found by the fallback ``name`` (None: the image as it is) without the
    border, fills the image (:func:`is_tight_crop`) and ``name`` with ``pad`` is among
    ``fallbacks``. ``attempt(fallback)`` runs a detection on that fallback's image, mapped back."""
    padded = {frozenset(fallback.split("+")): fallback for fallback in fallbacks if "pad" in fallback.split("+")}
    parts = frozenset(name.split("+")) if name is not None else frozenset()
    with_border = padded.get(parts | {"pad"})
    if with_border in (None, name) or not is_tight_crop(found[0], image_width):
        return found, name
    again = attempt(with_border)
    return (again, with_border) if again is not None else (found, name)


def detect_with_fallbacks(
    detect: Callable[[np.ndarray], tuple[np.ndarray, Found] | None],
    image: np.ndarray,
    fallbacks: Sequence[str],
    try_plain: bool = True,
    detect_fallback: Callable[[np.ndarray], tuple[np.ndarray, Found] | None] | None = None,
    is_lenient: Callable[[Found], bool] | None = None,
) -> tuple[tuple[np.ndarray, Found] | None, str | None]:
    """``((landmarks [5, 2], extra), fallback)`` of the first confident detection, or
    ``(None, None)``.

    ``detect`` maps an ``[H, W, 3]`` uint8 image to ``(landmarks, extra)`` or None. The plain
    image is tried first (``fallback`` None), unless ``try_plain`` is False because the caller
    already did (batched detection: then the caller also runs :func:`search_again_with_border`
    on the faces it found). ``detect_fallback`` (default ``detect``) is used on the
    fallbacks' images: a detector with a lower score threshold, say, where ``is_lenient(extra)``
    tells a detection below the usual threshold. Such a detection counts only when it is
    :func:`is_plausible_face`, and only when no fallback in the list gives a detection at the
    usual threshold (the first plausible lenient one is kept meanwhile: no fallback runs twice).
    A face found without ``pad`` that fills the image, on the plain image (with ``detect``) or
    on a fallback's, is searched again with the border when that combination is among
    ``fallbacks`` (:func:`search_again_with_border`).
    """
    width = image.shape[1]
    if try_plain:
        plain = detect(image)
        if plain is not None:
            return search_again_with_border(
                lambda name: detect_on_fallback(detect, image, name), plain, None, fallbacks, width
            )
    detect_fallback = detect_fallback or detect
    lenient: tuple[tuple[np.ndarray, Found], str | None] | None = None

    def attempt(name: str) -> tuple[np.ndarray, Found] | None:
        found = detect_on_fallback(detect_fallback, image, name)
        if found is None:
            return None
        if is_lenient is not None and is_lenient(found[1]) and not is_plausible_face(found[0], image.shape):
            return None
        return found

    for name in fallbacks:
        first = attempt(name)
        if first is None:
            continue
        found, used = search_again_with_border(attempt, first, name, fallbacks, width)
        if is_lenient is None or not is_lenient(found[1]):
            return found, used
        if lenient is None:
            lenient = (found, used)
    return lenient if lenient is not None else (None, None)


def detect_on_fallback(
    detect: Callable[[np.ndarray], tuple[np.ndarray, Found] | None], image: np.ndarray, name: str
) -> tuple[np.ndarray, Found] | None:
    """``(landmarks, extra)`` of ``detect`` on the fallback ``name``'s image of ``image``, the
    landmarks mapped back to ``image`` (:meth:`Shown.to_original`), or None."""
    shown = apply_fallback(image, name)
    found = detect(shown.image)
    return None if found is None else (shown.to_original(found[0]), found[1])
