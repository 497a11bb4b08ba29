"""The landmark service: every five-point landmark of the package comes from :class:`LandmarkDetector`.

It owns the MTCNN networks (facenet-pytorch, built on first use and kept per setting), the
detection settings, the fallback ladder of :mod:`facetools_dapfsr.data.detection_fallbacks` and
the record of which fallback found a face, and :class:`LandmarkCache`, the JSON file that keeps
its results. Three searches, each with the MTCNN settings it was measured with:

- :meth:`LandmarkDetector.detect_with_fallbacks`: the most confident face of each image, images
  of one size in a batch, then the fallbacks (:class:`DetectorSettings`); training faces and
  evaluation folders (:mod:`facetools_dapfsr.data.faces`);
- :meth:`LandmarkDetector.find_face`: the largest face of a photo, searched with grey borders
  (:data:`PADDINGS`), then the fallbacks' intensity changes; DAMMA exemplars
  (:mod:`facetools_dapfsr.adaptation.exemplar`) and Extended Yale B subjects
  (:mod:`facetools_dapfsr.evaluation.protocol`);
- :meth:`LandmarkDetector.detect_faces`: every face of a photo, which is upsampled for tiny faces
  and tiled when large (:class:`MTCNNOptions`); the pipeline's ``mtcnn`` stage
  (:mod:`facetools_dapfsr.pipeline.detect_mtcnn`).

Coordinates are the image's pixels with pixel centres at integers (:mod:`.alignment`), landmarks
in the template's order.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facetools_dapfsr.data.alignment import original_points
from facetools_dapfsr.data.detection_fallbacks import (
    DEFAULT_FALLBACKS,
    detect_on_fallback,
    detect_with_fallbacks,
    search_again_with_border,
)
from facetools_dapfsr.fileio import atomic_write_text

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
# Landmark-cache writes during a long detection pass, so an interrupted pass keeps its work.
CACHE_SAVE_EVERY = 256
# A coarse detection that overlaps a kept one this much (intersection over the smaller box)
# is the same face seen twice.
DUPLICATE_OVERLAP = 0.5

# MTCNN misses faces that fill the whole frame, or finds them with landmarks pushed outwards (the
# face is cut by the frame). A grey border (per side, as a fraction of the longer side) fixes
# both; these are tried in order. Measured on the frontal-lit Extended Yale B crops: with 0.4
# (or 0.3) the eyes come out about 95-100 px apart at y 42-50 (the true layout), with 0.2 or no
# border often 110-150 px apart. A border does not change a face that lies inside the photo.
PADDINGS = (0.4, 0.3, 0.5, 0.2, 0.6, 0.0)
PADDING_GREY = 0.5
SEARCH_MIN_FACE_SIZE = 20.0
"""Smallest face :meth:`LandmarkDetector.find_face` looks for, in pixels of the photo."""


@dataclass(frozen=True)
class DetectorSettings:
    """How landmarks are found; part of the cache's identity (other settings, other cache)."""

    min_face_size: float = 40.0
    """Smallest face MTCNN looks for, in pixels (smaller is slower; CelebA faces are ~90 px)."""
    min_score: float = 0.95
    """A detection with a lower MTCNN probability does not count as a face."""
    fallback_min_score: float = 0.7
    """The same on a detection fallback's image, where a face below ``min_score`` must also have
    an upright face's geometry (:func:`~facetools_dapfsr.data.detection_fallbacks.is_plausible_face`)
    and counts only when no fallback finds one at ``min_score``."""
    batch_size: int = 16
    """Images of one size detected together."""
    fallbacks: tuple[str, ...] = DEFAULT_FALLBACKS
    """Tried in order on an image where no face is found
    (:mod:`facetools_dapfsr.data.detection_fallbacks`); ``()`` for none."""


