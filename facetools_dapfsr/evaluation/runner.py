"""Runs the protocol: every method on every exemplar draw, scored with the paper's metrics.

Scores per image: PSNR and SSIM (on luma for greyscale domains such as Yale B, else RGB; the
ground truth's padding, if any, is excluded through the alignment's validity mask), LPIPS
(VGG) and the no-reference face quality of the output; the padded fraction of the ground truth
is reported alongside. Per draw the scores are averaged over its evaluation images; the
reported figure is the mean (and standard deviation) over all splits and draws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from facetools_dapfsr.evaluation.baselines import Exemplar, Method
from facetools_dapfsr.evaluation.protocol import (
    Domain,
    FaceStore,
    ProtocolConfig,
    draw_exemplars,
    make_splits,
)
from facetools_dapfsr.metrics import psnr, ssim

if TYPE_CHECKING:
    from facetools_dapfsr.metrics import LPIPS, FaceQuality
    from facetools_dapfsr.metrics.identity import IdentityDescriptor
    from facetools_dapfsr.models.dapfsr import DAPFSR

METRICS = ("psnr", "ssim", "lpips", "face_quality", "identity_distance", "identity_verified")
PSNR_CAP_DB = 100.0


SCORE_CHUNK = 32  # faces per LPIPS / face-quality forward pass


@dataclass
class Scorer:
    """The metrics; LPIPS, face quality and identity are optional (None: not computed, reported
    as null)."""

    grey: bool
    """PSNR/SSIM on BT.601 luma instead of RGB."""
    lpips: LPIPS | None = None
    face_quality: FaceQuality | None = None
    identity: IdentityDescriptor | None = None
    _hr_descriptors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    """Descriptors of HR faces already seen: every method is scored against the same HR."""

    @classmethod
    def from_weights_cache(
        cls, grey: bool, lpips: bool = True, face_quality: bool = True, identity: bool | None = None
    ) -> Scorer:
        """``identity=None``: the identity metric when dlib is installed (the ``identity`` extra)."""
        from facetools_dapfsr.metrics import LPIPS, FaceQuality
        from facetools_dapfsr.metrics.identity import IdentityDescriptor, is_available

        if identity is None:
            identity = is_available()
        return cls(
            grey=grey,
            lpips=LPIPS.from_weights_cache(progress=False) if lpips else None,
            face_quality=FaceQuality.from_weights_cache(progress=False) if face_quality else None,
            identity=IdentityDescriptor.from_weights_cache(progress=False) if identity else None,
        )

    def _hr_descriptor(self, hr: torch.Tensor) -> torch.Tensor:
        assert self.identity is not None
        key = hashlib.sha256(hr.numpy().tobytes()).hexdigest()
        if key not in self._hr_descriptors:
            self._hr_descriptors[key] = self.identity.descriptors(hr[None])[0]
        return self._hr_descriptors[key]

    @torch.no_grad()
    def reference_quality(self, hr: torch.Tensor) -> list[float] | None:
        """Face quality of the HR faces themselves (the ceiling the outputs are read against)."""
        if self.face_quality is None:
            return None
        hr = hr.float().cpu()
        return [v for i in range(0, len(hr), SCORE_CHUNK) for v in self.face_quality(hr[i : i + SCORE_CHUNK]).tolist()]

    @torch.no_grad()
    def score(self, output: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor) -> dict[str, list[float | None]]:
        """Per-image scores of ``output`` against ``hr`` (``[B, 3, s, s]``; ``valid [B, 1, s, s]``)."""
        output, hr = output.float().cpu(), hr.float().cpu()
        valid = valid.cpu()
        scores: dict[str, list[float | None]] = {
            "psnr": psnr(output, hr, cap=PSNR_CAP_DB, mask=valid, grey=self.grey).tolist(),
            "ssim": ssim(output, hr, mask=valid, grey=self.grey).tolist(),
        }
        # The networks run in chunks: a whole evaluation set at once (1,000 CelebA faces) holds
        # tens of GiB of VGG activations.
        spans = [slice(i, i + SCORE_CHUNK) for i in range(0, len(output), SCORE_CHUNK)]
        for name in ("lpips", "face_quality", "identity_distance", "identity_verified"):
            scores[name] = [None] * len(output)
        if self.identity is not None:
            from facetools_dapfsr.metrics.identity import SAME_PERSON_THRESHOLD

            reference = torch.stack([self._hr_descriptor(face) for face in hr])
            distance = (self.identity.descriptors(output) - reference).norm(dim=1)
            scores["identity_distance"] = distance.tolist()
            scores["identity_verified"] = (distance < SAME_PERSON_THRESHOLD).float().tolist()
        if self.lpips is not None:
            scores["lpips"] = [v for s in spans for v in self.lpips(output[s], hr[s]).tolist()]
        if self.face_quality is not None:
            scores["face_quality"] = [v for s in spans for v in self.face_quality(output[s]).tolist()]
        return scores


@dataclass
class EvaluationSettings:
    """Everything about a run that is not the protocol itself."""

    batch_size: int = 16
    """Faces restored per call."""
    grid_images: int = 6
    """Faces of the first draw kept for the PNG grid."""
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GridSample:
    """Faces of the first draw for the comparison grid, ``[N, 3, s, s]`` each."""

    lr: torch.Tensor
    hr: torch.Tensor
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured; :meth:`to_dict` is ``results.json``."""

    summary: dict[str, dict[str, Any]]
    """method name -> label, metric means/stds over draws, timing, number of scored faces."""
    draws: list[dict[str, Any]]
    """Per split and draw: exemplar, evaluation size and every method's mean scores."""
    metadata: dict[str, Any]
    grid: GridSample | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "draws": self.draws, **self.metadata}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _std(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    mean = sum(present) / len(present)
    return (sum((v - mean) ** 2 for v in present) / len(present)) ** 0.5


def _restore(restorer: Any, lr: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([restorer(lr[i : i + batch_size]).float() for i in range(0, len(lr), batch_size)])


def evaluate(
    model: DAPFSR,
    target: Domain,
    methods: list[Method],
    scorer: Scorer,
    protocol: ProtocolConfig | None = None,
    settings: EvaluationSettings | None = None,
    show_progress: bool = True,
) -> EvaluationResult:
    """Run ``methods`` through the protocol on ``target``.

    Methods without an exemplar are run once per face and their scores reused in every draw
    (their output does not depend on the draw: the LR of a face is fixed by the protocol seed).
    """
    protocol = protocol or ProtocolConfig()
    settings = settings or EvaluationSettings()
    device = torch.device(settings.device)
    model = model.to(device).eval()
    hr_size, lr_size = model.config.hr_size, model.config.lr_size
    store = FaceStore(target, hr_size, lr_size, protocol)
    splits = make_splits(target, protocol.splits, protocol.seed)
    draws = list(draw_exemplars(target, splits, protocol))
    cached: dict[str, dict[int, dict[str, float | None]]] = {m.name: {} for m in methods}
    timing = {m.name: {"adapt_seconds": 0.0, "restore_seconds": 0.0, "adaptations": 0, "faces": 0} for m in methods}
    padded: list[float] = []
    hr_quality: dict[int, float] = {}
    records: list[dict[str, Any]] = []
    grid: GridSample | None = None
    started = time.perf_counter()
    bar = tqdm(total=len(draws) * len(methods), desc="evaluate", unit="method", disable=not show_progress)
    for draw in draws:
        hr, valid, lr = store.batch(draw.evaluation)
        ex_hr, _, ex_lr = store.get(draw.exemplar)
        exemplar = Exemplar(hr=ex_hr.unsqueeze(0).to(device), lr=ex_lr.unsqueeze(0).to(device))
        draw_padded = (1 - valid.mean(dim=(1, 2, 3))).tolist()
        padded.extend(draw_padded)
        new = [k for k, index in enumerate(draw.evaluation) if index not in hr_quality]
        quality = scorer.reference_quality(hr[new]) if new else None
        if quality is not None:
            hr_quality.update({draw.evaluation[k]: value for k, value in zip(new, quality, strict=True)})
        record: dict[str, Any] = {
            "split": draw.split,
            "draw": draw.draw,
            "exemplar": target.images[draw.exemplar].path,
            "evaluated": len(draw.evaluation),
            "padded_fraction": _mean(list(draw_padded)),
            "methods": {},
        }
        if grid is None:
            count = min(settings.grid_images, len(draw.evaluation))
            grid = GridSample(lr=lr[:count].clone(), hr=hr[:count].clone())
        for method in methods:
            bar.set_postfix(split=draw.split, draw=draw.draw, method=method.name)
            if method.uses_exemplar:
                todo = list(draw.evaluation)
            else:
                todo = [i for i in draw.evaluation if i not in cached[method.name]]
            per_image: dict[int, dict[str, float | None]] = {}
            if todo:
                t0 = time.perf_counter()
                with method.adapted(model, exemplar if method.uses_exemplar else None) as restorer:
                    t1 = time.perf_counter()
                    positions = [draw.evaluation.index(i) for i in todo]
                    output = _restore(restorer, lr[positions].to(device), settings.batch_size)
                    t2 = time.perf_counter()
                timing[method.name]["adapt_seconds"] += t1 - t0
                timing[method.name]["adaptations"] += int(method.uses_exemplar)
                timing[method.name]["restore_seconds"] += t2 - t1
                timing[method.name]["faces"] += len(todo)
                scores = scorer.score(output, hr[positions], valid[positions])
                per_image = {index: {m: scores[m][k] for m in METRICS} for k, index in enumerate(todo)}
                if grid is not None and not records:  # the first draw's faces go into the grid
                    grid.outputs[method.name] = output[: len(grid.hr)].cpu()
            if not method.uses_exemplar:
                cached[method.name].update(per_image)
                per_image = {index: cached[method.name][index] for index in draw.evaluation}
            record["methods"][method.name] = {
                metric: _mean([per_image[i][metric] for i in draw.evaluation]) for metric in METRICS
            }
            bar.update(1)
        records.append(record)
    bar.close()

    summary: dict[str, dict[str, Any]] = {}
    for method in methods:
        entry: dict[str, Any] = {"label": method.label, "uses_exemplar": method.uses_exemplar}
        for metric in METRICS:
            values = [r["methods"][method.name][metric] for r in records]
            entry[metric] = _mean(values)
            entry[f"{metric}_std"] = _std(values)
        t = timing[method.name]
        entry["faces_restored"] = t["faces"]
        entry["seconds_per_face"] = t["restore_seconds"] / t["faces"] if t["faces"] else None
        entry["adaptations"] = t["adaptations"]
        entry["seconds_per_adaptation"] = t["adapt_seconds"] / t["adaptations"] if t["adaptations"] else None
        entry["settings"] = method.settings()
        summary[method.name] = entry

    metadata = {
        "protocol": protocol.to_dict(),
        "settings": settings.to_dict(),
        "metrics": {
            "psnr_ssim_on": "luma (BT.601)" if scorer.grey else "RGB",
            "psnr_cap_db": PSNR_CAP_DB,
            "padding_excluded_from_psnr_ssim": True,
            "lpips": "vgg" if scorer.lpips is not None else None,
            "face_quality": "qualityface MobileNetV2 regressor" if scorer.face_quality is not None else None,
            "identity": (
                f"dlib ResNet descriptor distance to the HR face ({scorer.identity.crop} crop); verified: below 0.6"
                if scorer.identity is not None
                else None
            ),
        },
        "target": target.summary(),
        "splits": [len(s) for s in splits],
        "padded_fraction": _mean(list(padded)),
        "hr_face_quality": _mean(list(hr_quality.values())),
        "model": {"hr_size": hr_size, "lr_size": lr_size, "config": model.config.to_dict()},
        "seconds": time.perf_counter() - started,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_description(device),
    }
    return EvaluationResult(summary=summary, draws=records, metadata=metadata, grid=grid)


def machine_description(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where the numbers were measured."""
    import os

    device = torch.device(device)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        # Other work on a shared machine slows every figure: record how busy it was.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info
