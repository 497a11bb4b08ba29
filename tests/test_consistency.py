"""LR consistency (models/consistency.py): registration, back-projection, config, and the gain
on real faces through the built-in model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.config import ConsistencyConfig, DAPFSRConfig
from facetools_dapfsr.data.degradation import (
    DegradationConfig,
    downsample,
    gaussian_blur,
    misalign,
    random_affine,
)
from facetools_dapfsr.data.faces import AlignedFaces
from facetools_dapfsr.metrics import LPIPS
from facetools_dapfsr.metrics.image import psnr
from facetools_dapfsr.models.consistency import (
    enforce_consistency,
    invert_similarity,
    project,
    refine_codes,
    register,
)
from facetools_dapfsr.training.pairs import ValidationPairs

REPO_ROOT = Path(__file__).resolve().parents[1]


def _astronaut_face() -> torch.Tensor:
    """The sample photo's face region at 128 px: real image structure, no data folder needed."""
    image = Image.open(REPO_ROOT / "examples" / "astronaut.png").convert("RGB")
    width, height = image.size
    crop = image.crop((int(0.3 * width), int(0.05 * height), int(0.7 * width), int(0.45 * height)))
    pixels = torch.from_numpy(np.asarray(crop.resize((128, 128), Image.BICUBIC)).copy())
    return pixels.permute(2, 0, 1).float().unsqueeze(0) / 255


def _mismatch(output: torch.Tensor, lr: torch.Tensor, theta: torch.Tensor) -> float:
    return (downsample(misalign(output, theta), lr.shape[-1]) - lr).abs().mean().item()


def test_register_recovers_the_protocol_misalignment() -> None:
    face = _astronaut_face().expand(4, -1, -1, -1).contiguous()
    theta = random_affine(4, DegradationConfig(), torch.Generator().manual_seed(3))
    lr = downsample(misalign(face, theta), 16)
    found = register(face, lr, ConsistencyConfig())
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    error, baseline = (found - theta).abs().mean().item(), (identity - theta).abs().mean().item()
    assert error < 0.25 * baseline, f"registration error {error:.4f}, identity's {baseline:.4f}"
    assert torch.allclose(invert_similarity(invert_similarity(theta)), theta, atol=1e-5)


def test_projection_makes_the_output_agree_with_its_lr() -> None:
    face = _astronaut_face()
    theta = random_affine(1, DegradationConfig(), torch.Generator().manual_seed(5))
    lr = downsample(misalign(face, theta), 16)
    wrong = (0.6 * face + 0.25).flip(-1)  # another face, another tone
    before = _mismatch(wrong, lr, theta)
    after = _mismatch(project(wrong, lr, theta, ConsistencyConfig(projection_steps=3)), lr, theta)
    assert after < 0.2 * before, f"LR mismatch {before:.4f} -> {after:.4f}"
    half = project(wrong, lr, theta, ConsistencyConfig(weight=0.5, detail_weight=0.5))
    assert _mismatch(half, lr, theta) > after  # a partial weight leaves part of the residual
    assert torch.equal(enforce_consistency(wrong, lr, ConsistencyConfig(enabled=False)), wrong)


def test_the_residual_split_puts_back_the_coarse_part_whole() -> None:
    face = _astronaut_face()
    theta = random_affine(1, DegradationConfig(), torch.Generator().manual_seed(5))
    lr = downsample(misalign(face, theta), 16)
    wrong = (0.6 * face + 0.25).flip(-1)
    undivided = project(wrong, lr, theta, ConsistencyConfig())  # the default: no split
    assert torch.equal(undivided, project(wrong, lr, theta, ConsistencyConfig(detail_scale=0.0)))
    split = project(wrong, lr, theta, ConsistencyConfig(detail_weight=0.5))
    coarse_only = project(wrong, lr, theta, ConsistencyConfig(detail_weight=0.0))
    mismatches = [_mismatch(x, lr, theta) for x in (undivided, split, coarse_only, wrong)]
    assert mismatches == sorted(mismatches), mismatches

    def coarse_mismatch(output: torch.Tensor) -> float:
        residual = downsample(misalign(output, theta), 16) - lr
        return gaussian_blur(residual, 2.0).abs().mean().item()

    # The coarse part (tone, where the features are) is corrected with half the detail too (not
    # to zero: a Gaussian is not a projector, the blurred fine part keeps a little of it).
    assert coarse_mismatch(split) < 0.25 * coarse_mismatch(wrong)


