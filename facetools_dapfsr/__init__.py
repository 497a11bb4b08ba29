"""facetools-dapfsr: DAP-FSR face super-resolution with one-shot domain adaptation (DAMMA)."""

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("facetools-dapfsr")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from facetools_dapfsr.config import DAPFSRConfig, EncoderConfig, StyleGAN2Config
from facetools_dapfsr.models.dapfsr import DAPFSR

# The photo pipeline (detector, Pillow, pluggy) loads on first use, so that code that only needs
# the model does not pay for it.
_LAZY = {"Enhanced": "facetools_dapfsr.pipeline.upscaler", "FaceUpscaler": "facetools_dapfsr.pipeline.upscaler"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facetools_dapfsr' has no attribute {name!r}")


__all__ = ["DAPFSR", "DAPFSRConfig", "EncoderConfig", "Enhanced", "FaceUpscaler", "StyleGAN2Config", "__version__"]
