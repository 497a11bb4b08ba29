"""The paper's cross-domain protocol (DESIGN.md section 5): domains, splits and exemplar draws.

A *domain* is a folder of face images. Every image becomes an aligned HR face (the model's
5-point template at the model's HR size, with the warp's validity mask) and an LR input made by
the seeded random-affine degradation (:func:`facetools_dapfsr.data.degradation.degrade`).

- The target domain is cut into ``splits`` groups. Extended Yale B (file names
  ``yaleBNN_P00A<az>E<el>.png``) is split by *illumination condition*: the 64 conditions are
  sorted by the angle between the light and the camera axis and cut into contiguous groups, so a
  split is a group of similar lighting. Any other folder is split at random (seeded).
- For each split, ``draws`` exemplars are drawn at random (seeded by split and draw index). The
  evaluation set of a draw is the split minus the exemplar and minus every other image of the
  exemplar's *identity*: for Yale B the subject (all 64 images of a subject are pixel-registered,
  so another image of the same subject would leak the exemplar's face); for other folders the
  image itself (their file names carry no reliable identity).
- The LR of an image depends only on the protocol seed and the image's index in the domain, so
  every draw and every method sees the same LR for the same face.

Yale B landmarks (``yaleb_landmarks``): by default (``"subject"``, the figures of
``benchmarks/RESULTS.md``) they are detected once per subject on the frontal-lit
``*_P00A+000E+00.png`` and reused for all 64 images of the subject, which Yale B's pixel
registration allows and which no dark illumination can disturb. ``"image"`` detects every image on
its own, with the detection fallbacks (95.9% of all Yale B images are found; the rest are left
out), as a user's own domain would be. Both are cached in the weights cache folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facetools_dapfsr.data.alignment import align_face
from facetools_dapfsr.data.degradation import DegradationConfig, degrade
from facetools_dapfsr.data.detection_fallbacks import DEFAULT_FALLBACKS, parse_fallbacks
from facetools_dapfsr.data.faces import (
    IMAGE_EXTENSIONS,
    AlignedFaces,
    FaceDataError,
    decode_image,
)
from facetools_dapfsr.data.landmarks import (
    DetectorSettings,
    LandmarkCache,
    LandmarkDetector,
)
from facetools_dapfsr.images import is_grey_content

logger = logging.getLogger(__name__)

YALEB_PATTERN = re.compile(r"^(yaleB\d+)_P00A([+-]\d+)E([+-]\d+)\.png$", re.IGNORECASE)
YALEB_REFERENCE_CONDITION = "A+000E+00"
LANDMARK_CACHE_VERSION = 2  # 2: entries keyed by the detection fallbacks too
MAX_EYE_DISTANCE_DEVIATION = 0.2
"""A Yale B subject (or, per image, an image) whose eye distance is more than 20% off the median
is left out."""
YALEB_LANDMARKS = ("subject", "image")
"""Where Yale B landmarks come from: the subject's frontal-lit image, or each image itself."""


class ProtocolError(ValueError):
    """The protocol cannot run on this data (too few images for the splits, no face...)."""