@dataclass
class MTCNNOptions:
    """Tuning of the photo search (:meth:`LandmarkDetector.detect_faces`, the built-in ``mtcnn``
    detector) for tiny faces."""

    detect_face_size: float = 20.0
    """The photo is upsampled (bicubic) so that the smallest wanted face is at least this tall
    before MTCNN runs: its refinement networks work on 24 and 48 px crops and miss faces that
    are only 10 px tall in the photo itself."""
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    """P-Net, R-Net and O-Net thresholds (MTCNN's defaults)."""
    factor: float = 0.709
    """Scale step of MTCNN's image pyramid."""
    min_score: float = 0.9
    """Detections below this final score are dropped (tiny-face upsampling finds some texture
    that scores 0.7-0.85)."""
    max_side: int = 1600
    """Largest side, in detection pixels (after upsampling), MTCNN sees at once. Larger photos
    are detected in overlapping tiles plus one pass on a downscaled copy for big faces, so that
    memory stays bounded."""


@dataclass
class Faces:
    """Faces found in a photo, in its pixel coordinates."""

    boxes: np.ndarray
    """``[N, 4]`` ``(x0, y0, x1, y1)``."""
    scores: np.ndarray
    """``[N]`` MTCNN probabilities."""
    landmarks: np.ndarray
    """``[N, 5, 2]``."""

    @classmethod
    def empty(cls) -> Faces:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Faces:
        return Faces(self.boxes[keep], self.scores[keep], self.landmarks[keep])

    @staticmethod
    def concatenate(parts: list[Faces]) -> Faces:
        if not parts:
            return Faces.empty()
        return Faces(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.landmarks for p in parts]),
        )


def detection_upsample(min_face_size: float, options: MTCNNOptions) -> float:
    """Factor the photo search applies to a photo before detection (at least 1)."""
    return max(1.0, options.detect_face_size / min_face_size)


