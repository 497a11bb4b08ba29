"""Evaluation metrics: PSNR/SSIM (pixels), LPIPS (perceptual), face quality (no-reference).

All take images in ``[0, 1]``, batch-first ``[B, C, H, W]``, and return one value per image.
"""

from facetools_dapfsr.metrics.face_quality import FaceQuality
from facetools_dapfsr.metrics.image import psnr, ssim, to_grey
from facetools_dapfsr.metrics.lpips import LPIPS

__all__ = ["LPIPS", "FaceQuality", "psnr", "ssim", "to_grey"]
