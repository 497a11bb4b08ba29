"""``dapfsr bench`` on the tiny configuration: every figure is present, positive and recorded
with its machine; the PULSE-style ratio is consistent with the timings it is made of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.cli.main import main
from facetools_dapfsr.evaluation.bench import BenchConfig, run_benchmark

FAST = BenchConfig(batch_sizes=(1, 4), min_seconds=0.05, max_iterations=3, pulse_timed_steps=2, damma_timed_steps=1)


def test_run_benchmark_tiny(weights_cache: Path) -> None:
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny())
    record = run_benchmark(model, FAST, device="cpu")
    assert [row["batch_size"] for row in record["feed_forward"]] == [1, 4]
    assert all(row["faces_per_second"] > 0 and row["iterations"] >= 1 for row in record["feed_forward"])
    pulse = record["pulse"]
    assert pulse["steps"] == 100 and pulse["timed_steps"] == 2
    assert pulse["seconds_per_face"] == pytest.approx(100 * pulse["seconds_per_step"])
    ratio = record["pulse_over_feed_forward"]
    assert ratio["batch_1"] == pytest.approx(pulse["seconds_per_face"] * record["feed_forward"][0]["faces_per_second"])
    damma = record["damma"]
    assert damma["timed_steps"] == 1 and damma["seconds"] == pytest.approx(300 * damma["seconds_per_step"])
    assert record["peak_memory"]["mb"] > 0 and record["peak_memory"]["kind"] == "process_peak_rss"
    assert record["machine"]["device"] == "cpu" and record["machine"]["torch"] == torch.__version__
    assert record["model"]["parameters"]["decoder"] > 0
    json.dumps(record)  # JSON-ready


def test_bench_cli(weights_cache: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench", "--preset", "tiny", "--out", str(out), "--batch-sizes", "1", "2", "--min-seconds", "0.05",
            "--pulse-timed-steps", "1", "--no-damma",
        ]
    )  # fmt: skip
    assert code == 0
    record = json.loads(out.read_text())
    assert record["model"]["id"].startswith("preset:tiny")
    assert "damma" not in record and "pulse" in record
    assert "faces/s" in capsys.readouterr().out


def test_retain_freed_memory_is_an_opt_out_allocator_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import sys

    from facetools_dapfsr import allocator

    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setenv(allocator.ENV, "0")
    assert allocator.retain_freed_memory() is False
    monkeypatch.delenv(allocator.ENV)
    try:
        glibc = sys.platform.startswith("linux") and bool(ctypes.CDLL("libc.so.6").gnu_get_libc_version)
    except (OSError, AttributeError):
        glibc = False
    assert allocator.retain_freed_memory() is glibc
    assert allocator.retain_freed_memory() is glibc  # idempotent
    # Memory still comes back to Python and torch as usual.
    assert float(torch.ones(64 * 2**20 // 4).sum()) == 64 * 2**20 // 4
