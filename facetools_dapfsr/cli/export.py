"""``dapfsr export``: write a model as ONNX graphs for deployment without PyTorch.

See :mod:`facetools_dapfsr.models.onnx_export` for what the graphs hold (the LR consistency step
stays in Python). After writing, the graphs are run with onnxruntime (when installed) on random
LR faces and compared with PyTorch; a difference above ``--tolerance`` is an error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  dapfsr export --format onnx --out dapfsr-onnx/
  dapfsr export --format onnx --out nir-onnx/ --model ./my-model --adapter ./nir-adapter --size 256
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the model as ONNX graphs (encoder, decoder at one output size)",
        description="Write the encoder (lr -> W+) and the decoder (W+ -> face at --size px) as ONNX "
        "graphs with a dynamic batch, plus onnx_export.json. Needs the onnx extra: "
        "pip install 'facetools-dapfsr[onnx]'.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", help="DAP-FSR model: local folder or Hub model id (default: the built-in model)")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument("--adapter", help="domain adapter to apply before exporting (folder or Hub id)")
    parser.add_argument("--size", type=int, help="side of the decoder's output face (default: the model's HR size)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="largest difference from PyTorch accepted by the check (default: %(default)s)",
    )
    parser.add_argument("--no-check", action="store_true", help="do not run the graphs with onnxruntime afterwards")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facetools_dapfsr.fileio import check_can_create
    from facetools_dapfsr.models.onnx_export import check_onnx_export, export_onnx
    from facetools_dapfsr.pipeline.super_resolve import load_model

    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise RuntimeError(f"export needs {module}: pip install 'facetools-dapfsr[onnx]'") from None
    check_can_create(args.out, "--out")
    model = load_model(args.model, revision=args.revision, adapter=args.adapter).float().eval()
    record = export_onnx(model, args.out, args.size)
    print(f"wrote {args.out / record.encoder}, {args.out / record.decoder} and onnx_export.json")
    if args.no_check:
        return 0
    try:
        difference = check_onnx_export(model, args.out)
    except ImportError:
        print("not checked: onnxruntime is not installed (pip install onnxruntime)")
        return 0
    print(f"onnxruntime vs PyTorch on 4 random LR faces: max |difference| {difference:.2e}")
    if difference > args.tolerance:
        raise RuntimeError(
            f"the exported graphs differ from PyTorch by {difference:.2e} > --tolerance {args.tolerance}"
        )
    return 0