def test_config_is_saved_with_the_model_and_checked() -> None:
    config = DAPFSRConfig.tiny()
    config.consistency = ConsistencyConfig(weight=0.5, registration_start_degrees=(0,))
    loaded = DAPFSRConfig.from_dict(config.to_dict())
    assert loaded.consistency == config.consistency
    old = config.to_dict()
    del old["consistency"]  # a config saved before the field existed
    assert DAPFSRConfig.from_dict(old).consistency == ConsistencyConfig()
    with pytest.raises(ValueError, match="weight"):
        ConsistencyConfig(weight=1.5)
    with pytest.raises(ValueError, match="detail_weight"):
        ConsistencyConfig(detail_weight=-0.1)
    with pytest.raises(ValueError, match="detail_scale"):
        ConsistencyConfig(detail_scale=0.5)
    bad = config.to_dict()
    bad["consistency"]["registration_start_degrees"] = ["0"]
    with pytest.raises(ValueError, match="registration_start_degrees.*list of numbers"):
        DAPFSRConfig.from_dict(bad)


def test_upscale_takes_the_config_or_an_override() -> None:
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    lr = torch.rand(2, 3, 16, 16)
    raw = model.upscale(lr, consistency=False)
    with torch.no_grad():
        assert torch.allclose(raw, model(lr).clamp(0, 1))
    consistent = model.upscale(lr)
    assert consistent.shape == raw.shape and not torch.allclose(consistent, raw)
    model.config.consistency = ConsistencyConfig(enabled=False)
    assert torch.equal(model.upscale(lr), raw)
    assert torch.equal(model.upscale(lr, consistency=True), consistent)


@pytest.mark.usefixtures("weights_cache")
def test_consistency_gains_on_real_faces_with_the_builtin_model(data_dir) -> None:
    """Gate on real held-out faces: the step is worth its place in the default (measured at
    scale by ``dapfsr evaluate --methods source-only,source-only-raw``)."""
    faces = AlignedFaces.prepare(str(data_dir / "celeba" / "test"), size=128, max_images=16)
    pairs = ValidationPairs(faces, 16, DegradationConfig(), seed=7, size=16)
    lr = torch.stack([pairs[i][0] for i in range(len(pairs))])
    hr = torch.stack([pairs[i][1] for i in range(len(pairs))])
    model = DAPFSR.default()
    raw, consistent = model.upscale(lr, consistency=False), model.upscale(lr)
    lpips = LPIPS.from_weights_cache("vgg", progress=False)
    with torch.no_grad():
        gain = psnr(consistent, hr).mean().item() - psnr(raw, hr).mean().item()
        lpips_raw, lpips_consistent = lpips(raw, hr).mean().item(), lpips(consistent, hr).mean().item()
    assert gain > 1.5, f"PSNR gain {gain:.2f} dB"
    assert lpips_consistent < lpips_raw, f"LPIPS {lpips_raw:.3f} -> {lpips_consistent:.3f}"
    # 512 px renders get the same step (the pipeline renders larger faces at larger sizes).
    big = model.upscale(lr[:2], size=512)
    assert big.shape[-1] == 512
    small = F.interpolate(big, size=(128, 128), mode="bilinear", antialias=True, align_corners=False)
    assert psnr(small, hr[:2]).mean().item() > psnr(raw[:2], hr[:2]).mean().item()


@pytest.mark.usefixtures("weights_cache")
def test_code_refinement_brings_the_prior_face_to_its_lr(data_dir) -> None:
    """refine_steps moves the code so that the prior's own face, downsampled, matches the LR
    better; the model's parameters collect no gradient, and it runs under inference_mode."""
    faces = AlignedFaces.prepare(str(data_dir / "celeba" / "test"), size=128, max_images=8)
    pairs = ValidationPairs(faces, 16, DegradationConfig(), seed=7, size=6)
    lr = torch.stack([pairs[i][0] for i in range(len(pairs))])
    model = DAPFSR.default()
    config = ConsistencyConfig(refine_steps=10)
    with torch.no_grad():
        ws = model.encode(lr)
        before = model.decoder.render(ws).clamp(0, 1)
    theta = register(before, lr, config)
    refined_ws = refine_codes(model.decoder.render, ws, lr, theta, model.w_sigma, config)
    with torch.no_grad():
        after = model.decoder.render(refined_ws).clamp(0, 1)

    def mismatch(face: torch.Tensor) -> float:
        return (downsample(misalign(face, theta), 16) - lr).pow(2).mean().item()

    assert mismatch(after) < 0.8 * mismatch(before), (mismatch(before), mismatch(after))
    assert torch.equal(refined_ws[:, config.refine_slots :], ws[:, config.refine_slots :])  # fine slots kept
    assert all(p.grad is None for p in model.parameters())
    with torch.inference_mode():
        refined = model.upscale(lr[:2], consistency=config)
    assert refined.shape == (2, 3, 128, 128) and 0 <= refined.min() and refined.max() <= 1
    assert not torch.allclose(refined, model.upscale(lr[:2]))
