"""Configuration of the detect -> upscale pipeline (plain dataclasses)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

# The options of the built-in ``mtcnn`` detector belong to the landmark service that runs it;
# the pipeline's configuration holds them as ``PipelineConfig.mtcnn``.
from facetools_dapfsr.data.landmarks import MTCNNOptions


@dataclass
class PasteOptions:
    """Blending of the super-resolved faces into the upscaled photo (built-in ``paste``)."""

    feather: float = 0.2
    """Width of the soft edge of the blending mask, as a fraction of the face crop's half side."""
    exponent: float = 4.0
    """Shape of the mask: 2 is an ellipse, larger values approach the full square crop."""
    consistency: bool = True
    """Keep the photo's own content in every band the photo resolves: the restored face
    contributes only detail finer than one input pixel (its coarse band is replaced by the
    resampled photo's). Off: the restored face is pasted as rendered."""


@dataclass
class RealESRGANOptions:
    """Tiling of the ``realesrgan`` background stage (:mod:`facetools_dapfsr.pipeline.background`)."""

    tile: int = 192
    """Side of a tile, in input pixels. Memory grows with its square (the process peaked at
    1.6 GB with 192 on the CPU, ``benchmarks/background.py``); larger tiles waste less on the
    overlap."""
    overlap: int = 16
    """Input pixels of context run on each side of a tile and then dropped, so that the tiles
    join without seams."""

    def __post_init__(self) -> None:
        if self.tile < 8:
            raise ValueError(f"realesrgan tile must be at least 8 pixels, got {self.tile}")
        if self.overlap < 0:
            raise ValueError(f"realesrgan overlap must be 0 or more, got {self.overlap}")


REPLACE_MODES = ("sharper", "always")


@dataclass
class PathOptions:
    """Which faces are replaced and at what size (the rule is :mod:`facetools_dapfsr.pipeline.routing`)."""

    max_face_size: float = 32.0
    """Largest aligned-crop side, in input-photo pixels, of a face that is super-resolved; larger
    faces keep the resampled photo. The model sees every face at 16 px; with the consistency
    step the restored face beats resampling on PSNR and LPIPS up to 24 px, is 0.35 dB below it
    and still better on LPIPS at 32 px, and worse on both from 48 px (``benchmarks/face_size.py``,
    figures in ``benchmarks/RESULTS.md``)."""
    replace: str = "sharper"
    """``"sharper"``: paste a restored face only where it is sharper than the resampled photo;
    ``"always"``: paste every restored face."""

    def __post_init__(self) -> None:
        if self.max_face_size <= 0:
            raise ValueError(f"max_face_size must be positive, got {self.max_face_size}")
        check_replace(self.replace)


DEFAULT_MAX_OUTPUT_MEGAPIXELS = 256.0
"""Output budget of a photo: 256 MP is 768 MB as the 8-bit composite (1.5 GB as the 16-bit one of
a 16-bit grey photo), and the float buffers of the background stage are bounded by its tiles, so
this keeps one photo's memory near 1 GB (2 GB at 16 bits)."""


@dataclass
class PipelineConfig:
    """Which stages run (by registered name) and the settings they share."""

    detector: str = "mtcnn"
    aligner: str = "template"
    super_resolver: str = "dapfsr"
    post_processors: tuple[str, ...] = ("paste",)
    background: str = "bicubic"
    """How the whole photo is upscaled under the faces (a ``background`` stage by name):
    ``bicubic``, or ``realesrgan`` (Real-ESRGAN x4plus; slow on a CPU, see
    ``benchmarks/RESULTS.md``)."""

    scale: float = 4.0
    """Upscaling factor of the whole photo (the background is resampled, faces replaced)."""
    max_output_megapixels: float | None = DEFAULT_MAX_OUTPUT_MEGAPIXELS
    """Refuse a photo whose output (input x scale squared) would have more megapixels than
    this, before any work; None: no bound."""
    min_face_size: float = 10.0
    """Smallest face height, in pixels of the input photo, that the detector looks for."""
    device: str = "cpu"
    batch_size: int = 32
    """Faces super-resolved per forward pass."""

    model: str | os.PathLike[str] | Any | None = None
    """The super-resolution model: a local folder or Hub id for ``DAPFSR.from_pretrained``, or
    an already built ``DAPFSR`` instance."""
    revision: str | None = None
    adapter: str | os.PathLike[str] | None = None

    fidelity: float = 1.0
    """Weight of the restored face against the resampled photo under it, in ``[0, 1]``
    (CodeFormer's ``w``, GFPGAN's ``weight``): 1 pastes the restored face, 0 keeps the photo."""

    mtcnn: MTCNNOptions = field(default_factory=MTCNNOptions)
    paste: PasteOptions = field(default_factory=PasteOptions)
    paths: PathOptions = field(default_factory=PathOptions)
    realesrgan: RealESRGANOptions = field(default_factory=RealESRGANOptions)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Free-form options for third-party stages, keyed by stage name."""

    def __post_init__(self) -> None:
        self.post_processors = tuple(self.post_processors)
        check_scale(self.scale)
        if self.max_output_megapixels is not None and self.max_output_megapixels <= 0:
            raise ValueError(f"max_output_megapixels must be positive, got {self.max_output_megapixels}")
        if self.min_face_size <= 0:
            raise ValueError(f"min_face_size must be positive, got {self.min_face_size}")
        check_fidelity(self.fidelity)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


def check_scale(scale: float) -> float:
    """``scale`` as a positive float, or a ValueError."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return float(scale)


def check_replace(replace: str) -> str:
    """``replace`` if it is one of :data:`REPLACE_MODES`, else a ValueError."""
    if replace not in REPLACE_MODES:
        raise ValueError(f"replace must be one of {', '.join(REPLACE_MODES)}, got {replace!r}")
    return replace


def check_fidelity(fidelity: float) -> float:
    """``fidelity`` as a float in ``[0, 1]``, or a ValueError saying what it must be."""
    if not isinstance(fidelity, (int, float)) or not 0.0 <= float(fidelity) <= 1.0:
        raise ValueError(f"fidelity must be a number in [0, 1], got {fidelity!r}")
    return float(fidelity)