@dataclass
class ProtocolConfig:
    """How a target domain is cut, sampled and degraded. Saved in ``results.json``."""

    splits: int = 10
    """Groups of the target domain (Yale B: groups of illumination conditions)."""
    draws: int = 10
    """Exemplars drawn per split; results are averaged over splits and draws."""
    seed: int = 0
    """Seeds the splits of generic folders, the exemplar draws, the LR degradation and the
    evaluation subsets."""
    max_eval_images: int | None = None
    """Evaluate at most this many images per split and draw (a seeded subset; None = all)."""
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    """The random affine misalignment applied before downsampling to the LR size."""
    detector_fallbacks: tuple[str, ...] = DEFAULT_FALLBACKS
    """What the landmark search tries on an image without a detected face
    (:mod:`facetools_dapfsr.data.detection_fallbacks`); pass it to :meth:`Domain.from_folder`."""
    yaleb_landmarks: str = "subject"
    """Yale B only: ``"subject"`` (each subject's frontal-lit image) or ``"image"`` (each image
    detected on its own); pass it to :meth:`Domain.from_folder`."""

    def __post_init__(self) -> None:
        if isinstance(self.degradation, dict):
            self.degradation = DegradationConfig(**self.degradation)
        self.detector_fallbacks = parse_fallbacks(self.detector_fallbacks)
        if self.splits < 1 or self.draws < 1:
            raise ValueError(f"splits and draws must be at least 1, got {self.splits} and {self.draws}")
        if self.max_eval_images is not None and self.max_eval_images < 1:
            raise ValueError(f"max_eval_images must be at least 1, got {self.max_eval_images}")
        if self.yaleb_landmarks not in YALEB_LANDMARKS:
            raise ValueError(
                f"yaleb_landmarks must be one of {', '.join(YALEB_LANDMARKS)}, got {self.yaleb_landmarks!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DomainImage:
    """One image of a domain with the landmarks used to align it."""

    path: str
    landmarks: tuple[tuple[float, float], ...]
    """Five ``(x, y)`` points in the image's pixel coordinates."""
    identity: str
    """Images sharing an identity never appear on both sides of an exemplar draw."""
    condition: str = ""
    """Imaging condition (Yale B: ``A<az>E<el>``); empty for generic folders."""


@dataclass
class Domain:
    """A folder of faces seen through the protocol. Build with :meth:`from_folder`."""

    name: str
    kind: str
    """``"yaleb"`` or ``"folder"``."""
    images: list[DomainImage]
    skipped: list[str] = field(default_factory=list)
    """Why images (or Yale B subjects) were left out."""

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        show_progress: bool = False,
        max_images: int | None = None,
        fallbacks: Sequence[str] = DEFAULT_FALLBACKS,
        aligned: bool = False,
        landmarks: str | os.PathLike[str] | None = None,
        yaleb_landmarks: str = "subject",
    ) -> Domain:
        """Open a folder of faces; Extended Yale B is recognised by its file names.

        No detector runs when the faces come ``aligned`` (every image is already the model's
        template crop, square, any size) or with a ``landmarks`` file (:func:`read_landmarks`);
        Yale B file names still give their subjects and lighting splits.

        ``max_images`` limits a generic folder to its first images (as listed), so that a large
        source folder is not scanned for faces in full. ``fallbacks``: what the landmark search
        tries on an image without a detected face (``ProtocolConfig.detector_fallbacks``).
        ``yaleb_landmarks``: ``ProtocolConfig.yaleb_landmarks``.

        Raises:
            ProtocolError: no such folder, or no usable face in it.
        """
        root = Path(folder)
        if not root.is_dir():
            raise ProtocolError(f"{folder}: no such folder")
        if aligned or landmarks is not None:
            return _given_landmarks_domain(root, aligned, landmarks, max_images)
        yaleb = sorted(p for p in root.rglob("*.png") if YALEB_PATTERN.match(p.name))
        if yaleb:
            if yaleb_landmarks not in YALEB_LANDMARKS:
                raise ProtocolError(
                    f"yaleb_landmarks must be one of {', '.join(YALEB_LANDMARKS)}, got {yaleb_landmarks!r}"
                )
            return _yaleb_domain(root, yaleb, show_progress, tuple(fallbacks), per_image=yaleb_landmarks == "image")
        return _folder_domain(root, show_progress, max_images, tuple(fallbacks))

    def load(self, index: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned face ``[3, size, size]`` in ``[0, 1]`` and validity mask ``[1, size, size]``."""
        item = self.images[index]
        image = decode_image({"path": item.path, "bytes": None})
        face, valid = align_face(image, np.asarray(item.landmarks, dtype=np.float64), size)
        return face.clamp(0, 1), valid

    def is_grey(self, sample: int = 8) -> bool:
        """Whether the images are greyscale (checked on the first few)."""
        for item in self.images[:sample]:
            if not is_grey_content(decode_image({"path": item.path, "bytes": None})):
                return False
        return True

    def sample_faces(self, count: int, size: int, seed: int) -> torch.Tensor:
        """``count`` aligned faces ``[N, 3, size, size]`` chosen at random (seeded)."""
        order = np.random.default_rng([seed, 4]).permutation(len(self.images))[:count]
        return torch.stack([self.load(int(i), size)[0] for i in sorted(order)])

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "images": len(self.images),
            "identities": len({i.identity for i in self.images}),
            "conditions": len({i.condition for i in self.images}),
            "skipped": self.skipped,
        }


# -- domains ------------------------------------------------------------------------------------
def _file_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _yaleb_landmark_cache() -> Path:
    from facetools_dapfsr.weights import cache_root

    # One file for every Yale B copy: entries are keyed by resolved path, size and mtime.
    return cache_root() / "landmarks" / "yaleb-subjects.json"


def _yaleb_domain(
    root: Path, files: list[Path], show_progress: bool, fallbacks: tuple[str, ...], per_image: bool
) -> Domain:
    from tqdm.auto import tqdm

    by_subject: dict[str, list[Path]] = {}
    for path in files:
        match = YALEB_PATTERN.match(path.name)
        assert match is not None
        by_subject.setdefault(match.group(1), []).append(path)
    # The detector's settings are fixed (LandmarkDetector.find_face); the fallbacks are in the keys.
    cache = LandmarkCache(
        _yaleb_landmark_cache(), settings=None, format_version=LANDMARK_CACHE_VERSION, name="Yale B landmark cache"
    ).load()
    detector = LandmarkDetector()

    def landmarks_of(path: Path) -> tuple[tuple[float, float], ...] | None:
        key = f"{_file_key(path)}|fallbacks={','.join(fallbacks) or 'none'}"
        if key not in cache.entries:
            detected = detector.find_face(decode_image({"path": str(path), "bytes": None}), fallbacks)
            cache.add(key, None if detected is None else np.round(detected[0], 3).tolist())
            cache.checkpoint()
        points = cache.entries[key]
        return None if points is None else tuple((float(x), float(y)) for x, y in points)

    skipped: list[str] = []
    # The unit that carries landmarks: a subject (its frontal-lit image) or an image.
    found: dict[str, tuple[tuple[float, float], ...]] = {}
    if per_image:
        for path in tqdm(files, desc="Yale B landmarks", unit="image", disable=not show_progress):
            points = landmarks_of(path)
            if points is not None:
                found[str(path)] = points
        if len(found) < len(files):
            tried = ", ".join(fallbacks) or "none"
            skipped.append(f"{len(files) - len(found)} of {len(files)} images: no face found (fallbacks: {tried})")
    else:
        for subject in tqdm(sorted(by_subject), desc="Yale B landmarks", unit="subject", disable=not show_progress):
            reference = [p for p in by_subject[subject] if YALEB_REFERENCE_CONDITION in p.name]
            if not reference:
                skipped.append(f"{subject}: no frontal-lit image {subject}_P00{YALEB_REFERENCE_CONDITION}.png")
                continue
            points = landmarks_of(reference[0])
            if points is None:
                skipped.append(f"{subject}: no face found on the frontal-lit image ({len(by_subject[subject])} images)")
                continue
            found[subject] = points
    cache.finish()
    # MTCNN on tight crops (and on dark ones, through the fallbacks) sometimes locks onto a wrong,
    # much smaller or larger "face": a unit whose eye distance is far from the median unit's is
    # left out rather than misaligned.
    if len(found) >= 3:
        distances = {unit: float(np.hypot(*np.subtract(p[1], p[0]))) for unit, p in found.items()}
        median = float(np.median(list(distances.values())))
        implausible = [unit for unit, d in distances.items() if abs(d / median - 1) > MAX_EYE_DISTANCE_DEVIATION]
        for unit in implausible:
            del found[unit]
        if per_image and implausible:
            skipped.append(
                f"{len(implausible)} images: implausible landmarks (eye distance over 20% off the median, {median:.0f} px)"
            )
        elif implausible:
            skipped.extend(
                f"{unit}: implausible landmarks (eye distance {distances[unit]:.0f} px, median {median:.0f})"
                for unit in sorted(implausible)
            )
    images: list[DomainImage] = []
    for subject in sorted(by_subject):  # subject by subject, as the seeded splits expect
        for path in sorted(by_subject[subject]):
            points = found.get(str(path) if per_image else subject)
            if points is None:
                continue
            match = YALEB_PATTERN.match(path.name)
            assert match is not None
            condition = f"A{match.group(2)}E{match.group(3)}"
            images.append(DomainImage(str(path), points, identity=subject, condition=condition))
    if not images:
        raise ProtocolError(f"no usable Yale B subject in {root}: " + "; ".join(skipped))
    return Domain(name=root.name, kind="yaleb", images=images, skipped=skipped)


def _folder_domain(root: Path, show_progress: bool, max_images: int | None, fallbacks: tuple[str, ...]) -> Domain:
    try:
        # The default detector settings (but the fallbacks), so the landmark cache is shared with training.
        settings = DetectorSettings(fallbacks=fallbacks)
        faces = AlignedFaces.prepare(
            str(root), size=128, max_images=max_images, show_progress=show_progress, settings=settings
        )
    except FaceDataError as error:
        raise ProtocolError(str(error)) from error
    images = []
    for index in range(len(faces)):
        path = faces.path(index)
        assert path is not None
        points = tuple((float(x), float(y)) for x, y in faces.landmarks[index])
        # Generic folders carry no reliable identity: each image is its own identity.
        images.append(DomainImage(path, points, identity=path))
    images.sort(key=lambda item: item.path)  # listing order must not change the seeded splits
    skipped = [faces.report.summary()] if faces.report.kept < faces.report.total else []
    return Domain(name=root.name, kind="folder", images=images, skipped=skipped)


def read_landmarks(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Five landmarks per image from a JSON object (``{"name.png": [[x, y] x 5]}``) or a CSV
    file (rows ``name,x1,y1,...,x5,y5``; a header row is allowed), keyed by file name. The
    points are pixel coordinates of the image, in the template's order: left eye, right eye,
    nose, left and right mouth corners (as seen in the image)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ProtocolError(f"cannot read the landmarks file {path}: {error}") from error
    rows: dict[str, Any]
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except ValueError as error:
            raise ProtocolError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(rows, dict):
            raise ProtocolError(f"{path}: expected an object of file name -> five [x, y] points")
    else:
        rows = {}
        for number, line in enumerate(text.splitlines(), start=1):
            cells = [cell.strip() for cell in line.split(",")]
            if not line.strip() or (number == 1 and not _is_number(cells[-1])):
                continue  # blank line, or the header
            rows[cells[0]] = cells[1:]
    out = {}
    for name, points in rows.items():
        try:
            array = np.asarray(points, dtype=np.float64).reshape(5, 2)
        except (TypeError, ValueError):
            raise ProtocolError(f"{path}: the landmarks of {name!r} are not five (x, y) points") from None
        if not np.isfinite(array).all():
            raise ProtocolError(f"{path}: the landmarks of {name!r} are not finite")
        out[Path(name).name] = array
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def aligned_landmarks(path: str | os.PathLike[str]) -> np.ndarray:
    """Landmarks ``[5, 2]`` of an image that is already the model's template crop (square, any
    side): the template's points at its size. Reads only the header."""
    from PIL import Image

    from facetools_dapfsr.data.alignment import aligned_crop_points

    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as error:
        raise ProtocolError(f"{Path(path).name}: unreadable ({error})") from error
    try:
        return aligned_crop_points(width, height)
    except ValueError as error:
        raise ProtocolError(f"{Path(path).name}: {error}") from error


