"""``dapfsr sample``: render random faces from a decoder (default: the imported FFHQ prior).

Writes the model's HR face crops (``face_0000.png`` ...) and a contact sheet ``grid.png``.
Face ``i`` depends only on ``--seed`` and ``i``, not on ``-n`` or the batch size.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from facetools_dapfsr.models.decoder import Decoder

DEFAULT_DECODER = "ffhq-mobilestylegan"
PRIOR_CONVERTER = "facetools_dapfsr.weights.convert_prior:convert"

EPILOG = """\
examples:
  dapfsr sample -n 16 --seed 0 --out faces/
  dapfsr sample -n 64 --seed 1 --out faces/ --render-size 512 --truncation 0.7
  dapfsr sample -n 8 --seed 0 --out faces/ --decoder ./my-model
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="render random faces from a decoder",
        description="Render random faces (the model's HR face crop, PNG) and a grid image from a decoder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--decoder",
        default=DEFAULT_DECODER,
        metavar="NAME",
        help="a face-prior entry of the weight cache (default: %(default)s), or a DAP-FSR model "
        "folder or Hub id whose decoder to use",
    )
    parser.add_argument("-n", "--num", type=int, default=16, help="number of faces (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--render-size",
        type=int,
        choices=(256, 512, 1024),
        help="frame side rendered by the imported prior before cropping; 256 and 512 exit early "
        "(faster, slightly softer). Default: the decoder's configuration (1024)",
    )
    parser.add_argument(
        "--truncation",
        type=float,
        default=1.0,
        metavar="PSI",
        help="pull codes towards the mean W: w = mean + PSI (w - mean); 1 = none (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="faces per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(func=run)


def load_decoder(name: str, render_size: int | None = None) -> Decoder:
    """The decoder ``name`` refers to: a face-prior weight-cache entry or a DAP-FSR model."""
    from facetools_dapfsr.config import MobileStyleGANConfig
    from facetools_dapfsr.models.mobilestylegan import MobileStyleGANDecoder
    from facetools_dapfsr.weights import list_sources

    priors = {source.name for source in list_sources() if source.converter == PRIOR_CONVERTER}
    if name in priors:
        config = MobileStyleGANConfig(weights=name)
        if render_size is not None:
            config = dataclasses.replace(config, render_size=render_size)
        return MobileStyleGANDecoder.from_weights_cache(config)

    from facetools_dapfsr.models.dapfsr import DAPFSR

    decoder = DAPFSR.from_pretrained(name).decoder
    if render_size is not None and getattr(decoder, "render_size", render_size) != render_size:
        if not isinstance(decoder, MobileStyleGANDecoder):
            raise ValueError(f"--render-size applies to the imported prior; {name} has a {type(decoder).__name__}")
        rebuilt = MobileStyleGANDecoder(dataclasses.replace(decoder.config, render_size=render_size))
        rebuilt.load_state_dict(decoder.state_dict(), strict=True)
        decoder = rebuilt
    return decoder.eval().requires_grad_(False)


def run(args: argparse.Namespace) -> int:
    from torchvision.utils import save_image
    from tqdm.auto import tqdm

    from facetools_dapfsr.fileio import check_can_create
    from facetools_dapfsr.pipeline.sharding import resolve_device

    if args.num < 1 or args.batch_size < 1:
        raise ValueError("-n and --batch-size must be positive")
    check_can_create(args.out, f"--out {args.out}")  # before the prior is loaded and run
    decoder = load_decoder(args.decoder, args.render_size).to(resolve_device(args.device))
    device = next(decoder.parameters()).device
    # All codes drawn up front from one generator, so face i does not depend on -n or batching.
    z = torch.randn(args.num, decoder.z_dim, generator=torch.Generator().manual_seed(args.seed))
    mean_w = decoder.w_statistics()[0].to(device) if args.truncation != 1.0 else None
    args.out.mkdir(parents=True, exist_ok=True)
    faces = []
    with torch.no_grad(), tqdm(total=args.num, desc="sample", unit="face", disable=args.no_progress) as bar:
        for start in range(0, args.num, args.batch_size):
            w = decoder.mapping(z[start : start + args.batch_size].to(device))
            if mean_w is not None:
                w = mean_w + args.truncation * (w - mean_w)
            batch = decoder.synthesis(w.unsqueeze(1).expand(-1, decoder.num_ws, -1)).clamp(0, 1).cpu()
            for offset, face in enumerate(batch):
                save_image(face, args.out / f"face_{start + offset:04d}.png")
            faces.append(batch)
            bar.update(len(batch))
    save_image(torch.cat(faces), args.out / "grid.png", nrow=math.ceil(math.sqrt(args.num)), padding=2)
    print(f"wrote {args.num} faces and grid.png to {args.out}")
    return 0
