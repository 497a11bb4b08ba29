"""Synthetic (W+, HR) pairs: seeded, resumable generation; the code-loss recipe on the real prior."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.config import EncoderConfig, MobileStyleGANConfig
from facetools_dapfsr.data.synthetic import (
    SyntheticPairs,
    SyntheticPairsConfig,
    SyntheticPairsError,
    generate_synthetic_pairs,
    sample_codes,
)
from facetools_dapfsr.training.pairs import SyntheticDegradedPairs

REPO = Path(__file__).resolve().parents[1]


def tiny_decoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return DAPFSR(DAPFSRConfig.tiny()).decoder.eval()


def test_style_mixing_switches_codes_at_one_slot() -> None:
    decoder = tiny_decoder()
    config = SyntheticPairsConfig(num_pairs=64, mixing_probability=1.0)
    mean = decoder.w_statistics(num_samples=256)[0]
    ws = sample_codes(decoder, 64, config, torch.Generator().manual_seed(0), mean)
    assert ws.shape == (64, decoder.num_ws, decoder.w_dim)
    # Every code is two runs of identical slots: one switch, at a slot in 1..num_ws-1.
    switches = (ws[:, 1:] != ws[:, :-1]).any(-1).sum(1)
    assert switches.eq(1).all()
    unmixed = sample_codes(decoder, 8, SyntheticPairsConfig(mixing_probability=0.0), torch.Generator(), mean)
    assert (unmixed == unmixed[:, :1]).all()


def test_generation_is_seeded_resumable_and_checked(tmp_path: Path) -> None:
    decoder = tiny_decoder()
    config = SyntheticPairsConfig(num_pairs=10, shard_size=4, seed=3, render_batch_size=3)
    out = generate_synthetic_pairs(decoder, tmp_path / "pairs", config, show_progress=False)
    pairs = SyntheticPairs.load(out)
    assert len(pairs) == 10
    ws, hr = pairs[9]
    assert ws.shape == (decoder.num_ws, decoder.w_dim) and ws.dtype == torch.float32
    assert hr.shape == (3, 32, 32) and 0.0 <= hr.min() and hr.max() <= 1.0
    # The stored face is the decoder's render of the stored (fp16) code.
    with torch.no_grad():
        rendered = decoder.synthesis(ws[None]).clamp(0, 1)[0]
    assert (rendered - hr).abs().max() < 0.02
    metadata = json.loads((out / "synthetic_pairs.json").read_text())
    assert metadata["settings"]["seed"] == 3 and metadata["shards_written"] == 3

    # An interrupted run (a shard missing, a partial folder left) is refused, then resumed to
    # exactly the pairs of the uninterrupted run.
    before = [pairs[i] for i in range(10)]
    shutil.rmtree(out / "shard_00001")
    (out / ".partial-shard_00001").mkdir()
    with pytest.raises(SyntheticPairsError, match="incomplete"):
        SyntheticPairs.load(out)
    generate_synthetic_pairs(decoder, out, config, show_progress=False)
    after = SyntheticPairs.load(out)
    for (ws_a, hr_a), index in zip(before, range(10), strict=False):
        ws_b, hr_b = after[index]
        assert torch.equal(ws_a, ws_b) and torch.equal(hr_a, hr_b)
    assert not (out / ".partial-shard_00001").exists()

    # Other settings into the same folder: refused, nothing overwritten.
    with pytest.raises(SyntheticPairsError, match="other settings"):
        generate_synthetic_pairs(
            decoder, out, SyntheticPairsConfig(num_pairs=10, shard_size=4, seed=4), show_progress=False
        )
    # Pairs from another decoder do not train this model.
    other = DAPFSR(DAPFSRConfig.prior())
    with pytest.raises(SyntheticPairsError, match="rendered by"):
        after.check_decoder(other.decoder)
    with pytest.raises(SyntheticPairsError, match="no synthetic_pairs.json"):
        SyntheticPairs.load(tmp_path)


def test_synthetic_lr_is_made_anew_per_stream_position(tmp_path: Path) -> None:
    decoder = tiny_decoder()
    out = generate_synthetic_pairs(decoder, tmp_path / "p", SyntheticPairsConfig(num_pairs=2), show_progress=False)
    from facetools_dapfsr.data.degradation import DegradationConfig

    pairs = SyntheticDegradedPairs(SyntheticPairs.load(out), 8, DegradationConfig(), seed=0)
    lr_a, hr_a, ws_a, index = pairs[(1, 5)]
    lr_b, hr_b, _, _ = pairs[(1, 5)]
    lr_c, hr_c, _, _ = pairs[(1, 7)]
    assert index == 1 and lr_a.shape == (3, 8, 8)
    assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_c)
    assert not torch.equal(lr_a, lr_c)  # another epoch, another misalignment


@pytest.mark.slow
def test_code_loss_falls_on_pairs_from_the_real_prior(weights_cache: Path, tmp_path: Path) -> None:
    """A tiny encoder on the real FFHQ prior: `dapfsr synthesize`, then the recipe on the pairs."""
    config = DAPFSRConfig(
        lr_size=16,
        encoder=EncoderConfig(depth=18, base_width=8, input_size=32, pyramid_channels=16, ale_hidden=16, istn_hidden=8),
        decoder=MobileStyleGANConfig(resolution=64, render_size=256),
    )
    config_path = tmp_path / "config.json"
    config_path.write_text(config.to_json_string())
    model_dir = tmp_path / "model"
    DAPFSR(config).save_pretrained(model_dir)  # the decoder's weights come from the cache
    env = dict(os.environ, DAPFSR_CACHE=str(weights_cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    pairs = tmp_path / "pairs"
    subprocess.run(
        [sys.executable, "-m", "facetools_dapfsr.cli.main", "synthesize", "--model", str(model_dir), "--out", str(pairs),
         "--num-pairs", "16", "--shard-size", "8", "--device", "cpu", "--no-progress"],
        env=env, check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert len(SyntheticPairs.load(pairs)) == 16
    output = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "train_encoder.py"), "--config", str(config_path),
         "--synthetic-data", str(pairs), "--synthetic-batch-size", "16", "--max-steps", "150", "--learning-rate", "1e-3",
         "--log-every", "15", "--validation-size", "0", "--checkpoint-every", "0", "--output-dir", str(output),
         "--report-to", "none"],
        env=env, capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    logged = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    code = [row["train/code"] for row in logged if "train/code" in row]
    assert len(code) == 10
    assert code[-1] < 0.8 * code[0], code
    assert "Synthetic (W+, face) pairs" in (output / "model" / "README.md").read_text()