def _given_landmarks_domain(
    root: Path, aligned: bool, landmarks: str | os.PathLike[str] | None, max_images: int | None
) -> Domain:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if max_images is not None:
        files = files[:max_images]
    given = read_landmarks(landmarks) if landmarks is not None else {}
    images: list[DomainImage] = []
    skipped: list[str] = []
    for path in files:
        if path.name in given:
            points = given[path.name]
        elif aligned:
            try:
                points = aligned_landmarks(path)
            except ProtocolError as error:
                skipped.append(str(error))
                continue
        else:
            skipped.append(f"{path.name}: not in the landmarks file")
            continue
        match = YALEB_PATTERN.match(path.name)
        identity, condition = (match.group(1), f"A{match.group(2)}E{match.group(3)}") if match else (str(path), "")
        images.append(DomainImage(str(path), tuple((float(x), float(y)) for x, y in points), identity, condition))
    if not images:
        why = "; ".join(skipped[:5]) or "no image files"
        raise ProtocolError(f"no usable face in {root}: {why}")
    kind = "yaleb" if all(image.condition for image in images) else "folder"
    return Domain(name=root.name, kind=kind, images=images, skipped=skipped)


# -- splits and draws ---------------------------------------------------------------------------
def light_angle(condition: str) -> float:
    """Angle in degrees between the light and the camera axis of a Yale B condition ``A<az>E<el>``."""
    match = re.fullmatch(r"A([+-]\d+)E([+-]\d+)", condition)
    if match is None:
        raise ValueError(f"not a Yale B condition: {condition!r}")
    azimuth, elevation = (math.radians(int(v)) for v in match.groups())
    return math.degrees(math.acos(max(-1.0, min(1.0, math.cos(azimuth) * math.cos(elevation)))))


