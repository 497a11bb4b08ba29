"""``dapfsr adapt``: one-shot domain adaptation (DAMMA) from one exemplar, written as an adapter.

    dapfsr adapt --exemplar HR_IMAGE [--exemplar-lr LR_IMAGE] --model M --out DIR
                 [--steps N] [--rank R] [--seed S] [--config DAMMA.json] [--push-to-hub REPO]

The exemplar is any photo with one clearly visible face (found with MTCNN and aligned to the
model's template). The adapter folder holds ``adapter_config.json``,
``adapter_model.safetensors`` and a ``README.md`` model card; load it with
``DAPFSR.from_pretrained(M, adapter=DIR)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from facetools_dapfsr.adaptation.damma import DAMMAConfig
from facetools_dapfsr.data.detection_fallbacks import parse_fallbacks
from facetools_dapfsr.fileio import check_can_create, check_not_an_input


def _damma_config(args: argparse.Namespace) -> DAMMAConfig:
    config = DAMMAConfig()
    if args.config is not None:
        try:
            config = DAMMAConfig.from_dict(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"cannot read DAMMA settings from {args.config}: {error}") from error
    overrides = {"max_steps": args.steps, "rank": args.rank, "seed": args.seed}
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def check_out(args: argparse.Namespace) -> None:
    """Refuse, before DAMMA runs, an ``--out`` that is or holds one of the inputs (the
    exemplar, the settings file, the landmarks file, the model's folder, whose README.md the
    adapter's card would replace) or that cannot be created."""
    inputs = {
        "--exemplar": args.exemplar,
        "--exemplar-lr": args.exemplar_lr,
        "--config": args.config,
        "--landmarks": args.landmarks,
    }
    if args.model is not None and Path(args.model).is_dir():
        inputs["--model"] = args.model
    check_not_an_input(args.out, "--out", inputs)
    check_can_create(args.out, f"--out {args.out}")


def _given_landmarks(args: argparse.Namespace) -> np.ndarray | None:
    """The exemplar's landmarks from --aligned or --landmarks, or None (the detector finds them)."""
    from facetools_dapfsr.evaluation.protocol import aligned_landmarks, read_landmarks

    if args.landmarks is not None:
        given = read_landmarks(args.landmarks)
        name = Path(args.exemplar).name
        if name not in given:
            raise ValueError(f"{args.landmarks} holds no landmarks for the exemplar {name}")
        return given[name]
    if args.aligned:
        return aligned_landmarks(args.exemplar)
    return None


def _adapt(args: argparse.Namespace) -> int:
    from facetools_dapfsr.adaptation.damma import run_damma
    from facetools_dapfsr.adaptation.exemplar import load_exemplar
    from facetools_dapfsr.pipeline.super_resolve import load_model

    check_out(args)
    config = _damma_config(args)
    model = load_model(args.model, revision=args.revision).to(args.device)
    exemplar = load_exemplar(
        args.exemplar,
        model.config.hr_size,
        lr_path=args.exemplar_lr,
        lr_size=model.config.lr_size,
        fallbacks=args.detector_fallbacks,
        landmarks=_given_landmarks(args),
    )
    if exemplar.fallback is not None:
        print(f"the exemplar's face was found by the detection fallback {exemplar.fallback!r}")
    result = run_damma(model, exemplar.hr, exemplar_lr=exemplar.lr, config=config, progress=not args.quiet)
    model.add_adapter(result.adapter, args.adapter_name)
    out = model.save_adapter(args.out)
    size = (out / "adapter_model.safetensors").stat().st_size
    status = "converged" if result.converged else "stopped at the step cap"
    print(f"DAMMA {status} after {result.steps} steps in {result.seconds:.1f} s")
    print(f"adapter ({result.adapter.config.kind}, {size / 1024:.1f} KiB) written to {out}")
    if args.push_to_hub:
        commit = model.push_adapter_to_hub(args.push_to_hub, private=args.private or None)
        print(f"pushed to {args.push_to_hub}: {commit}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` command to the ``dapfsr`` parser."""
    defaults = DAMMAConfig()
    parser = subparsers.add_parser(
        "adapt",
        help="adapt a model to a new domain from one exemplar (DAMMA) and write an adapter",
        description="One-shot domain adaptation (DAMMA): learns the decoder's modulation parameters for the "
        "imaging domain of one high-resolution exemplar and writes them as an adapter folder.",
    )
    parser.add_argument(
        "--exemplar", required=True, metavar="HR_IMAGE", help="photo with one face of the target domain"
    )
    parser.add_argument(
        "--exemplar-lr",
        metavar="LR_IMAGE",
        help="the exemplar's low-resolution face, aligned like the HR one (default: made by the degradation model)",
    )
    parser.add_argument(
        "--model", metavar="M", help="source-trained model: folder or Hub repo id (default: the built-in model)"
    )
    parser.add_argument("--revision", help="revision of the model's Hub repo (branch, tag or commit)")
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="the exemplar is already the model's template crop (square, any size): no detector runs",
    )
    parser.add_argument(
        "--landmarks",
        type=Path,
        metavar="FILE",
        help="the exemplar's five landmarks in a JSON or CSV file keyed by file name (as dapfsr evaluate "
        "--landmarks reads): no detector runs",
    )
    parser.add_argument(
        "--detector-fallbacks",
        type=parse_fallbacks,
        default="default",
        metavar="none|default|LIST",
        help="what the face search tries when the exemplar as it is shows no face: intensity inversion "
        "(thermal-like images) and histogram equalisation (dark ones); 'none' to turn them off "
        "(default: %(default)s)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="adapter folder to write")
    parser.add_argument("--steps", type=int, metavar="N", help=f"step cap (default {defaults.max_steps})")
    parser.add_argument(
        "--rank", type=int, metavar="R", help="low-rank adapter of rank R (default 0: full modulation adaptation)"
    )
    parser.add_argument("--seed", type=int, help=f"random seed (default {defaults.seed})")
    parser.add_argument("--config", metavar="JSON", help="DAMMA settings as JSON (fields of DAMMAConfig)")
    parser.add_argument("--adapter-name", default="default", help="name of the adapter on the model")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also upload the adapter to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_adapt)
