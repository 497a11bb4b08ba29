"""Benchmark of the imported FFHQ prior (MobileStyleGAN decoder).

Prints:
- parity: max |PyTorch - OpenVINO| of the full 1024 px frame in [-1, 1] units (needs the
  test-only ``openvino`` package; skipped without it);
- cost (counted FLOPs, measured time) and PSNR of the 128 px HR crop against the naive path
  (render the full 1024 px frame, then crop) for: the exact crop window at 1024 px (only the
  part of the frame the crop reads is rendered) and the early exits (512 and 256 px frames);
- CPU time per 128 px face: forward, and forward + backward through the decoder w.r.t. W+;
- the machine (platform, CPU count, torch version, threads).

Run: ``python benchmarks/prior.py`` (builds the weight-cache entry on first use).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from facetools_dapfsr.config import MobileStyleGANConfig
from facetools_dapfsr.data.alignment import warp_affine
from facetools_dapfsr.evaluation.bench import best_time
from facetools_dapfsr.models.mobilestylegan import (
    NUM_WS,
    RENDER_SIZES,
    MobileStyleGANDecoder,
)
from facetools_dapfsr.weights import get_source, load_weights
from facetools_dapfsr.weights.artifacts import ensure_artifact, unpack
from facetools_dapfsr.weights.cache import artifacts_dir

PRIOR = "ffhq-mobilestylegan"


def decoder_at(tensors: dict[str, torch.Tensor], render_size: int) -> MobileStyleGANDecoder:
    decoder = MobileStyleGANDecoder(MobileStyleGANConfig(render_size=render_size))
    decoder.load_state_dict(tensors, strict=True)
    return decoder.eval().requires_grad_(False)


def seeded_ws(decoder: MobileStyleGANDecoder, count: int, seed: int) -> torch.Tensor:
    """Broadcast W+ of ``count`` untruncated faces."""
    z = torch.randn(count, decoder.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return decoder.mapping(z).unsqueeze(1).expand(-1, NUM_WS, -1).contiguous()


def parity(tensors: dict[str, torch.Tensor], samples: int) -> str:
    try:
        import openvino as ov
    except ImportError:
        return "skipped (openvino not installed: pip install openvino)"
    (artifact,) = get_source(PRIOR).artifacts
    wheel = ensure_artifact(artifact, artifacts_dir(), quiet=True)
    decoder = decoder_at(tensors, 1024)
    with tempfile.TemporaryDirectory() as tmp:
        data = unpack(wheel, Path(tmp)) / "random_face" / "data"
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32"}  # OpenVINO's CPU default may be bf16
        mapping = core.compile_model(core.read_model(data / "MappingNetwork.xml"), "CPU", config)
        synthesis = core.compile_model(core.read_model(data / "SynthesisNetwork.xml"), "CPU", config)
        z = np.random.default_rng(0).standard_normal((samples, 512)).astype(np.float32)
        worst_w = worst_image = 0.0
        for row in z:
            w_ref = mapping(row[None])[0]
            image_ref = synthesis(w_ref)[0]
            with torch.no_grad():
                w = decoder.mapping(torch.from_numpy(row[None])).numpy()
                ws = torch.from_numpy(w_ref).unsqueeze(1).expand(-1, NUM_WS, -1)
                image = decoder.synthesis_network(ws).numpy()
            worst_w = max(worst_w, float(np.abs(w - w_ref).max()))
            worst_image = max(worst_image, float(np.abs(image - image_ref).max()))
    return f"max |diff| frame {worst_image:.2e} ([-1, 1] units), mapping {worst_w:.2e}  ({samples} random z)"


def full_frame_crop(decoder: MobileStyleGANDecoder, ws: torch.Tensor) -> torch.Tensor:
    """The naive path: render the whole frame, then crop (the reference for cost and PSNR)."""
    frame = decoder.render_frame(ws)
    return warp_affine(frame, decoder.crop_matrix(), (decoder.resolution, decoder.resolution))[0]


def count_flops(step: Callable[[], object]) -> float:
    """Convolution and matmul FLOPs of one call (what dominates; elementwise work is not counted)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=16, help="faces for the early-exit PSNR (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats, best kept (default: %(default)s)")
    parser.add_argument("--parity-samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"machine: {platform.platform()} | {platform.machine()} {platform.processor() or ''}".rstrip())
    print(
        f"cpus: {os.cpu_count()} | torch {torch.__version__} ({torch.get_num_threads()} threads) | numpy {np.__version__}"
    )
    tensors, provenance = load_weights(PRIOR, progress=False)
    print(f"weights: {PRIOR} (converter revision {provenance.get('converter_revision')})")
    print(f"parity vs OpenVINO: {parity(tensors, args.parity_samples)}")

    decoders = {size: decoder_at(tensors, size) for size in RENDER_SIZES}
    full = decoders[1024]
    ws = seeded_ws(full, args.faces, seed=2024)
    one = ws[:1]
    # name -> (crop of a batch of W+, decoder whose modulations the backward pass reaches)
    paths: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], MobileStyleGANDecoder]] = {
        "1024 full frame + crop": (lambda codes: full_frame_crop(full, codes), full),
        **{
            f"{size} crop window": (decoders[size].synthesis, decoders[size])
            for size in sorted(RENDER_SIZES, reverse=True)
        },
    }
    with torch.no_grad():
        crops = {name: torch.cat([f(chunk) for chunk in ws.split(4)]).clamp(0, 1) for name, (f, _) in paths.items()}
    reference = crops["1024 full frame + crop"]
    flops = {name: count_flops(lambda f=f: f(one)) for name, (f, _) in paths.items()}
    with torch.no_grad():
        forward = {name: best_time(lambda f=f: f(one), args.repeats) for name, (f, _) in paths.items()}

    def forward_backward(f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        codes = one.clone().requires_grad_(True)
        f(codes).square().mean().backward()

    backward = {name: best_time(lambda f=f: forward_backward(f), args.repeats) for name, (f, _) in paths.items()}

    base = "1024 full frame + crop"
    print(f"\nHR crop (128 px) of {args.faces} untruncated faces vs the crop of the full 1024 px frame")
    print(f"{'path':<24} {'GFLOP':>7} {'FLOP ratio':>10} {'time ratio':>10} {'PSNR mean':>9} {'min':>6} {'max':>6}")
    for name in paths:
        mse = ((crops[name] - reference) ** 2).mean((1, 2, 3)).clamp_min(1e-12)
        psnr = (-10 * torch.log10(mse)).tolist()
        quality = (
            "(reference)" if name == base else f"{statistics.mean(psnr):>9.2f} {min(psnr):>6.2f} {max(psnr):>6.2f}"
        )
        print(
            f"{name:<24} {flops[name] / 1e9:>7.2f} {flops[name] / flops[base]:>10.2f} "
            f"{forward[name] / forward[base]:>10.2f} {quality}"
        )
    print("(PSNR 120 = identical: the crop window is exact; 512 and 256 are the early exits)")

    print(f"\nCPU time per 128 px face (batch 1, best of {args.repeats})")
    print(f"{'path':<24} {'forward s':>10} {'fwd+bwd s':>10}")
    for name in paths:
        print(f"{name:<24} {forward[name]:>10.3f} {backward[name]:>10.3f}")


if __name__ == "__main__":
    main()