def make_splits(domain: Domain, splits: int, seed: int) -> list[list[int]]:
    """Indices of the domain's images in each split (disjoint, covering every image).

    Yale B: illumination conditions sorted by light angle (ties by name), cut into ``splits``
    contiguous groups of near-equal size. Other folders: a seeded permutation cut into ``splits``.
    """
    if domain.kind == "yaleb":
        conditions = sorted({i.condition for i in domain.images}, key=lambda c: (light_angle(c), c))
        if len(conditions) < splits:
            raise ProtocolError(f"{len(conditions)} illumination conditions cannot make {splits} splits")
        groups = np.array_split(np.arange(len(conditions)), splits)
        split_of = {conditions[c]: s for s, group in enumerate(groups) for c in group}
        result: list[list[int]] = [[] for _ in range(splits)]
        for index, item in enumerate(domain.images):
            result[split_of[item.condition]].append(index)
        return result
    if len(domain) < 2 * splits:
        raise ProtocolError(f"{len(domain)} images cannot make {splits} splits of at least 2 images")
    order = np.random.default_rng([seed, 1]).permutation(len(domain))
    return [sorted(int(i) for i in part) for part in np.array_split(order, splits)]


@dataclass(frozen=True)
class Draw:
    """One exemplar draw of one split."""

    split: int
    draw: int
    exemplar: int
    """Index (in the domain) of the exemplar image."""
    evaluation: tuple[int, ...]
    """Indices evaluated with this exemplar: the split without the exemplar's identity."""


