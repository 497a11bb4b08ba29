"""Parameter counts and CPU/GPU speed of the DAP-FSR network (issue: foundation).

Run:  python benchmarks/foundation.py [--device cpu|cuda] [--repeats N] [--out FILE.json]

Prints, for the ``tiny`` and ``paper`` configurations, parameter counts and the forward time of
``upscale`` at batch 8; and the img/s of the native 128 px StyleGAN2 config-f decoder (random
weights) in fp32, fp32 + channels_last and bf16 autocast + channels_last.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from facetools_dapfsr import DAPFSR, DAPFSRConfig, __version__
from facetools_dapfsr.models.stylegan2 import StyleGAN2Generator


def machine(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": torch.get_num_threads(),
        "torch": torch.__version__,
        "facetools_dapfsr": __version__,
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def timed(fn, repeats: int, device: str) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decoder-batch", type=int, default=8)
    parser.add_argument("--out", help="also write the results as JSON")
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict = {"machine": machine(args.device), "models": {}, "decoder_128_config_f": {}}

    for name in ("tiny", "paper"):
        model = DAPFSR(DAPFSRConfig.from_preset(name)).eval().to(args.device)
        lr = torch.rand(8, 3, 16, 16, device=args.device)
        seconds = timed(lambda model=model, lr=lr: model.upscale(lr), args.repeats, args.device)
        row = {
            "parameters": count(model),
            "encoder_parameters": count(model.encoder),
            "decoder_parameters": count(model.decoder),
            "forward_batch8_s": round(seconds, 4),
        }
        results["models"][name] = row
        print(
            f"{name:6s} params {row['parameters'] / 1e6:8.3f} M (encoder {row['encoder_parameters'] / 1e6:.3f} M, "
            f"decoder {row['decoder_parameters'] / 1e6:.3f} M)  upscale batch 8: {seconds:.3f} s"
        )

    decoder = StyleGAN2Generator(DAPFSRConfig.paper().decoder).eval().to(args.device)
    ws = torch.randn(args.decoder_batch, decoder.num_ws, decoder.w_dim, device=args.device)
    variants = {
        "fp32": (torch.contiguous_format, None),
        "fp32_channels_last": (torch.channels_last, None),
        "bf16_channels_last": (torch.channels_last, torch.bfloat16),
    }
    for label, (memory_format, dtype) in variants.items():
        decoder = decoder.to(memory_format=memory_format)

        def render(decoder: StyleGAN2Generator = decoder, dtype: torch.dtype | None = dtype) -> None:
            with torch.no_grad(), torch.autocast(args.device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                decoder.synthesis(ws)

        seconds = timed(render, args.repeats, args.device)
        results["decoder_128_config_f"][label] = round(args.decoder_batch / seconds, 2)
        print(
            f"StyleGAN2-128 config-f decoder, batch {args.decoder_batch}, {label:20s}: {args.decoder_batch / seconds:8.2f} img/s"
        )
    print(json.dumps(results["machine"]))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
