"""Training faces: an image folder or a Hub dataset, aligned to the model's template.

The images come through ``datasets`` (a local folder is read with the ``imagefolder`` builder, a
Hub dataset id with ``load_dataset``). Five facial landmarks are found once per image by the
landmark service (:class:`~facetools_dapfsr.data.landmarks.LandmarkDetector`, MTCNN) and kept in
its JSON cache keyed by ``path|size|mtime`` (or by the sha256 of the bytes for Hub images
without a local file), so a second run, another rank or a resumed run does
not detect again, and a changed file is detected anew. Images that cannot be decoded or hold no
face are skipped and counted (:class:`FaceDataReport`); an empty source is an error.

Faces leave :class:`AlignedFaces` as float tensors ``[3, size, size]`` in ``[0, 1]`` aligned with
:func:`facetools_dapfsr.data.alignment.align_face`, with the validity mask of the warp
(1 where the pixel came from inside the photo).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facetools_dapfsr.data.alignment import align_face
from facetools_dapfsr.data.landmarks import (
    DetectorSettings,
    LandmarkCache,
    LandmarkDetector,
)
from facetools_dapfsr.images import ImageReadError, read_image

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"})
MAX_LISTED_SKIPS = 5


class FaceDataError(ValueError):
    """The face data cannot be used at all (missing, empty, no face anywhere)."""


class UnreadableImageError(ValueError):
    """One image could not be decoded."""


@dataclass
class FaceDataReport:
    """What preparing a face source found."""

    source: str
    total: int = 0
    kept: int = 0
    no_face: int = 0
    unreadable: int = 0
    examined: int = 0
    """Images decoded and run through the detector in this call (the rest came from the cache)."""
    skipped_examples: list[str] = field(default_factory=list)
    by_fallback: dict[str, int] = field(default_factory=dict)
    """Faces found only by a detection fallback, per fallback."""

    def summary(self) -> str:
        text = (
            f"{self.source}: {self.kept} of {self.total} images used "
            f"({self.no_face} without a face, {self.unreadable} unreadable skipped; "
            f"{self.examined} examined now, {self.total - self.examined} from the landmark cache)"
        )
        if self.by_fallback:
            found = ", ".join(f"{count} by {name}" for name, count in sorted(self.by_fallback.items()))
            text += f"; found by a detection fallback: {found}"
        if self.skipped_examples:
            text += "; skipped e.g. " + ", ".join(self.skipped_examples)
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- sources -------------------------------------------------------------------------------------
def load_image_table(source: str | os.PathLike[str], split: str = "train", image_column: str | None = None) -> Any:
    """Open a local image folder or a Hub dataset as a ``datasets.Dataset`` of undecoded images.

    Returns a dataset with one column ``image`` holding ``{"path": ..., "bytes": ...}`` dicts
    (decoding happens later, one image at a time, so a corrupt file cannot stop the scan).

    Raises:
        FaceDataError: the folder is missing or holds no image files, or the dataset has no
            image column or no rows.
    """
    import datasets

    source_text = str(source)
    local = Path(source_text).expanduser()
    if local.exists() or source_text.startswith((".", "/", "~")):
        if not local.is_dir():
            raise FaceDataError(f"{source_text}: no such folder")
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in local.rglob("*") if p.is_file()):
            raise FaceDataError(
                f"{source_text}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        table = datasets.load_dataset("imagefolder", data_dir=str(local.resolve()), split=split)
    else:
        try:
            table = datasets.load_dataset(source_text, split=split)
        except (FileNotFoundError, ConnectionError, ValueError) as error:
            # Not found, not reachable (offline) or no such split: one line instead of a traceback.
            raise FaceDataError(
                f"{source_text}: neither a local folder nor a loadable Hub dataset ({error})"
            ) from error
    column = image_column or _find_image_column(table, source_text)
    if column not in table.column_names:
        raise FaceDataError(f"{source_text}: no column {column!r} (columns: {', '.join(table.column_names)})")
    table = table.select_columns([column])
    if column != "image":
        table = table.rename_column(column, "image")
    table = table.cast_column("image", datasets.Image(decode=False))
    if len(table) == 0:
        raise FaceDataError(f"{source_text} (split {split!r}) has no rows")
    return table


def _find_image_column(table: Any, source: str) -> str:
    import datasets

    for name, feature in table.features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise FaceDataError(f"{source}: no image column (columns: {', '.join(table.column_names)}); pass image_column")


def image_key(item: dict[str, Any]) -> str:
    """Cache key of one undecoded image: ``path|size|mtime_ns`` for files, else a content hash."""
    path = item.get("path")
    if item.get("bytes") is None and path and os.path.isfile(path):
        stat = os.stat(path)
        return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
    data = item.get("bytes")
    if data is None:
        return f"missing:{path}"
    return "sha256:" + hashlib.sha256(data).hexdigest()


def decode_image(item: dict[str, Any]) -> torch.Tensor:
    """Undecoded image (a ``datasets`` image cell) -> ``[3, H, W]`` float32 in ``[0, 1]``.

    Read by the package's one reader (:func:`facetools_dapfsr.images.read_image`: EXIF
    orientation, 16-bit grey at full precision, transparency over white), so a training or
    evaluation face and the same file given to ``dapfsr upscale`` or as an exemplar are the same
    pixels.

    Raises:
        UnreadableImageError: missing, empty, truncated or not an image.
    """
    name = item.get("path") or "<bytes>"
    data = item.get("bytes")
    try:
        return read_image(data if data is not None else item["path"], name=name).image
    except (ImageReadError, KeyError, TypeError) as error:
        raise UnreadableImageError(str(error) if isinstance(error, ImageReadError) else f"{name}: {error}") from None


def detector_pixels(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` float in ``[0, 1]`` -> ``[H, W, 3]`` uint8, what the face detector reads."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().copy()


# -- landmarks ----------------------------------------------------------------------------------
def default_landmark_cache(source: str, split: str, settings: DetectorSettings) -> Path:
    """``<DAPFSR_CACHE>/landmarks/<source slug>-<hash>.json`` for this source, split and detector."""
    from facetools_dapfsr.weights import cache_root

    identity = json.dumps({"source": str(source), "split": split, "detector": asdict(settings)}, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(source).strip("/."))[-60:] or "data"
    return cache_root() / "landmarks" / f"{slug}-{split}-{digest}.json"


def find_landmarks(
    table: Any,
    cache: LandmarkCache,
    detector: LandmarkDetector | None = None,
    report: FaceDataReport | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[int], np.ndarray, FaceDataReport]:
    """Landmarks of every row of ``table`` (from the cache, or detected and cached).

    Returns ``(rows, landmarks [N, 5, 2], report)`` for the rows that hold a face.
    """
    report = report or FaceDataReport(source="data")
    detector = detector or LandmarkDetector(cache.settings)
    keys = [image_key(item) for item in table["image"]]
    pending: dict[tuple[int, int], list[tuple[str, np.ndarray]]] = {}

    def flush(shape: tuple[int, int]) -> None:
        batch = pending.pop(shape)
        found_all = detector.detect_with_fallbacks([image for _, image in batch])
        for (key, _), found in zip(batch, found_all, strict=True):
            if found is None:
                cache.add(key, {"status": "no_face"})
                continue
            landmarks, score, fallback = found
            entry = {"status": "ok", "landmarks": landmarks.round(3).tolist(), "score": round(score, 5)}
            if fallback is not None:
                entry["fallback"] = fallback
            cache.add(key, entry)
        report.examined += len(batch)
        if progress is not None:
            progress(len(batch))
        cache.checkpoint()

    for row, key in enumerate(keys):
        if key in cache.entries:
            if progress is not None:
                progress(1)
            continue
        try:
            image = detector_pixels(decode_image(table[row]["image"]))
        except UnreadableImageError as error:
            cache.add(key, {"status": "unreadable", "error": str(error)})
            report.examined += 1
            if progress is not None:
                progress(1)
            continue
        shape = image.shape[:2]
        pending.setdefault(shape, []).append((key, image))
        if len(pending[shape]) >= detector.settings.batch_size:
            flush(shape)
    for shape in list(pending):
        flush(shape)
    cache.finish()

    rows: list[int] = []
    landmarks: list[list[list[float]]] = []
    for row, key in enumerate(keys):
        entry = cache.entries[key]
        report.total += 1
        if entry["status"] == "ok":
            rows.append(row)
            landmarks.append(entry["landmarks"])
            if "fallback" in entry:
                report.by_fallback[entry["fallback"]] = report.by_fallback.get(entry["fallback"], 0) + 1
            continue
        if entry["status"] == "no_face":
            report.no_face += 1
        else:
            report.unreadable += 1
        if len(report.skipped_examples) < MAX_LISTED_SKIPS:
            path = table[row]["image"].get("path") or f"row {row}"
            report.skipped_examples.append(f"{Path(path).name} ({entry['status']})")
    report.kept = len(rows)
    return rows, np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2), report


# -- the dataset ----------------------------------------------------------------------------------
class AlignedFaces(torch.utils.data.Dataset):
    """Faces aligned to the template at ``size``: ``dataset[i] -> (face [3, s, s], valid [1, s, s])``.

    Build with :meth:`prepare` (which reads and detects); the constructor does no I/O.
    """

    def __init__(
        self, table: Any, rows: Sequence[int], landmarks: np.ndarray, size: int, report: FaceDataReport
    ) -> None:
        if len(rows) != len(landmarks):
            raise ValueError(f"{len(rows)} rows but {len(landmarks)} landmark sets")
        self.table = table
        self.rows = list(rows)
        self.landmarks = landmarks
        self.size = size
        self.report = report

    @classmethod
    def prepare(
        cls,
        source: str | os.PathLike[str],
        size: int,
        split: str = "train",
        image_column: str | None = None,
        settings: DetectorSettings | None = None,
        cache_path: str | os.PathLike[str] | None = None,
        max_images: int | None = None,
        show_progress: bool = False,
    ) -> AlignedFaces:
        """Open ``source``, find (or read cached) landmarks and return the usable faces.

        Args:
            source: local image folder or Hub dataset id.
            size: side of the aligned face (the model's HR size).
            split: dataset split (an image folder without split folders is ``"train"``).
            image_column: column holding the images (default: the first image column).
            settings: detector settings.
            cache_path: landmark cache file (default: :func:`default_landmark_cache`).
            max_images: use only the first ``max_images`` rows (sorted as the source lists them).
            show_progress: a progress bar while detecting.
        Raises:
            FaceDataError: nothing usable (empty source, or no image holds a face).
        """
        settings = settings or DetectorSettings()
        table = load_image_table(source, split=split, image_column=image_column)
        if max_images is not None and max_images < len(table):
            table = table.select(range(max_images))
        cache_file = Path(cache_path) if cache_path else default_landmark_cache(str(source), split, settings)
        cache = LandmarkCache(cache_file, settings).load()
        report = FaceDataReport(source=str(source))
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(table), desc="landmarks", unit="img")
        try:
            rows, landmarks, report = find_landmarks(table, cache, report=report, progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
        if not rows:
            raise FaceDataError(f"no usable face in {source}: " + report.summary())
        if report.kept < report.total:
            logger.warning(report.summary())
        return cls(table, rows, landmarks, size, report)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, indices: Sequence[int]) -> AlignedFaces:
        """The faces at ``indices`` (same table, cache and report)."""
        chosen = list(indices)
        return AlignedFaces(self.table, [self.rows[i] for i in chosen], self.landmarks[chosen], self.size, self.report)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned face and validity mask of item ``index`` (raises UnreadableImageError)."""
        image = decode_image(self.table[self.rows[index]]["image"])
        return align_face(image, self.landmarks[index], self.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Every image was decoded once while preparing; a file that breaks afterwards (changed on
        # disk during training) is replaced by the next one rather than ending the epoch.
        for attempt in range(len(self)):
            candidate = (index + attempt) % len(self)
            try:
                return self.load(candidate)
            except UnreadableImageError as error:
                logger.warning("skipping %s during training", error)
        raise FaceDataError("no image of the data set can be read any more")

    def path(self, index: int) -> str | None:
        return self.table[self.rows[index]]["image"].get("path")