def draw_exemplars(domain: Domain, splits: Sequence[Sequence[int]], config: ProtocolConfig) -> Iterator[Draw]:
    """The protocol's draws, split by split: exemplar seeded by ``(seed, split, draw)``.

    Raises:
        ProtocolError: a split would have nothing left to evaluate.
    """
    for split_index, members in enumerate(splits):
        # A fixed order per split, so a capped evaluation set is the same images for every draw
        # (minus the exemplar's identity).
        order = np.random.default_rng([config.seed, 2, split_index]).permutation(len(members))
        ordered = [members[i] for i in order]
        for draw_index in range(config.draws):
            rng = np.random.default_rng([config.seed, 3, split_index, draw_index])
            exemplar = int(members[int(rng.integers(len(members)))])
            identity = domain.images[exemplar].identity
            evaluation = [i for i in ordered if domain.images[i].identity != identity and i != exemplar]
            if config.max_eval_images is not None:
                evaluation = evaluation[: config.max_eval_images]
            if not evaluation:
                raise ProtocolError(
                    f"split {split_index} has no image left once the exemplar's identity ({identity}) is removed"
                )
            yield Draw(split_index, draw_index, exemplar, tuple(sorted(evaluation)))


def make_lr(hr: torch.Tensor, index: int, lr_size: int, config: ProtocolConfig) -> torch.Tensor:
    """The LR input of domain image ``index``: ``hr [3, H, W]`` -> ``[3, lr, lr]``, seeded by
    ``(config.seed, index)`` so that it is the same in every draw and for every method."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + index)
    return degrade(hr.unsqueeze(0), lr_size, config.degradation, generator)[0]


class FaceStore:
    """Aligned HR faces, masks and LR inputs of a domain, loaded once and kept in memory."""

    def __init__(self, domain: Domain, hr_size: int, lr_size: int, config: ProtocolConfig) -> None:
        self.domain = domain
        self.hr_size = hr_size
        self.lr_size = lr_size
        self.config = config
        self._faces: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(hr [3, s, s], valid [1, s, s], lr [3, l, l])`` of domain image ``index``."""
        if index not in self._faces:
            hr, valid = self.domain.load(index, self.hr_size)
            self._faces[index] = (hr, valid, make_lr(hr, index, self.lr_size, self.config))
        return self._faces[index]

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stacked ``(hr, valid, lr)`` of several images."""
        items = [self.get(i) for i in indices]
        return tuple(torch.stack(parts) for parts in zip(*items, strict=True))  # type: ignore[return-value]
