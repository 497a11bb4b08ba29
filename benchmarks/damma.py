"""DAMMA one-shot adaptation: adapter sizes, CPU wall time, and Extended Yale B quality (issue 5).

Run (from the repository root; results are printed and written as JSON with ``--out``):

    python benchmarks/damma.py sizes
        adapter_model.safetensors size, full and low-rank (ranks 1, 4, 16), against the base
        model, for the tiny, paper and prior presets (real files; shapes do not need training).

    python benchmarks/damma.py speed [--model M] [--max-steps N] [--exemplar IMAGE]
        wall time and steps until DAMMA's convergence test stops it (default DAMMAConfig), on
        the tiny preset (random weights) unless --model is given.

    python benchmarks/damma.py yaleb --model M [--split K] [--steps N] [--ranks 0 4] [--faces F]
        PSNR / SSIM (grey, padding excluded) and LPIPS (VGG) on one illumination split of
        Extended Yale B (../shared/data/yaleb, or $DAPFSR_DATA/yaleb), before and after adapting
        from ONE exemplar of that split, plus bicubic.

Yale B protocol: five landmarks per subject are found once on its frontal-lit image (Yale B crops
are pixel-registered per subject) and reused for all 64 illuminations (subjects whose landmarks
are implausible, see ``subject_landmarks``, are left out and listed); faces are aligned to the
model's template at its HR size, and padding is excluded from PSNR/SSIM; LR inputs come from the paper's degradation with a fixed seed.
The 64 illumination conditions are ordered by the angle between the light and the camera axis
and cut into 10 splits (split 0 most frontal, split 9 most oblique). The exemplar is one image of
the split from one subject (seeded draw); evaluation uses the split's images of the other subjects.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from facetools_dapfsr import DAPFSR, DAPFSRConfig, __version__
from facetools_dapfsr.adaptation.damma import DAMMAConfig, adapter_from_delta, run_damma
from facetools_dapfsr.adaptation.lowrank import ModulationDelta
from facetools_dapfsr.data.alignment import align_face
from facetools_dapfsr.data.degradation import DegradationConfig, degrade
from facetools_dapfsr.hub.adapters import ADAPTER_WEIGHTS_NAME, registry_of
from facetools_dapfsr.hub.checkpoint import stored_state_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_SPLITS = 10
MAX_PADDING = 0.1  # a subject whose aligned face needs more padding than this is left out
YALE_NAME = re.compile(r"yaleB(\d+)_P00A([+-]\d+)E([+-]\d+)\.png$")


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "facetools_dapfsr": __version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python", *sys.argv]),
    }


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


# -- sizes -----------------------------------------------------------------------------------
def sizes(ranks: list[int]) -> list[dict]:
    rows = []
    for preset in ("tiny", "paper", "prior"):
        torch.manual_seed(0)
        model = DAPFSR(DAPFSRConfig.from_preset(preset))  # random weights: sizes depend on shapes only
        registry = registry_of(model)
        base_state = tensor_bytes(model.state_dict())
        checkpoint = tensor_bytes(stored_state_dict(model))
        row = {
            "preset": preset,
            "base_state_bytes": base_state,
            "base_checkpoint_bytes": checkpoint,
            "modulation_tensors": len(registry.base),
            "modulation_values": sum(t.numel() for t in registry.base.values()),
            "adapters": {},
        }
        for rank in ranks:
            delta = ModulationDelta(registry.base, rank=rank, generator=torch.Generator().manual_seed(0))
            adapter = adapter_from_delta(model, delta, torch.full((model.num_ws,), 0.5), torch.zeros(model.num_ws, model.w_dim))
            with tempfile.TemporaryDirectory() as folder:
                adapter.save(folder)
                size = (Path(folder) / ADAPTER_WEIGHTS_NAME).stat().st_size
            row["adapters"]["full" if rank == 0 else f"rank{rank}"] = {
                "file_bytes": size,
                "fraction_of_base_state": size / base_state,
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# -- speed -----------------------------------------------------------------------------------
def default_exemplar() -> Path:
    return data_root() / "yaleb" / "yaleB11" / "yaleB11_P00A+050E+00.png"


def data_root() -> Path:
    configured = os.environ.get("DAPFSR_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


def load_model(path: str | None) -> DAPFSR:
    if path is not None:
        return DAPFSR.from_pretrained(path)
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    model.refresh_latent_statistics(num_samples=2000)
    return model


def exemplar_face(path: Path, model: DAPFSR) -> torch.Tensor:
    from facetools_dapfsr.adaptation.exemplar import find_landmarks, load_exemplar, read_photo

    match = YALE_NAME.search(path.name)
    if match:  # Yale B: the subject's frontal-lit landmarks hold for every illumination
        frontal = path.parent / f"yaleB{match.group(1)}_P00A+000E+00.png"
        landmarks = find_landmarks(read_photo(frontal))
        if landmarks is not None:
            face, _ = align_face(read_photo(path), landmarks, model.config.hr_size)
            return face.unsqueeze(0).clamp(0, 1)
    return load_exemplar(path, model.config.hr_size).hr


def speed(model_path: str | None, exemplar: Path, max_steps: int, rank: int, progress: bool) -> dict:
    model = load_model(model_path)
    face = exemplar_face(exemplar, model)
    config = DAMMAConfig(max_steps=max_steps, rank=rank)
    result = run_damma(model, face, config=config, progress=progress)
    row = {
        "model": model_path or "tiny preset, random weights",
        "exemplar": str(exemplar),
        "settings": config.to_dict(),
        "steps": result.steps,
        "converged": result.converged,
        "seconds": result.seconds,
        "seconds_per_step": result.seconds / result.steps,
        "first_window_loss": sum(h["loss"] for h in result.history[: config.window]) / min(config.window, result.steps),
        "final_window_loss": result.adapter.config.training["final_loss"],
        "alpha": result.adapter.alpha.tolist(),
    }
    print(json.dumps(row), flush=True)
    return row


# -- Extended Yale B -------------------------------------------------------------------------
@dataclasses.dataclass
class YaleImage:
    path: Path
    subject: int
    azimuth: int
    elevation: int


def yale_images(root: Path) -> list[YaleImage]:
    images = []
    for path in sorted(root.glob("yaleB*/yaleB*_P00A*E*.png")):
        match = YALE_NAME.search(path.name)
        if match:
            images.append(YaleImage(path, int(match.group(1)), int(match.group(2)), int(match.group(3))))
    if not images:
        raise SystemExit(f"no Extended Yale B images under {root}")
    return images


def illumination_splits(images: list[YaleImage]) -> list[list[tuple[int, int]]]:
    """The 64 (azimuth, elevation) conditions, by angle to the camera axis, in NUM_SPLITS groups."""
    conditions = sorted({(i.azimuth, i.elevation) for i in images})

    def angle(condition: tuple[int, int]) -> float:
        a, e = (math.radians(v) for v in condition)
        return math.degrees(math.acos(max(-1.0, min(1.0, math.cos(a) * math.cos(e)))))

    conditions.sort(key=lambda c: (angle(c), c))
    size = math.ceil(len(conditions) / NUM_SPLITS)
    return [conditions[i : i + size] for i in range(0, len(conditions), size)]


def subject_landmarks(root: Path, subjects: list[int], size: int) -> tuple[dict[int, object], dict[int, str]]:
    """Landmarks per subject from its frontal-lit image, and the subjects left out (with why).

    MTCNN is unreliable on these tight crops; a subject is kept when its aligned crop needs at most
    MAX_PADDING of padding and its eye distance is within 20% of the median of all subjects.
    """
    import numpy as np

    from facetools_dapfsr.adaptation.exemplar import find_landmarks, read_photo

    found, skipped = {}, {}
    for subject in subjects:
        frontal = root / f"yaleB{subject:02d}" / f"yaleB{subject:02d}_P00A+000E+00.png"
        landmarks = find_landmarks(read_photo(frontal)) if frontal.is_file() else None
        if landmarks is None:
            skipped[subject] = "no face found"
            continue
        _, valid = align_face(read_photo(frontal), landmarks, size)
        padded = float(1 - valid.mean())
        if padded > MAX_PADDING:
            skipped[subject] = f"aligned crop {padded:.0%} padding"
            continue
        found[subject] = landmarks
    distances = {s: float(l[1, 0] - l[0, 0]) for s, l in found.items()}
    median = float(np.median(list(distances.values())))
    for subject, distance in distances.items():
        if abs(distance / median - 1) > 0.2:
            skipped[subject] = f"eye distance {distance:.0f} px (median {median:.0f})"
            del found[subject]
    return found, skipped


def yaleb(model_path: str, split: int, steps: int, ranks: list[int], max_faces: int, seed: int, progress: bool) -> dict:
    from facetools_dapfsr.adaptation.exemplar import read_photo
    from facetools_dapfsr.metrics import LPIPS, psnr, ssim

    root = data_root() / "yaleb"
    images = yale_images(root)
    splits = illumination_splits(images)
    conditions = set(splits[split])
    model = DAPFSR.from_pretrained(model_path)
    size = model.config.hr_size
    landmarks, skipped_subjects = subject_landmarks(root, sorted({i.subject for i in images}), size)
    chosen = [i for i in images if (i.azimuth, i.elevation) in conditions and i.subject in landmarks]
    rng = random.Random(seed)
    exemplar_image = rng.choice(chosen)
    evaluation = [i for i in chosen if i.subject != exemplar_image.subject]
    rng.shuffle(evaluation)
    evaluation = sorted(evaluation[:max_faces], key=lambda i: str(i.path))

    def aligned(image: YaleImage) -> tuple[torch.Tensor, torch.Tensor]:
        return align_face(read_photo(image.path), landmarks[image.subject], size)

    faces = [aligned(i) for i in evaluation]
    hr = torch.stack([f for f, _ in faces]).clamp(0, 1)
    valid = torch.stack([v for _, v in faces])
    lr = degrade(hr, model.config.lr_size, DegradationConfig(), torch.Generator().manual_seed(seed))
    exemplar_hr = aligned(exemplar_image)[0].unsqueeze(0).clamp(0, 1)
    lpips = LPIPS.from_weights_cache("vgg", progress=False)

    def scores(output: torch.Tensor) -> dict:
        output = output.clamp(0, 1)
        with torch.no_grad():
            distance = torch.cat([lpips(output[i : i + 8], hr[i : i + 8]) for i in range(0, len(hr), 8)])
        return {
            "psnr": float(psnr(output, hr, mask=valid, grey=True).mean()),
            "ssim": float(ssim(output, hr, mask=valid, grey=True).mean()),
            "lpips": float(distance.mean()),
        }

    def upscale_all() -> torch.Tensor:
        return torch.cat([model.upscale(lr[i : i + 8]) for i in range(0, len(lr), 8)])

    bicubic = F.interpolate(lr, size=(size, size), mode="bicubic", align_corners=False)
    report = {
        "model": model_path,
        "split": split,
        "conditions": sorted(conditions),
        "exemplar": str(exemplar_image.path),
        "faces": len(evaluation),
        "subjects": len({i.subject for i in evaluation}),
        "subjects_left_out": {f"yaleB{s:02d}": why for s, why in sorted(skipped_subjects.items())},
        "padded_fraction": float(1 - valid.mean()),
        "bicubic": scores(bicubic),
        "source_only": scores(upscale_all()),
        "adapted": {},
    }
    print(json.dumps({k: v for k, v in report.items() if k != "adapted"}), flush=True)
    for rank in ranks:
        config = DAMMAConfig(max_steps=steps, rank=rank, seed=seed)
        result = run_damma(model, exemplar_hr, config=config, progress=progress)
        name = "full" if rank == 0 else f"rank{rank}"
        model.add_adapter(result.adapter, name)
        with tempfile.TemporaryDirectory() as folder:
            model.save_adapter(folder, name)
            adapter_bytes = (Path(folder) / ADAPTER_WEIGHTS_NAME).stat().st_size
        report["adapted"][name] = {
            **scores(upscale_all()),
            "steps": result.steps,
            "converged": result.converged,
            "seconds": result.seconds,
            "adapter_bytes": adapter_bytes,
        }
        print(json.dumps({name: report["adapted"][name]}), flush=True)
        model.delete_adapter(name)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parts = parser.add_subparsers(dest="part", required=True)
    part = parts.add_parser("sizes")
    part.add_argument("--ranks", type=int, nargs="+", default=[0, 1, 4, 16], help="0 = full")
    part = parts.add_parser("speed")
    part.add_argument("--model", help="model folder or Hub id (default: tiny preset, random weights)")
    part.add_argument("--exemplar", type=Path, default=None, help="exemplar photo (default: a side-lit Yale B face)")
    part.add_argument("--max-steps", type=int, default=DAMMAConfig.max_steps)
    part.add_argument("--rank", type=int, default=0)
    part = parts.add_parser("yaleb")
    part.add_argument("--model", required=True, help="source-trained model folder or Hub id")
    part.add_argument("--split", type=int, default=6, help=f"illumination split 0..{NUM_SPLITS - 1} (default 6)")
    part.add_argument("--steps", type=int, default=DAMMAConfig.max_steps, help="DAMMA step cap")
    part.add_argument("--ranks", type=int, nargs="+", default=[0, 4], help="adapters to compare (0 = full)")
    part.add_argument("--faces", type=int, default=60, help="evaluation faces (other subjects, same split)")
    part.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    results: dict = {"machine": machine()}
    if args.part == "sizes":
        results["sizes"] = sizes(args.ranks)
    elif args.part == "speed":
        results["speed"] = speed(args.model, args.exemplar or default_exemplar(), args.max_steps, args.rank, not args.quiet)
    else:
        results["yaleb"] = yaleb(args.model, args.split, args.steps, args.ranks, args.faces, args.seed, not args.quiet)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
