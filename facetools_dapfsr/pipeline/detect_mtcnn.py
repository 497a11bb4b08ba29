"""The built-in ``mtcnn`` detector: facenet-pytorch MTCNN tuned for tiny faces, tiled for big photos."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facetools_dapfsr.pipeline.config import MTCNNOptions, PipelineConfig
from facetools_dapfsr.pipeline.results import Detection

# A coarse detection that overlaps a kept one this much (intersection over the smaller box)
# is the same face seen twice.
DUPLICATE_OVERLAP = 0.5


@dataclass
class _Found:
    """Detections of one pass, in input-photo coordinates."""

    boxes: np.ndarray  # [N, 4]
    scores: np.ndarray  # [N]
    landmarks: np.ndarray  # [N, 5, 2]

    @classmethod
    def empty(cls) -> _Found:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def select(self, keep: np.ndarray) -> _Found:
        return _Found(self.boxes[keep], self.scores[keep], self.landmarks[keep])

    @staticmethod
    def concatenate(parts: list[_Found]) -> _Found:
        if not parts:
            return _Found.empty()
        return _Found(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.landmarks for p in parts]),
        )


class MTCNNDetector:
    """MTCNN (facenet-pytorch) with 5 landmarks, configured for faces ``min_face_size`` px tall.

    Tiny faces: the photo is upsampled so that the smallest wanted face is
    ``options.detect_face_size`` px tall before MTCNN sees it. Big photos: when the upsampled
    photo exceeds ``options.max_side``, detection runs on overlapping tiles (faces up to the
    overlap size) plus once on a downscaled copy (faces larger than that), so memory stays
    bounded by the tile size.
    """

    def __init__(self, min_face_size: float = 10.0, options: MTCNNOptions | None = None, device: str = "cpu") -> None:
        self.min_face_size = float(min_face_size)
        self.options = options or MTCNNOptions()
        self.device = torch.device(device)
        self._networks: dict[float, object] = {}  # MTCNN per min face size, built on first use

    @classmethod
    def from_config(cls, config: PipelineConfig) -> MTCNNDetector:
        return cls(min_face_size=config.min_face_size, options=config.mtcnn, device=config.device)

    @property
    def upsample(self) -> float:
        """Factor applied to the photo before detection."""
        return max(1.0, self.options.detect_face_size / self.min_face_size)

    def detect(self, image: torch.Tensor) -> list[Detection]:
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an image [3, H, W], got {tuple(image.shape)}")
        height, width = image.shape[1:]
        if max(height, width) * self.upsample <= self.options.max_side:
            found = self._detect(image, self.upsample, self.min_face_size)
        else:
            found = self._detect_large(image)
        keep = found.scores >= self.options.min_score
        found = found.select(keep)
        order = np.lexsort((found.boxes[:, 1], found.boxes[:, 0]))  # left to right: stable output
        return [
            Detection(
                box=found.boxes[i].astype(np.float32),
                landmarks=found.landmarks[i].astype(np.float32),
                score=float(found.scores[i]),
            )
            for i in order
        ]

    # -- passes --------------------------------------------------------------------------------
    def _detect_large(self, image: torch.Tensor) -> _Found:
        height, width = image.shape[1:]
        up = self.upsample
        coarse_scale = self.options.max_side / max(height, width)
        # The tiles keep faces up to `overlap` (larger ones may be cut by a tile edge); the
        # coarse pass looks only for faces from 2/3 of that size up, which it finds reliably
        # and cheaply, so every face is whole in one of the two passes.
        tile = self.options.max_side / up
        overlap = max(tile / 4, 1.5 * self.options.detect_face_size / coarse_scale)
        tile = max(tile, 2 * overlap)
        coarse_min_face = overlap / 1.5
        fine: list[_Found] = []
        for x0, x1, cx0, cx1 in _tiles(width, tile, overlap):
            for y0, y1, cy0, cy1 in _tiles(height, tile, overlap):
                part = self._detect(image[:, y0:y1, x0:x1], up, self.min_face_size)
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
        kept = _Found.concatenate(fine)
        coarse = self._detect(image, coarse_scale, coarse_min_face)
        extra = [i for i in range(len(coarse.scores)) if not _overlaps_any(coarse.boxes[i], kept.boxes)]
        return _Found.concatenate([kept, coarse.select(np.array(extra, dtype=np.int64))])

    def _detect(self, image: torch.Tensor, factor: float, min_face_size: float) -> _Found:
        """Run MTCNN on ``image`` resampled by ``factor``; results in ``image`` coordinates."""
        height, width = image.shape[1:]
        det_h, det_w = max(1, round(height * factor)), max(1, round(width * factor))
        det_min_face = min_face_size * factor
        if min(det_h, det_w) * 12.0 / det_min_face < 12.0:
            return _Found.empty()  # smaller than the smallest face: MTCNN's pyramid would be empty
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
        boxes, scores, points = self._network(det_min_face).detect(pixels, landmarks=True)
        if boxes[0] is None:
            return _Found.empty()
        fx, fy = det_w / width, det_h / height
        boxes = np.asarray(boxes[0], dtype=np.float32)
        points = np.asarray(points[0], dtype=np.float32)
        # detection-frame pixel p -> input pixel (p + 0.5) / f - 0.5 (pixel-centre convention)
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] + 0.5) / fx - 0.5
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] + 0.5) / fy - 0.5
        points[..., 0] = (points[..., 0] + 0.5) / fx - 0.5
        points[..., 1] = (points[..., 1] + 0.5) / fy - 0.5
        return _Found(boxes, np.asarray(scores[0], dtype=np.float32), points)

    def _network(self, min_face_size: float):
        key = round(min_face_size, 3)
        if key not in self._networks:
            from facenet_pytorch import MTCNN

            self._networks[key] = MTCNN(
                keep_all=True,
                min_face_size=min_face_size,
                thresholds=list(self.options.thresholds),
                factor=self.options.factor,
                select_largest=False,
                device=self.device,
            )
        return self._networks[key]


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
