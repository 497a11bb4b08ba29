"""Cost per training sample of each encoder objective, with the built-in model, side by side.

Measures, in one process and one after the other (so the figures share the machine's load):

- ``render pair``: one synthetic (W+, HR face) pair rendered by the prior, forward only
  (what ``dapfsr synthesize`` spends per pair);
- ``code loss``: an encoder step on synthetic pairs (LR made by the degradation model, MSE on
  the normalised codes, backward, Adam), no decoder in the step;
- ``image loss, MSE``: an encoder step through the frozen prior with the pixel loss only;
- ``image loss, MSE + VGG``: the Eq. 5 step of today's recipe (pixel + VGG-19 perceptual);

each as the best of ``--repeats`` timed calls after one warm-up; and the encoder-gradient norm
of each loss term on one batch (code loss at weight 1, pixel MSE at weight 1, perceptual loss at
the recipe's default weight 0.01), which is what a ``--code-weight`` balances. Prints Markdown
tables and writes the record (settings, machine, load) as JSON.

    python benchmarks/encoder_objectives.py --threads 1 --out benchmarks/encoder_objectives-cpu.json [--model DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.data.degradation import degrade
from facetools_dapfsr.data.synthetic import SyntheticPairsConfig, sample_codes
from facetools_dapfsr.evaluation.bench import best_time
from facetools_dapfsr.losses import VGGFeatures, perceptual_loss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--code-batch", type=int, default=48)
    parser.add_argument("--image-batch", type=int, default=8)
    parser.add_argument("--render-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="model folder or Hub id (default: the built-in model)")
    parser.add_argument("--out", type=Path, help="JSON record to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    model = (DAPFSR.default() if args.model is None else DAPFSR.from_pretrained(args.model)).float()
    model.decoder.requires_grad_(False)
    encoder = model.encoder.train().requires_grad_(True)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-5)
    vgg = VGGFeatures.from_weights_cache(progress=False)
    generator = torch.Generator().manual_seed(0)
    w_mean = model.decoder.w_statistics()[0]
    mixing = SyntheticPairsConfig()

    def codes(batch: int) -> torch.Tensor:
        return sample_codes(model.decoder, batch, mixing, generator, w_mean)

    ws = codes(args.code_batch)
    with torch.no_grad():
        hr_code = model.decoder.synthesis(ws).clamp(0, 1)
    lr_code = degrade(hr_code, model.config.lr_size, None, generator)
    hr_image = hr_code[: args.image_batch]
    lr_image = lr_code[: args.image_batch]

    def render() -> None:
        with torch.no_grad():
            model.decoder.synthesis(codes(args.render_batch))

    def code_step() -> None:
        lr = degrade(hr_code, model.config.lr_size, None, generator)
        loss = F.mse_loss(encoder(lr), (ws - model.w_mu) / model.w_sigma)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def image_step(with_vgg: bool) -> None:
        sr = model.decoder.synthesis(model.w_mu + encoder(lr_image) * model.w_sigma)
        loss = F.mse_loss(sr, hr_image)
        if with_vgg:
            loss = loss + 0.01 * perceptual_loss(sr, hr_image, vgg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    rows = [
        ("render pair (prior, forward only)", args.render_batch, best_time(render, args.repeats)),
        ("code loss step (synthetic pairs)", args.code_batch, best_time(code_step, args.repeats)),
        ("image loss step, MSE", args.image_batch, best_time(lambda: image_step(False), args.repeats)),
        ("image loss step, MSE + VGG-19 (Eq. 5)", args.image_batch, best_time(lambda: image_step(True), args.repeats)),
    ]

    def gradient_norm(loss: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss.backward()
        return float(torch.sqrt(sum((p.grad**2).sum() for p in encoder.parameters() if p.grad is not None)))

    sr = model.decoder.synthesis(model.w_mu + encoder(lr_image) * model.w_sigma)
    gradients = {
        "code loss (weight 1)": gradient_norm(F.mse_loss(encoder(lr_code), (ws - model.w_mu) / model.w_sigma)),
        "pixel MSE (weight 1)": gradient_norm(F.mse_loss(sr, hr_image)),
        "VGG-19 perceptual (weight 0.01)": gradient_norm(
            0.01
            * perceptual_loss(model.decoder.synthesis(model.w_mu + encoder(lr_image) * model.w_sigma), hr_image, vgg)
        ),
    }
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "model": args.model or "built-in",
        "gradient_norms": gradients,
        "rows": [
            {"what": what, "batch": batch, "seconds_per_call": seconds, "ms_per_sample": 1000 * seconds / batch,
             "samples_per_second": batch / seconds}
            for what, batch, seconds in rows
        ],
    }  # fmt: skip
    print(f"{record['machine']}, torch {record['torch']}, {args.threads} thread(s), load {load_before[0]:.2f}")
    print("| what | batch | ms / sample | samples/s |\n|---|---:|---:|---:|")
    for row in record["rows"]:
        print(f"| {row['what']} | {row['batch']} | {row['ms_per_sample']:.1f} | {row['samples_per_second']:.1f} |")
    print("\n| loss term | encoder gradient norm |\n|---|---:|")
    for what, norm in gradients.items():
        print(f"| {what} | {norm:.4f} |")
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