class LandmarkDetector:
    """MTCNN with 5 landmarks: the package's one landmark service (see the module docstring).

    ``settings`` configure :meth:`detect` and :meth:`detect_with_fallbacks`; the photo searches
    take their own (:class:`MTCNNOptions`). Nothing is loaded in the constructor.
    """

    def __init__(self, settings: DetectorSettings | None = None, device: str | torch.device = "cpu") -> None:
        self.settings = settings or DetectorSettings()
        self.device = torch.device(device)
        self._networks: dict[tuple[Any, ...], Any] = {}  # built on first use: loading the networks is I/O

    def network(self, min_face_size: float, **options: Any) -> Any:
        """The MTCNN (``keep_all``) for faces from ``min_face_size`` px, with MTCNN's own
        ``options`` (thresholds, factor, select_largest; its defaults where not given)."""
        key = (round(min_face_size, 3), *sorted((name, _hashable(value)) for name, value in options.items()))
        if key not in self._networks:
            from facenet_pytorch import MTCNN  # heavy; only a search that runs needs it

            self._networks[key] = MTCNN(keep_all=True, min_face_size=min_face_size, device=self.device, **options)
        return self._networks[key]

    # -- one face per image --------------------------------------------------------------------
    def detect(
        self, images: Sequence[np.ndarray], min_score: float | None = None, largest: bool = False
    ) -> list[tuple[np.ndarray, float] | None]:
        """``[H, W, 3]`` uint8 images of one size -> ``(landmarks [5, 2], score)`` or None each,
        on the images as they are (no fallbacks): the most confident face (``largest``: the one
        with the largest box), None when its score is below ``min_score`` (default the settings')."""
        min_score = self.settings.min_score if min_score is None else min_score
        boxes, scores, points = self.network(self.settings.min_face_size).detect(np.stack(images), landmarks=True)
        results: list[tuple[np.ndarray, float] | None] = []
        for image_boxes, image_scores, image_points in zip(boxes, scores, points, strict=True):
            if image_scores is None or image_points is None:
                results.append(None)
                continue
            # facenet-pytorch returns object arrays; cast before arithmetic.
            image_scores = np.asarray(image_scores, dtype=np.float32).reshape(-1)
            image_points = np.asarray(image_points, dtype=np.float32).reshape(-1, 5, 2)
            if largest:
                image_boxes = np.asarray(image_boxes, dtype=np.float32)
                best = int(np.argmax(np.prod(image_boxes[:, 2:] - image_boxes[:, :2], 1)))
            else:
                best = int(np.argmax(image_scores))
            if image_scores[best] < min_score:
                results.append(None)
            else:
                results.append((image_points[best], float(image_scores[best])))
        return results

    def detect_with_fallbacks(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, float, str | None] | None]:
        """As :meth:`detect`, then the settings' fallbacks on each image without a face (and the
        border on a face that fills its image): ``(landmarks, score, fallback)`` (``fallback``
        None for the image as it is) or None."""
        fallbacks = self.settings.fallbacks

        def detect_one(image: np.ndarray) -> tuple[np.ndarray, float] | None:
            return self.detect([image])[0]

        results: list[tuple[np.ndarray, float, str | None] | None] = []
        for image, found in zip(images, self.detect(images), strict=True):
            if found is not None:

                def on_fallback(name: str, image: np.ndarray = image) -> tuple[np.ndarray, float] | None:
                    return detect_on_fallback(detect_one, image, name)

                # The plain images ran in one batch above; only the border search is left.
                found, fallback = search_again_with_border(
                    on_fallback,
                    found,
                    None,
                    fallbacks,
                    image.shape[1],
                )
            else:
                found, fallback = detect_with_fallbacks(
                    detect_one,
                    image,
                    fallbacks,
                    try_plain=False,
                    detect_fallback=lambda shown: self.detect([shown], self.settings.fallback_min_score)[0],
                    is_lenient=lambda score: score < self.settings.min_score,
                )
            results.append(None if found is None else (found[0], found[1], fallback))
        return results

    # -- the largest face of a photo ----------------------------------------------------------
    def find_face(
        self, image: torch.Tensor, fallbacks: Sequence[str] = DEFAULT_FALLBACKS
    ) -> tuple[np.ndarray, str | None] | None:
        """``(landmarks [5, 2], fallback)`` of the largest face in ``image [3, H, W]``, or None.

        The photo is searched with the grey borders of :data:`PADDINGS`; where none finds a face,
        the intensity changes of ``fallbacks`` (the search pads already, so ``pad`` adds nothing
        here) are tried in order, and ``fallback`` names the one that found it (None: the photo
        as it is).
        """
        options = MTCNNOptions()

        def padded_search(photo: torch.Tensor) -> tuple[np.ndarray, None] | None:
            for fraction in PADDINGS:
                pad = round(fraction * max(photo.shape[1:]))
                padded = F.pad(photo.unsqueeze(0), (pad, pad, pad, pad), value=PADDING_GREY)[0] if pad else photo
                faces = self.detect_faces(padded, SEARCH_MIN_FACE_SIZE, options)
                if len(faces):
                    areas = [float((box[2] - box[0]) * (box[3] - box[1])) for box in faces.boxes]
                    return np.asarray(faces.landmarks[areas.index(max(areas))], dtype=np.float64) - pad, None
            return None

        # The photo itself is searched in float; the fallbacks' transforms work on uint8.
        plain = padded_search(image)
        if plain is not None:
            return plain[0], None
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

    # -- every face of a photo ----------------------------------------------------------------
    def detect_faces(self, image: torch.Tensor, min_face_size: float, options: MTCNNOptions) -> Faces:
        """Every face from ``min_face_size`` px tall in ``image [3, H, W]`` (float in ``[0, 1]``)
        with a score of at least ``options.min_score``, left to right.

        Tiny faces: the photo is upsampled so that the smallest wanted face is
        ``options.detect_face_size`` px tall before MTCNN sees it. Big photos: when the upsampled
        photo exceeds ``options.max_side``, detection runs on overlapping tiles (faces up to the
        overlap size) plus once on a downscaled copy (faces larger than that), so memory stays
        bounded by the tile size.
        """
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an image [3, H, W], got {tuple(image.shape)}")
        height, width = image.shape[1:]
        up = detection_upsample(min_face_size, options)
        if max(height, width) * up <= options.max_side:
            found = self._detect_resampled(image, up, min_face_size, options)
        else:
            found = self._detect_tiled(image, min_face_size, options)
        found = found.select(found.scores >= options.min_score)
        order = np.lexsort((found.boxes[:, 1], found.boxes[:, 0]))  # left to right: stable output
        return found.select(order)

    def _detect_tiled(self, image: torch.Tensor, min_face_size: float, options: MTCNNOptions) -> Faces:
        height, width = image.shape[1:]
        up = detection_upsample(min_face_size, options)
        coarse_scale = options.max_side / max(height, width)
        # The tiles keep faces up to `overlap` (larger ones may be cut by a tile edge); the
        # coarse pass looks only for faces from 2/3 of that size up, which it finds reliably
        # and cheaply, so every face is whole in one of the two passes.
        tile = options.max_side / up
        overlap = max(tile / 4, 1.5 * options.detect_face_size / coarse_scale)
        tile = max(tile, 2 * overlap)
        coarse_min_face = overlap / 1.5
        fine: list[Faces] = []
        for x0, x1, cx0, cx1 in _tiles(width, tile, overlap):
            for y0, y1, cy0, cy1 in _tiles(height, tile, overlap):
                part = self._detect_resampled(image[:, y0:y1, x0:x1], up, min_face_size, options)
                part.boxes[:, [0, 2]] += x0
                part.boxes[:, [1, 3]] += y0
                part.landmarks[..., 0] += x0
                part.landmarks[..., 1] += y0
                centre_x = (part.boxes[:, 0] + part.boxes[:, 2]) / 2
                centre_y = (part.boxes[:, 1] + part.boxes[:, 3]) / 2
                size = np.maximum(part.boxes[:, 2] - part.boxes[:, 0], part.boxes[:, 3] - part.boxes[:, 1])
                # Each face belongs to the one tile whose core holds its centre; faces larger
                # than the overlap may be cut by the tile edge and are left to the coarse pass.
                keep = (centre_x >= cx0) & (centre_x < cx1) & (centre_y >= cy0) & (centre_y < cy1) & (size <= overlap)
                fine.append(part.select(keep))
        kept = Faces.concatenate(fine)
        coarse = self._detect_resampled(image, coarse_scale, coarse_min_face, options)
        extra = [i for i in range(len(coarse.scores)) if not _overlaps_any(coarse.boxes[i], kept.boxes)]
        return Faces.concatenate([kept, coarse.select(np.array(extra, dtype=np.int64))])

    def _detect_resampled(
        self, image: torch.Tensor, factor: float, min_face_size: float, options: MTCNNOptions
    ) -> Faces:
        """Run MTCNN on ``image`` resampled by ``factor``; results in ``image`` coordinates."""
        height, width = image.shape[1:]
        det_h, det_w = max(1, round(height * factor)), max(1, round(width * factor))
        det_min_face = min_face_size * factor
        if min(det_h, det_w) * 12.0 / det_min_face < 12.0:
            return Faces.empty()  # smaller than the smallest face: MTCNN's pyramid would be empty
        batch = image.unsqueeze(0).to(self.device, torch.float32)
        if (det_h, det_w) != (height, width):
            shrinking = det_h < height
            batch = F.interpolate(
                batch,
                size=(det_h, det_w),
                mode="bilinear" if shrinking else "bicubic",
                antialias=shrinking,
                align_corners=False,
            )
        pixels = (batch.clamp(0, 1) * 255).permute(0, 2, 3, 1)  # MTCNN wants [N, H, W, 3] in 0..255
        network = self.network(
            det_min_face, thresholds=list(options.thresholds), factor=options.factor, select_largest=False
        )
        boxes, scores, points = network.detect(pixels, landmarks=True)
        if boxes[0] is None:
            return Faces.empty()
        fx, fy = det_w / width, det_h / height
        boxes = np.asarray(boxes[0], dtype=np.float32)
        points = np.asarray(points[0], dtype=np.float32)
        boxes[:, [0, 2]] = original_points(boxes[:, [0, 2]], fx)
        boxes[:, [1, 3]] = original_points(boxes[:, [1, 3]], fy)
        points[..., 0] = original_points(points[..., 0], fx)
        points[..., 1] = original_points(points[..., 1], fy)
        return Faces(boxes, np.asarray(scores[0], dtype=np.float32), points)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _tiles(length: int, tile: float, overlap: float) -> list[tuple[int, int, float, float]]:
    """Overlapping tiles along one axis: ``(start, stop, core_start, core_stop)``.

    Cores partition ``[-inf, inf)``; each core boundary is the middle of two tiles' overlap.
    """
    tile_px = min(length, math.ceil(tile))
    if tile_px >= length:
        return [(0, length, -math.inf, math.inf)]
    step = max(1, math.floor(tile_px - overlap))
    starts = list(range(0, length - tile_px, step)) + [length - tile_px]
    spans = [(s, s + tile_px) for s in starts]
    result = []
    for i, (start, stop) in enumerate(spans):
        core_start = -math.inf if i == 0 else (start + spans[i - 1][1]) / 2
        core_stop = math.inf if i == len(spans) - 1 else (spans[i + 1][0] + stop) / 2
        result.append((start, stop, core_start, core_stop))
    return result


