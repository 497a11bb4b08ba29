"""Turn a finished ``train_encoder.py`` run into the built-in model shipped in the package.

Writes ``facetools_dapfsr/default_model/``: ``config.json``, ``model.safetensors`` (stored in
float16; the FFHQ prior is not stored, it comes from the weights cache), ``model_card.json`` and
the card ``README.md``. Run it once to ship the weights, measure the shipped model with
``dapfsr evaluate`` (no ``--model``: the built-in one), then again with the reports so that the
card carries the figures (both runs write byte-identical weights):

    python recipes/release_default_model.py --run runs/default_model
    dapfsr evaluate --target ../shared/data/celeba/test --methods bicubic,source-only \\
        --splits 1 --draws 1 --out runs/eval_celeba
    python recipes/release_default_model.py --run runs/default_model --evaluation runs/eval_celeba/results.json

Without ``--run`` the shipped weights and training facts are kept and only the card's figures
are replaced by the given reports (after a change at inference, such as the LR consistency step):

    python recipes/release_default_model.py --evaluation runs/eval_celeba/results.json [...]

``--consistency`` sets fields of the shipped model's inference step (``ConsistencyConfig``, saved
in its ``config.json``), e.g. ``--consistency '{"refine_steps": 15}'``; the weights stay the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.config import ConsistencyConfig
from facetools_dapfsr.data.degradation import DegradationConfig
from facetools_dapfsr.hub.cards import ModelCardInfo
from facetools_dapfsr.models.dapfsr import default_model_path
from facetools_dapfsr.training.arguments import EncoderTrainingArguments
from facetools_dapfsr.training.model_card import chained_card_info, encoder_card_info


def evaluation_rows(results_path: Path) -> list[dict[str, Any]]:
    """One card row per method of a ``dapfsr evaluate`` report."""
    result = json.loads(results_path.read_text())
    target, protocol = result["target"], result["protocol"]
    subset = f", at most {protocol['max_eval_images']} faces each" if protocol.get("max_eval_images") else ""
    degradation = DegradationConfig(**protocol.get("degradation", {}))
    kind = ", realistic degradation" if degradation.is_realistic else ""
    benchmark = f"{target['name']} ({protocol['splits']} splits x {protocol['draws']} draws{subset}{kind})"
    return [
        {
            "benchmark": benchmark,
            "method": entry["label"],
            "psnr": entry.get("psnr"),
            "ssim": entry.get("ssim"),
            "lpips": entry.get("lpips"),
            "face_quality": entry.get("face_quality"),
            "identity_distance": entry.get("identity_distance"),
            "identity_verified": entry.get("identity_verified"),
            "command": result.get("command"),
        }
        for entry in result["summary"].values()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--run", type=Path, help="output folder of the train_encoder.py run (default: keep the shipped weights)"
    )
    parser.add_argument(
        "--out", type=Path, default=default_model_path(), help="where to write (default: the package's)"
    )
    parser.add_argument(
        "--evaluation",
        type=Path,
        action="append",
        default=[],
        metavar="RESULTS_JSON",
        help="a dapfsr evaluate report (results.json) of the shipped model, for the card; repeatable",
    )
    parser.add_argument(
        "--start",
        metavar="TEXT",
        help="for a run that continued another model (--init-from): where its starting weights are "
        "kept, e.g. 'facetools_dapfsr/default_model/ at commit 9c7a4a8'; the card then lists both stages",
    )
    parser.add_argument(
        "--start-card",
        type=Path,
        metavar="MODEL_CARD_JSON",
        help="model_card.json of the starting model (for the built-in one: `git show "
        "COMMIT:facetools_dapfsr/default_model/model_card.json`, since this script replaces it)",
    )
    parser.add_argument("--note", metavar="TEXT", help="a sentence appended to the card's training procedure")
    parser.add_argument(
        "--consistency",
        type=json.loads,
        default={},
        metavar="JSON",
        help="ConsistencyConfig fields to change in the shipped model's config, e.g. '{\"refine_steps\": 15}'",
    )
    args = parser.parse_args(argv)

    if args.run is None:
        if not args.evaluation:
            parser.error("without --run there is nothing to change: give the --evaluation reports")
        model = DAPFSR.default()
        model.card_info.metrics = []
    else:
        options = json.loads((args.run / "training_args.json").read_text())
        summary = json.loads((args.run / "summary_rank0.json").read_text())
        model = DAPFSR.from_pretrained(args.run / "model")
        model.card_info = encoder_card_info(
            options, EncoderTrainingArguments().to_dict(), summary.get("data"), summary["samples_seen"]
        )
        if options.get("init_from"):
            if not args.start or not args.start_card:
                parser.error("the run continued another model (--init-from): give --start and --start-card")
            start = ModelCardInfo.from_json_file(args.start_card)
            model.card_info = chained_card_info(start, model.card_info, args.start)
    if args.consistency:
        settings = {**model.config.consistency.to_dict(), **args.consistency}
        model.config.consistency = ConsistencyConfig(**settings)
    if args.note:
        model.card_info.training_procedure += f" {args.note}"
    for path in args.evaluation:
        model.card_info.metrics.extend(evaluation_rows(path))
    out = model.save_pretrained(args.out, dtype=torch.float16)
    size = (out / "model.safetensors").stat().st_size
    print(f"built-in model written to {out} ({size / 2**20:.1f} MiB of weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
