"""The compared methods on a tiny random model, the evaluation run and its report, the CLI.

Quality numbers of a random model mean nothing; these tests check what each method does to the
model and the data, that runs are reproducible, and what the report holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.adaptation.damma import DAMMAConfig
from facetools_dapfsr.cli.main import main
from facetools_dapfsr.evaluation import (
    METHODS,
    Domain,
    ProtocolConfig,
    build_methods,
    evaluate,
    write_report,
)
from facetools_dapfsr.evaluation.adain import StyleTransfer
from facetools_dapfsr.evaluation.baselines import (
    PULSE,
    AdaINAugment,
    AdaINConfig,
    Bicubic,
    DirectFineTune,
    Exemplar,
    FineTuneConfig,
    PULSEConfig,
    SourceOnly,
    SourceOnlyRaw,
    pulse_restore,
)
from facetools_dapfsr.evaluation.report import grid_image, markdown_table
from facetools_dapfsr.evaluation.runner import EvaluationSettings, Scorer
from facetools_dapfsr.losses import VGGFeatures


@pytest.fixture(scope="module")
def model() -> DAPFSR:
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    model.refresh_latent_statistics(num_samples=500)
    return model


@pytest.fixture(scope="module")
def model_dir(model: DAPFSR, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save_pretrained(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def vgg(weights_cache: Path) -> VGGFeatures:
    return VGGFeatures.from_weights_cache(progress=False)


@pytest.fixture(scope="module")
def yaleb(yaleb_subset: Path, weights_cache: Path) -> Domain:
    return Domain.from_folder(yaleb_subset)


@pytest.fixture(scope="module")
def exemplar(yaleb: Domain) -> Exemplar:
    hr, _ = yaleb.load(0, 32)
    return Exemplar(hr=hr[None], lr=F.interpolate(hr[None], size=(16, 16), mode="area"))


def _state(model: DAPFSR) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _lr(seed: int = 0, batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_methods_are_selectable_by_name() -> None:
    assert set(METHODS) == {"bicubic", "source-only", "source-only-raw", "pulse", "finetune", "adain", "damma"}
    assert [m.name for m in build_methods(["damma", "bicubic"])] == ["damma", "bicubic"]
    with pytest.raises(ValueError, match="unknown method"):
        build_methods(["bicubic", "esrgan"])
    with pytest.raises(ValueError, match="twice"):
        build_methods(["bicubic", "bicubic"])


def test_bicubic_and_source_only(model: DAPFSR) -> None:
    lr = _lr()
    with Bicubic().adapted(model, None) as restore:
        out = restore(lr)
    assert out.shape == (3, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(out.mean(dim=(1, 2, 3)), lr.mean(dim=(1, 2, 3)), atol=0.02)
    with SourceOnly().adapted(model, None) as restore:
        assert torch.equal(restore(lr), model.upscale(lr))
    with SourceOnlyRaw().adapted(model, None) as restore:
        assert torch.equal(restore(lr), model.upscale(lr, consistency=False))


def test_pulse_fits_the_lr_and_leaves_the_model_alone(model: DAPFSR) -> None:
    before = _state(model)
    lr = model.upscale(_lr(1, 2))  # a face the decoder can render, seen at LR
    lr = F.interpolate(lr, size=(16, 16), mode="bicubic", antialias=True).clamp(0, 1)

    def fit(steps: int) -> float:
        out = pulse_restore(model, lr, PULSEConfig(steps=steps))
        return F.mse_loss(F.interpolate(out, size=(16, 16), mode="bicubic", antialias=True), lr).item()

    # the tiny random decoder first overshoots (Adam at lr 0.1), then fits: compare at the default budget
    assert fit(PULSEConfig.steps) < 0.7 * fit(0)
    # the faces of a batch are optimised independently
    one = pulse_restore(model, lr[:1], PULSEConfig(steps=3))
    assert torch.allclose(one, pulse_restore(model, lr, PULSEConfig(steps=3))[:1], atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert PULSE().uses_exemplar is False


def test_direct_finetuning_changes_the_output_not_the_model(model: DAPFSR, exemplar: Exemplar, vgg) -> None:
    before = _state(model)
    lr = _lr(2)
    method = DirectFineTune(FineTuneConfig(steps=3, learning_rate=1e-2, batch_size=2), vgg=vgg)
    with method.adapted(model, exemplar) as restore:
        tuned = restore(lr)
    assert not torch.allclose(tuned, model.upscale(lr))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with method.adapted(model, exemplar) as restore:
        assert torch.equal(restore(lr), tuned)  # seeded: the same exemplar gives the same result


def test_adain_style_transfer_and_constrained_finetuning(model: DAPFSR, exemplar: Exemplar, vgg, yaleb) -> None:
    transfer = StyleTransfer.from_weights_cache(encoder=vgg)
    content = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    stylised = transfer(content, exemplar.hr)
    assert stylised.shape == (2, 3, 32, 32)

    # the style transfer moves the colour statistics towards the grey exemplar's
    def spread(x: torch.Tensor) -> float:
        return (x - x.mean(1, keepdim=True)).abs().mean().item()

    assert spread(stylised) < spread(content)
    before = _state(model)
    method = AdaINAugment(AdaINConfig(steps=2, batch_size=2, learning_rate=0.05), source_faces=content, vgg=vgg)
    lr = _lr(4)
    with method.adapted(model, exemplar) as restore:
        adapted = restore(lr)
    assert not torch.allclose(adapted, model.upscale(lr))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="source"), AdaINAugment().adapted(model, exemplar):
        pass


def test_evaluation_is_reproducible_and_damma_is_removed_after_each_draw(model: DAPFSR, yaleb: Domain, vgg) -> None:
    protocol = ProtocolConfig(splits=2, draws=2, seed=0, max_eval_images=3)
    settings = EvaluationSettings(batch_size=4, grid_images=2)
    scorer = Scorer(grey=True)  # PSNR/SSIM only: fast

    def run():
        methods = build_methods(
            ["bicubic", "source-only", "damma"],
            damma=DAMMAConfig(max_steps=1, batch_size=2, window=1),
            vgg=vgg,
        )
        return evaluate(model, yaleb, methods, scorer, protocol, settings, show_progress=False)

    first = run()
    assert model.adapter_names == [] and model.active_adapter is None
    second = run()
    for name in ("bicubic", "source-only", "damma"):
        assert first.summary[name]["psnr"] == second.summary[name]["psnr"]
        assert first.summary[name]["ssim"] == second.summary[name]["ssim"]
        assert first.summary[name]["lpips"] is None
    assert len(first.draws) == 4
    assert all(r["evaluated"] == 3 for r in first.draws)
    # exemplar-free methods run once per face, DAMMA once per draw
    assert first.summary["bicubic"]["adaptations"] == 0
    assert first.summary["damma"]["adaptations"] == 4
    assert first.summary["damma"]["faces_restored"] == 12
    assert first.grid is not None and list(first.grid.outputs) == ["bicubic", "source-only", "damma"]


def test_report_files(model: DAPFSR, yaleb: Domain, tmp_path: Path) -> None:
    methods = build_methods(["bicubic", "source-only"])
    result = evaluate(
        model,
        yaleb,
        methods,
        Scorer(grey=True),
        ProtocolConfig(splits=2, draws=1, max_eval_images=2),
        EvaluationSettings(grid_images=2),
        show_progress=False,
    )
    paths = write_report(result, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert set(data["summary"]) == {"bicubic", "source-only"}
    assert data["protocol"]["splits"] == 2 and data["metrics"]["psnr_ssim_on"].startswith("luma")
    assert 0 <= data["padded_fraction"] < 0.1
    assert "machine" in data and "date" in data
    table = paths["markdown"].read_text()
    assert "| Bicubic |" in table and "| DAP-FSR (source only) |" in table
    assert table == markdown_table(data)
    from PIL import Image

    with Image.open(paths["grid"]) as grid:
        # 2 faces; LR | bicubic | source-only | HR, 32 px tiles with 2 px gaps
        assert grid.size == (4 * 32 + 3 * 2, 2 * 32 + 2)
    assert "LR" in paths["grid_columns"].read_text()
    image = grid_image(result.grid)
    assert image.shape == (3, 66, 134)


def test_evaluate_cli(model_dir: Path, yaleb_subset: Path, weights_cache: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    code = main(
        [
            "evaluate", "--target", str(yaleb_subset), "--model", str(model_dir), "--out", str(out),
            "--splits", "2", "--draws", "1", "--max-eval", "2", "--methods", "bicubic,source-only,damma",
            "--damma-steps", "1", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| DAP-FSR + DAMMA (ours) |" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["summary"]["damma"]["settings"]["max_steps"] == 1
    assert data["summary"]["bicubic"]["lpips"] is not None and data["summary"]["bicubic"]["face_quality"] is not None
    # The identity metric is on whenever dlib (the identity extra, part of the test extra) is there.
    bicubic = data["summary"]["bicubic"]
    assert 0.0 < bicubic["identity_distance"] < 2.0 and 0.0 <= bicubic["identity_verified"] <= 1.0
    assert data["metrics"]["identity"].startswith("dlib ResNet descriptor")
    assert 0.0 < data["hr_face_quality"] < 1.5 and "Face quality of the HR faces" in printed
    assert "Identity distance" in printed
    assert data["model"]["id"] == str(model_dir)
    assert (out / "grid.png").is_file()
    # adain without source faces: one clear error line
    code = main(
        ["evaluate", "--target", str(yaleb_subset), "--model", str(model_dir), "--out", str(out), "--methods", "adain"]
    )
    assert code == 2
    assert "--source" in capsys.readouterr().err
