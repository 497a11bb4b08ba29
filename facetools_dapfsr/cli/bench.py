"""``dapfsr bench``: how fast DAP-FSR is, against PULSE-style optimisation and DAMMA adaptation.

    dapfsr bench [--model M | --preset tiny|paper|prior] [--device D] --out FILE.json

Without ``--model`` or ``--preset`` it measures the built-in model (``DAPFSR.default()``).

Measures feed-forward faces/s at batch 1 and 32, PULSE-style seconds per face at its usual step
count, their ratio (the paper claims x150), the DAMMA adaptation time and peak memory, and records
the machine. Speed does not depend on the weights: ``--preset`` builds a randomly initialised
model of a configuration (``prior`` loads the FFHQ prior from the weights cache).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facetools_dapfsr.models.dapfsr import DAPFSR


def _load_model(args: argparse.Namespace) -> DAPFSR:
    from facetools_dapfsr.config import DAPFSRConfig, MobileStyleGANConfig
    from facetools_dapfsr.models.dapfsr import DAPFSR

    if args.preset is None:
        from facetools_dapfsr.pipeline.super_resolve import load_model

        return load_model(args.model, revision=args.revision)
    config = DAPFSRConfig.from_preset(args.preset)
    model = DAPFSR(config)
    if isinstance(config.decoder, MobileStyleGANConfig):
        from facetools_dapfsr.models.mobilestylegan import MobileStyleGANDecoder

        model.decoder = MobileStyleGANDecoder.from_weights_cache(config.decoder)
    return model.eval()


def _bench(args: argparse.Namespace) -> int:
    import torch

    from facetools_dapfsr.allocator import retain_freed_memory
    from facetools_dapfsr.evaluation.bench import BenchConfig, run_benchmark
    from facetools_dapfsr.fileio import atomic_write_text, check_can_create

    retain_freed_memory()  # as dapfsr upscale does: large batches reuse their buffers
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = BenchConfig(
        batch_sizes=tuple(args.batch_sizes),
        min_seconds=args.min_seconds,
        pulse_steps=args.pulse_steps,
        pulse_timed_steps=args.pulse_timed_steps,
        damma_steps=args.damma_steps,
        damma_timed_steps=args.damma_timed_steps,
    )
    check_can_create(Path(args.out).parent, f"--out {args.out}")  # before minutes of timing
    model = _load_model(args)
    record = run_benchmark(model, config, device=args.device, damma=not args.no_damma, pulse=not args.no_pulse)
    record["model"]["id"] = args.model or (
        f"preset:{args.preset} (random encoder)" if args.preset else "built-in (DAPFSR.default())"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    for row in record["feed_forward"]:
        print(f"feed-forward batch {row['batch_size']}: {row['faces_per_second']:.2f} faces/s")
    if "pulse" in record:
        ratio = record["pulse_over_feed_forward"]
        print(
            f"PULSE-style ({record['pulse']['steps']} steps): {record['pulse']['seconds_per_face']:.2f} s/face, "
            f"x{ratio['batch_1']:.0f} slower than feed-forward at batch 1 (x{ratio['best_batch']:.0f} at the best batch)"
        )
    if "damma" in record:
        print(f"DAMMA ({record['damma']['steps']} steps): {record['damma']['seconds']:.1f} s")
    print(f"peak memory: {record['peak_memory']['mb']:.0f} MiB ({record['peak_memory']['kind']})")
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command to the ``dapfsr`` parser."""
    parser = subparsers.add_parser(
        "bench",
        help="measure feed-forward speed, PULSE-style and DAMMA time, and peak memory",
        description="Speed of DAP-FSR: feed-forward faces/s, PULSE-style latent optimisation s/face and their ratio "
        "(the paper claims x150), DAMMA adaptation time, peak memory. Writes one JSON file with the machine.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="M", help="model folder or Hub repo id (default: the built-in model)")
    source.add_argument(
        "--preset", choices=("tiny", "paper", "prior"), help="a configuration with a random encoder instead of a model"
    )
    parser.add_argument("--revision", help="revision of the model's Hub repo")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.json", help="where to write the record")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32], metavar="B", help="default 1 32")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="time each batch size at least this long")
    parser.add_argument("--pulse-steps", type=int, default=100, help="PULSE-style step count reported (default 100)")
    parser.add_argument("--pulse-timed-steps", type=int, default=5, help="PULSE-style steps actually timed")
    parser.add_argument("--damma-steps", type=int, default=300, help="DAMMA step count reported (default 300)")
    parser.add_argument("--damma-timed-steps", type=int, default=3, help="DAMMA steps actually timed")
    parser.add_argument("--no-pulse", action="store_true", help="skip the PULSE-style timing")
    parser.add_argument("--no-damma", action="store_true", help="skip the DAMMA timing")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=_bench)
