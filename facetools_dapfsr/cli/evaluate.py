"""``dapfsr evaluate``: the paper's cross-domain protocol on a target domain.

    dapfsr evaluate --target DIR [--model M] --out DIR [--source DIR] [--splits N] [--draws K]
                    [--methods bicubic,source-only,damma] [--seed S] [--max-eval N]
                    [--damma-steps N] [--pulse-steps N] [--finetune-steps N] [--adain-steps N]
                    [--source-images N] [--device D]

Methods: bicubic, source-only, pulse, finetune, adain (needs --source), damma.

Writes ``results.json`` (every setting, per-draw and averaged scores), ``results.md`` (the
paper's table layout) and ``grid.png`` (LR | methods | HR, columns named in ``grid.txt``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from facetools_dapfsr.evaluation.baselines import DEFAULT_METHODS, METHODS
from facetools_dapfsr.fileio import check_can_create


def _evaluate(args: argparse.Namespace) -> int:
    from facetools_dapfsr.adaptation.damma import DAMMAConfig
    from facetools_dapfsr.evaluation.baselines import (
        AdaINConfig,
        FineTuneConfig,
        PULSEConfig,
        build_methods,
    )
    from facetools_dapfsr.evaluation.protocol import Domain, ProtocolConfig
    from facetools_dapfsr.evaluation.report import write_report
    from facetools_dapfsr.evaluation.runner import EvaluationSettings, Scorer, evaluate
    from facetools_dapfsr.pipeline.super_resolve import load_model

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    from facetools_dapfsr.data.degradation import DegradationConfig

    protocol = ProtocolConfig(
        splits=args.splits,
        draws=args.draws,
        seed=args.seed,
        max_eval_images=args.max_eval,
        degradation=DegradationConfig.from_name_or_file(args.degradation),
        detector_fallbacks=args.detector_fallbacks,
        yaleb_landmarks=args.yaleb_landmarks,
    )
    damma = DAMMAConfig(seed=args.seed)
    if args.damma_config is not None:
        damma = DAMMAConfig.from_dict(json.loads(Path(args.damma_config).read_text()))
    if args.damma_steps is not None:
        damma = dataclasses.replace(damma, max_steps=args.damma_steps)
    pulse = PULSEConfig() if args.pulse_steps is None else PULSEConfig(steps=args.pulse_steps)
    finetune = FineTuneConfig(seed=args.seed)
    if args.finetune_steps is not None:
        finetune = dataclasses.replace(finetune, steps=args.finetune_steps)
    adain = AdaINConfig(seed=args.seed)
    if args.adain_steps is not None:
        adain = dataclasses.replace(adain, steps=args.adain_steps)
    if "adain" in names and args.source is None:
        raise ValueError("the adain method needs source-domain faces: pass --source DIR")
    build_methods(names)  # unknown names fail here, before any data is read
    # The report folder is checked before the evaluation, which can take an hour.
    check_can_create(args.out, f"--out {args.out}")
    if Path(args.out).resolve() in {Path(p).resolve() for p in (args.target, args.source) if p is not None}:
        raise ValueError(f"--out {args.out} is a folder of input faces; choose another folder for the report")

    model = load_model(args.model, revision=args.revision)
    source_faces = None
    if "adain" in names:
        source = Domain.from_folder(
            args.source,
            show_progress=not args.quiet,
            max_images=4 * args.source_images,
            fallbacks=protocol.detector_fallbacks,
        )
        source_faces = source.sample_faces(args.source_images, model.config.hr_size, args.seed)
    methods = build_methods(names, pulse=pulse, finetune=finetune, adain=adain, damma=damma, source_faces=source_faces)
    target = Domain.from_folder(
        args.target,
        show_progress=not args.quiet,
        fallbacks=protocol.detector_fallbacks,
        aligned=args.aligned,
        landmarks=args.landmarks,
        yaleb_landmarks=protocol.yaleb_landmarks,
    )
    for note in target.skipped:
        print(f"note: {note}")
    scorer = Scorer.from_weights_cache(
        grey=target.is_grey(),
        lpips=not args.no_lpips,
        face_quality=not args.no_face_quality,
        identity=False if args.no_identity else None,
    )
    settings = EvaluationSettings(batch_size=args.batch_size, grid_images=args.grid_images, device=args.device)
    result = evaluate(model, target, methods, scorer, protocol, settings, show_progress=not args.quiet)
    result.metadata["model"]["id"] = str(args.model) if args.model else "built-in (DAPFSR.default())"
    result.metadata["model"]["revision"] = args.revision
    result.metadata["source"] = str(args.source) if args.source else None
    result.metadata["command"] = args.command_line
    paths = write_report(result, args.out)
    print((Path(args.out) / "results.md").read_text(), end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command to the ``dapfsr`` parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="run the paper's cross-domain protocol (splits x exemplar draws) and write a report",
        description="Evaluate one-shot domain adaptation as in the paper: the target domain is cut into splits "
        "(Extended Yale B: groups of illumination conditions), an exemplar is drawn from each split several times, "
        "and every method is scored (PSNR, SSIM, LPIPS, face quality) on the rest of the split.",
    )
    parser.add_argument("--target", required=True, type=Path, metavar="DIR", help="folder of target-domain faces")
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="folder of source-domain faces the model was trained on (content faces of the adain baseline)",
    )
    parser.add_argument(
        "--source-images", type=int, default=64, metavar="N", help="source faces for the adain baseline (default 64)"
    )
    parser.add_argument(
        "--model", metavar="M", help="source-trained model: folder or Hub repo id (default: the built-in model)"
    )
    parser.add_argument("--revision", help="revision of the model's Hub repo")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the report")
    parser.add_argument("--splits", type=int, default=10, metavar="N", help="splits of the target domain (default 10)")
    parser.add_argument("--draws", type=int, default=10, metavar="K", help="exemplar draws per split (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="protocol seed (default 0)")
    parser.add_argument(
        "--degradation",
        default="paper",
        metavar="NAME",
        help="how LR inputs are made: 'paper' (random affine, then bicubic to the LR size; the default), "
        "'realistic' (LR side 8-64 px, blur, noise, JPEG, resized to the model's LR size), or a JSON "
        "file of DegradationConfig fields",
    )
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="the target images are already the model's template crop (square, any size): no detector runs",
    )
    parser.add_argument(
        "--landmarks",
        type=Path,
        metavar="FILE",
        help="five landmarks per target image (JSON: name -> [[x, y] x 5], or CSV: name,x1,y1,...,x5,y5; "
        "left eye, right eye, nose, left and right mouth corner as seen in the image): no detector runs",
    )
    parser.add_argument(
        "--detector-fallbacks",
        default="default",
        metavar="none|default|LIST",
        help="what the landmark search tries on an image without a detected face: a grey border (tight "
        "crops), histogram equalisation (dark images), intensity inversion (thermal-like images) and their "
        "combinations; 'none' drops such images (default: %(default)s)",
    )
    parser.add_argument(
        "--yaleb-landmarks",
        choices=("subject", "image"),  # evaluation.protocol.YALEB_LANDMARKS (not imported: --help stays light)
        default="subject",
        help="Extended Yale B only: detect landmarks once per subject on its frontal-lit image and use them "
        "for all its images ('subject', the recorded figures), or on every image with the detection "
        "fallbacks ('image', as any other domain; images without a face are left out) (default: %(default)s)",
    )
    parser.add_argument(
        "--max-eval", type=int, metavar="N", help="evaluate at most N images per split and draw (seeded subset)"
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated methods from {', '.join(METHODS)} (default {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--damma-steps", type=int, metavar="N", help="DAMMA step cap")
    parser.add_argument("--damma-config", metavar="JSON", help="DAMMA settings as JSON (fields of DAMMAConfig)")
    parser.add_argument("--pulse-steps", type=int, metavar="N", help="PULSE-style optimisation steps (default 100)")
    parser.add_argument("--adain-steps", type=int, metavar="N", help="AdaIN baseline fine-tuning steps (default 100)")
    parser.add_argument("--finetune-steps", type=int, metavar="N", help="direct fine-tuning steps (default 100)")
    parser.add_argument("--batch-size", type=int, default=16, help="faces per forward pass (default 16)")
    parser.add_argument("--grid-images", type=int, default=6, metavar="N", help="faces in grid.png (default 6)")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    parser.add_argument("--no-face-quality", action="store_true", help="skip the face quality score")
    parser.add_argument(
        "--no-identity",
        action="store_true",
        help="skip the identity metric (dlib face descriptor; on by default when the [identity] extra is installed)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_evaluate)