def _overlaps_any(box: np.ndarray, boxes: np.ndarray) -> bool:
    if len(boxes) == 0:
        return False
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    smaller = np.minimum(_area(box), _area(boxes))
    return bool(np.any(ix * iy > DUPLICATE_OVERLAP * np.maximum(smaller, 1e-6)))


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


# -- the cache ----------------------------------------------------------------------------------
class LandmarkCache:
    """JSON file of landmark results keyed by image (``{key: entry}``), valid only for the
    ``settings`` (and ``format_version``) it was made with; without ``settings`` the format
    version alone decides (the caller puts what else matters into the keys).

    Nothing is read in the constructor; call :meth:`load`. Writes are atomic; :meth:`add` then
    :meth:`checkpoint` saves every :data:`CACHE_SAVE_EVERY` new entries, so an interrupted pass
    keeps its work.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: DetectorSettings | None,
        format_version: int = CACHE_FORMAT_VERSION,
        name: str = "landmark cache",
    ) -> None:
        self.path = Path(path)
        self.settings = settings
        self.format_version = format_version
        self.name = name
        self.entries: dict[str, Any] = {}
        self._unsaved = 0

    def load(self) -> LandmarkCache:
        if not self.path.is_file():
            return self
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            logger.warning("%s %s is unreadable (%s); detecting again", self.name, self.path, error)
            return self
        # Compared as JSON: tuples come back as lists.
        settings = None if self.settings is None else json.loads(json.dumps(asdict(self.settings)))
        if data.get("format_version") != self.format_version or data.get("detector") != settings:
            logger.warning("%s %s was made with other settings; detecting again", self.name, self.path)
            return self
        self.entries = dict(data.get("entries", {}))
        return self

    def add(self, key: str, entry: Any) -> None:
        self.entries[key] = entry
        self._unsaved += 1

    def checkpoint(self) -> None:
        """Save if :data:`CACHE_SAVE_EVERY` entries were added since the last save."""
        if self._unsaved >= CACHE_SAVE_EVERY:
            self.save()

    def finish(self) -> None:
        """Save if anything was added since the last save."""
        if self._unsaved:
            self.save()

    def save(self) -> None:
        payload: dict[str, Any] = {"format_version": self.format_version, "entries": self.entries}
        if self.settings is not None:
            payload["detector"] = asdict(self.settings)
        atomic_write_text(self.path, json.dumps(payload, sort_keys=True) + "\n")
        self._unsaved = 0
