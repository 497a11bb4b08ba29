"""Why does DAMMA add so little on Yale B? (issue 13 item 1)

One Yale B illumination, one exemplar (a subject's face under it), ``--faces`` other subjects
under the same illumination as the faces to restore. Measured, on the built-in model:

- source only, DAMMA after each of ``--snapshots`` steps, and two **oracles**: the same constrained
  fine-tuning of the modulation parameters (Eq. 5, DAMMA's step 4) with real target-domain faces
  instead of mixed faces: ``oracle-domain`` on ``--faces`` *other* subjects under the same light
  (what many target examples would buy), ``oracle-test`` on the *test faces' own HR* (no one-shot
  method can have better training pairs, so it bounds what adapting the modulation parameters of
  this model can buy on these faces);
- every output raw (the decoder's face) and after the LR consistency step (without the code
  refinement, for time), PSNR/SSIM on grey as the protocol does;
- where the error sits: the MSE split into the band the 16 px input carries (the output and the
  HR both reduced to 16 px and enlarged again) and the band above it, and the PSNR after a
  per-face affine tone fit of the output to the HR (what a perfect global tone correction adds);
- how far DAMMA moves: alpha per W+ slot, and the relative size of the modulation change per
  kind of layer (to-image styles vs convolution styles);
- a grid: LR | source only | DAMMA (each snapshot) | oracle | HR, and the mixed faces G(w_m) of
  fixed source codes at each snapshot beside G(w_s) and the exemplar.

    python benchmarks/damma_diagnosis.py --out benchmarks/records/damma_diagnosis
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.adaptation.damma import DAMMAConfig, run_damma
from facetools_dapfsr.evaluation.baselines import AdaINConfig, Exemplar, finetune_modulations, restorer_with
from facetools_dapfsr.evaluation.protocol import Domain, FaceStore, ProtocolConfig
from facetools_dapfsr.hub.adapters import ALPHA_KEY, EXEMPLAR_CODE_KEY
from facetools_dapfsr.losses import VGGFeatures
from facetools_dapfsr.metrics.image import psnr, ssim, to_grey
from facetools_dapfsr.models.consistency import ConsistencyConfig


def pick_faces(domain: Domain, illumination: str, exemplar_subject: str, count: int) -> tuple[int, list[int]]:
    exemplar = next(i for i, item in enumerate(domain.images) if f"{exemplar_subject}_P00{illumination}" in item.path)
    faces: dict[str, int] = {}
    for i, item in enumerate(domain.images):
        if item.identity != domain.images[exemplar].identity and f"_P00{illumination}." in item.path:
            faces.setdefault(item.identity, i)
    return exemplar, list(faces.values())[:count]


def band_split(output: torch.Tensor, hr: torch.Tensor, lr_size: int) -> dict[str, float]:
    """Mean squared error (grey) in the band a ``lr_size`` input carries and above it."""

    def low(x: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(x, size=(lr_size, lr_size), mode="area")
        return F.interpolate(small, size=x.shape[-2:], mode="bicubic", align_corners=False)

    a, b = to_grey(output.clamp(0, 1)), to_grey(hr)
    low_error = (low(a) - low(b)).square().mean().item()
    high_error = ((a - low(a)) - (b - low(b))).square().mean().item()
    return {"mse_low_band": low_error, "mse_high_band": high_error}


def tone_fixed_psnr(output: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor) -> float:
    """PSNR after the best per-face affine map ``a * output + b`` (least squares on grey)."""
    a, b = to_grey(output.clamp(0, 1)).flatten(1), to_grey(hr).flatten(1)
    mask = valid.expand_as(to_grey(hr)).flatten(1).float() if valid is not None else torch.ones_like(a)
    n = mask.sum(1, keepdim=True)
    mean_a, mean_b = (a * mask).sum(1, keepdim=True) / n, (b * mask).sum(1, keepdim=True) / n
    cov = ((a - mean_a) * (b - mean_b) * mask).sum(1, keepdim=True)
    var = ((a - mean_a).square() * mask).sum(1, keepdim=True).clamp_min(1e-8)
    fitted = ((a - mean_a) * cov / var + mean_b).clamp(0, 1)
    mse = ((fitted - b).square() * mask).sum(1) / n.squeeze(1)
    return (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()


def scores(restore_raw, restore_consistent, lr, hr, valid, lr_size: int) -> tuple[dict, torch.Tensor]:
    out = {}
    with torch.no_grad():
        raw = restore_raw(lr)
        consistent = restore_consistent(lr)
    for name, image in (("raw", raw), ("consistent", consistent)):
        out[name] = {
            "psnr": psnr(image, hr, mask=valid, grey=True).mean().item(),
            "ssim": ssim(image, hr, mask=valid, grey=True).mean().item(),
            "psnr_tone_fixed": tone_fixed_psnr(image, hr, valid),
            **band_split(image, hr, lr_size),
        }
    return out, consistent


def modulation_change(model: DAPFSR, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative Frobenius change of the adapted modulation tensors, by kind of layer."""
    base = dict(model.decoder.named_parameters())
    sums: dict[str, list[float]] = {}
    for name, value in tensors.items():
        key = name.removeprefix("decoder.")
        if key not in base:
            continue
        kind = (
            "to_img"
            if "to_img" in key or "exit_heads" in key
            else ("upsample" if "up" in key.split(".")[-3] else "conv")
        )
        change = (value.float() - base[key].float()).norm().square().item()
        size = base[key].float().norm().square().item()
        pair = sums.setdefault(kind, [0.0, 0.0])
        pair[0] += change
        pair[1] += size
    return {kind: (c / max(s, 1e-12)) ** 0.5 for kind, (c, s) in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="../shared/data/yaleb")
    parser.add_argument("--illumination", default="A+035E+15")
    parser.add_argument("--exemplar-subject", default="yaleB05")
    parser.add_argument("--faces", type=int, default=16)
    parser.add_argument("--snapshots", default="10,30,100")
    parser.add_argument("--oracle-steps", type=int, default=100)
    parser.add_argument("--damma", default="{}", help="DAMMAConfig fields as JSON")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    snapshots = sorted(int(s) for s in args.snapshots.split(","))

    domain = Domain.from_folder(args.target)
    exemplar_index, picked = pick_faces(domain, args.illumination, args.exemplar_subject, 2 * args.faces)
    face_indices, domain_indices = picked[: args.faces], picked[args.faces :]
    model = DAPFSR.default().eval()
    lr_size = model.config.lr_size
    store = FaceStore(domain, model.config.hr_size, lr_size, ProtocolConfig(splits=1, draws=1))
    hr, valid, lr = store.batch(face_indices)
    ex_hr, _, ex_lr = store.batch([exemplar_index])
    cheap = dataclasses.replace(model.config.consistency, refine_steps=0)
    vgg = VGGFeatures.from_weights_cache(progress=False).eval()

    def model_restorers():
        return (lambda x: model.upscale(x, consistency=False)), (lambda x: model.upscale(x, consistency=cheap))

    record: dict = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "cpus": os.cpu_count()},
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "exemplar": domain.images[exemplar_index].path,
        "faces": [domain.images[i].path for i in face_indices],
        "oracle_domain_faces": [domain.images[i].path for i in domain_indices],
        "results": {},
    }
    columns: dict[str, torch.Tensor] = {}
    record["results"]["source-only"], columns["source only"] = scores(*model_restorers(), lr, hr, valid, lr_size)
    print("source-only", json.dumps(record["results"]["source-only"]), flush=True)

    # DAMMA with snapshots; the mixed faces of fixed source codes are rendered for each snapshot.
    config = DAMMAConfig.from_dict({"max_steps": snapshots[-1], "tolerance": -1.0, **json.loads(args.damma)})
    started = time.perf_counter()
    result = run_damma(model, ex_hr, ex_lr, config, vgg=vgg, progress=False, snapshot_steps=snapshots)
    record["damma_seconds"] = time.perf_counter() - started
    record["damma_history"] = result.history
    eps = torch.randn(4, model.w_dim, generator=torch.Generator().manual_seed(1))
    w_s = (model.w_mu + model.w_sigma * eps).unsqueeze(1).expand(-1, model.num_ws, -1)
    with torch.no_grad():
        mixed_rows = [torch.cat([ex_hr, model.decoder.synthesis(w_s).clamp(0, 1)])]
    for step, adapter in sorted(result.snapshots.items()):
        alpha = adapter.tensors[ALPHA_KEY]
        w_t = adapter.tensors[EXEMPLAR_CODE_KEY][None]
        with torch.no_grad():
            w_m = (1 - alpha[None, :, None]) * w_t + alpha[None, :, None] * w_s
            mixed_rows.append(torch.cat([ex_hr, model.decoder.synthesis(w_m).clamp(0, 1)]))
        name = model.add_adapter(adapter, f"step{step}")
        try:
            entry, columns[f"DAMMA {step}"] = scores(*model_restorers(), lr, hr, valid, lr_size)
        finally:
            model.delete_adapter(name)
        entry["alpha"] = [round(a, 3) for a in alpha.tolist()]
        entry["modulation_change"] = modulation_change(model, adapter.tensors)
        record["results"][f"damma-{step}"] = entry
        print(f"damma-{step}", json.dumps(entry), flush=True)

    # Oracles: DAMMA's step 4 trained on real target faces (other subjects, then the test faces).
    if args.oracle_steps < 1:
        return finish(record, columns, mixed_rows, result, lr, hr, out)
    domain_hr = store.batch(domain_indices)[0]
    for name, faces in (("oracle-domain", domain_hr), ("oracle-test", hr)):
        started = time.perf_counter()
        adapted = finetune_modulations(
            model, faces, Exemplar(hr=ex_hr, lr=ex_lr), AdaINConfig(steps=args.oracle_steps), vgg
        )
        record[f"{name}_seconds"] = time.perf_counter() - started

        raw, consistent = (
            restorer_with(model, adapted, ConsistencyConfig(enabled=False)),
            restorer_with(model, adapted, cheap),
        )
        entry, columns[name] = scores(raw, consistent, lr, hr, valid, lr_size)
        entry["modulation_change"] = modulation_change(model, adapted)
        record["results"][f"{name}-{args.oracle_steps}"] = entry
        print(f"{name}-{args.oracle_steps}", json.dumps(entry), flush=True)
    finish(record, columns, mixed_rows, result, lr, hr, out)


def finish(record, columns, mixed_rows, result, lr, hr, out: Path) -> None:
    size = hr.shape[-1]
    rows = [F.interpolate(lr[:6], size=(size, size), mode="nearest"), *(c[:6] for c in columns.values()), hr[:6]]
    grid = torch.stack(rows, 1).flatten(0, 1)
    save_image(grid, out / "faces.png", nrow=len(rows), padding=2, pad_value=1)
    save_image(torch.cat(mixed_rows), out / "mixed.png", nrow=5, padding=2, pad_value=1)
    record["faces_png_columns"] = ["LR", *columns, "HR"]
    record["mixed_png_rows"] = ["G(w_s)", *(f"G(w_m) after step {s}" for s in sorted(result.snapshots))]
    (out / "diagnosis.json").write_text(json.dumps(record, indent=1))
    print("wrote", out, flush=True)


if __name__ == "__main__":
    main()
