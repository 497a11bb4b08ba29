"""``dapfsr synthesize``: render (W+ code, HR face) training pairs from a model's face prior.

The pairs train the encoder by regression onto the known codes (``recipes/train_encoder.py
--synthetic-data DIR``). Rendering is the costly part (about 50 ms a pair at the built-in
model's 256 px exit on a 2-core CPU), so it is done once, stored as ``datasets`` shards, and
resumed where it stopped when the same command is run again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facetools_dapfsr.fileio import check_can_create, check_not_an_input

EPILOG = """\
examples:
  dapfsr synthesize --out runs/synthetic --num-pairs 10000 --seed 0
  dapfsr synthesize --out runs/synthetic-small --num-pairs 256 --model ./my-model
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synthesize",
        help="render synthetic (code, face) pairs for encoder training",
        description="Render (W+ code, HR face) pairs from a model's face prior into a resumable datasets folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (resumed if it exists)")
    parser.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="model folder or Hub id whose decoder renders the pairs (default: the built-in model)",
    )
    parser.add_argument("--num-pairs", type=int, default=10_000, help="pairs to render (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--mixing-probability",
        type=float,
        default=0.9,
        help="share of style-mixed codes (a second code from a random slot on; default: %(default)s)",
    )
    parser.add_argument(
        "--truncation", type=float, default=1.0, metavar="PSI", help="w = mean + PSI (w - mean) (default: %(default)s)"
    )
    parser.add_argument("--shard-size", type=int, default=500, help="pairs per stored shard (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per render pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(func=run)


def check_out(args: argparse.Namespace) -> None:
    """Refuse, before the model loads, an ``--out`` that is or contains the ``--model`` folder
    (the pairs' shards and metadata would be written among its files) or that cannot be created."""
    check_not_an_input(args.out, "--out", {"--model": args.model})
    check_can_create(args.out, f"--out {args.out}")


def run(args: argparse.Namespace) -> int:
    from facetools_dapfsr.data.synthetic import SyntheticPairsConfig, generate_synthetic_pairs
    from facetools_dapfsr.models.dapfsr import DAPFSR
    from facetools_dapfsr.pipeline.sharding import resolve_device

    check_out(args)
    config = SyntheticPairsConfig(
        num_pairs=args.num_pairs,
        seed=args.seed,
        mixing_probability=args.mixing_probability,
        truncation=args.truncation,
        shard_size=args.shard_size,
        render_batch_size=args.batch_size,
    )
    model = DAPFSR.default() if args.model is None else DAPFSR.from_pretrained(args.model)
    decoder = model.decoder.eval().requires_grad_(False).to(resolve_device(args.device))
    out = generate_synthetic_pairs(decoder, args.out, config, show_progress=not args.no_progress)
    print(f"{config.num_pairs} synthetic pairs in {out}")
    return 0
