"""DAMMA one-shot adaptation: adapter sizes, CPU wall time, (issue 5).

Run (from the repository root; results are printed and written as JSON with ``--out``):

    python benchmarks/damma.py sizes
        adapter_model.safetensors size, full and low-rank (ranks 1, 4, 16), against the base
        model, for the tiny, paper and prior presets (real files; shapes do not need training).

    python benchmarks/damma.py speed [--model M] [--max-steps N] [--exemplar IMAGE]
        wall time and steps until DAMMA's convergence test stops it (default DAMMAConfig), on
        the tiny preset (random weights) unless --model is given.

Extended Yale B quality before and after adaptation is measured with the evaluation protocol,
``dapfsr evaluate --methods bicubic,source-only,damma`` (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from facetools_dapfsr import DAPFSR, DAPFSRConfig, __version__
from facetools_dapfsr.adaptation.damma import DAMMAConfig, adapter_from_delta, run_damma
from facetools_dapfsr.adaptation.lowrank import ModulationDelta
from facetools_dapfsr.data.alignment import align_face
from facetools_dapfsr.hub.adapters import ADAPTER_WEIGHTS_NAME, registry_of
from facetools_dapfsr.hub.checkpoint import stored_state_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
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
            adapter = adapter_from_delta(
                model, delta, torch.full((model.num_ws,), 0.5), torch.zeros(model.num_ws, model.w_dim)
            )
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
        found = find_landmarks(read_photo(frontal))
        if found is not None:
            face, _ = align_face(read_photo(path), found[0], model.config.hr_size)
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
    args = parser.parse_args()

    results: dict = {"machine": machine()}
    if args.part == "sizes":
        results["sizes"] = sizes(args.ranks)
    else:
        results["speed"] = speed(
            args.model, args.exemplar or default_exemplar(), args.max_steps, args.rank, not args.quiet
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
