"""facetools-dapfsr: DAP-FSR face super-resolution with one-shot domain adaptation (DAMMA)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("facetools-dapfsr")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from facetools_dapfsr.config import DAPFSRConfig, EncoderConfig, StyleGAN2Config
from facetools_dapfsr.models.dapfsr import DAPFSR

__all__ = ["DAPFSR", "DAPFSRConfig", "EncoderConfig", "StyleGAN2Config", "__version__"]
