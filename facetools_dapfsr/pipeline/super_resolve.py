"""The built-in ``dapfsr`` super-resolution stage: all faces of a photo, in batches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from facetools_dapfsr.pipeline.config import PipelineConfig


def load_model(
    model: str | os.PathLike[str] | Any | None,
    revision: str | None = None,
    adapter: str | os.PathLike[str] | None = None,
) -> Any:
    """A ready ``DAPFSR``: ``model`` is a folder / Hub id, a built model, or ``None`` (the default)."""
    from facetools_dapfsr import DAPFSR

    if model is None:
        model = DAPFSR.default()
    elif isinstance(model, (str, os.PathLike)):
        model = DAPFSR.from_pretrained(model if isinstance(model, str) else Path(model), revision=revision)
    if adapter is not None:
        model.load_adapter(adapter if isinstance(adapter, str) else Path(adapter))
    return model


class DAPFSRSuperResolver:
    """Wraps a ``DAPFSR`` model: ``[N, 3, lr, lr]`` -> ``[N, 3, hr, hr]`` in chunks of ``batch_size``."""

    def __init__(
        self, model: Any, batch_size: int = 32, device: str | torch.device = "cpu", consistency: bool | None = None
    ) -> None:
        """``consistency``: passed to ``DAPFSR.upscale`` (``None``: the model's own setting)."""
        self.model = model
        self.consistency = consistency
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.lr_size = int(model.config.lr_size)
        self.hr_size = int(model.config.hr_size)
        self.output_sizes = tuple(int(size) for size in model.output_sizes)
        self._prepared = False

    @classmethod
    def from_config(cls, config: PipelineConfig) -> DAPFSRSuperResolver:
        model = load_model(config.model, revision=config.revision, adapter=config.adapter)
        # With the paste stage's consistency on (the default), the face is made to agree with the
        # photo there, under the detector's exact geometry; the model's own step (a registration
        # on the 16 px crop) would only repeat it less precisely, at 0.1 s per face.
        consistency = False if "paste" in config.post_processors and config.paste.consistency else None
        return cls(model, batch_size=config.batch_size, device=config.device, consistency=consistency)

    def super_resolve(self, faces: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """``[N, 3, lr, lr]`` -> ``[N, 3, size, size]`` (``size`` one of :attr:`output_sizes`,
        default ``hr_size``)."""
        if faces.ndim != 4 or tuple(faces.shape[1:]) != (3, self.lr_size, self.lr_size):
            raise ValueError(f"expected faces [N, 3, {self.lr_size}, {self.lr_size}], got {tuple(faces.shape)}")
        size = self.model.decoder.check_size(size)
        if len(faces) == 0:
            return faces.new_zeros(0, 3, size, size)
        if not self._prepared:
            # Moving weights is done on first use, not in the constructor.
            self.model.to(self.device).eval()
            self._prepared = True
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(faces), self.batch_size):
                chunk = faces[start : start + self.batch_size].to(self.device, torch.float32).clamp(0, 1)
                outputs.append(self.model.upscale(chunk, size=size, consistency=self.consistency).float().cpu())
        return torch.cat(outputs)


class BicubicSuperResolver:
    """Baseline ``bicubic`` stage: enlarges the LR crop by interpolation.

    Useful as a reference in comparisons, and to check geometry: pasted back, its faces must
    line up with the photo they came from.
    """

    def __init__(self, lr_size: int = 16, hr_size: int = 128) -> None:
        self.lr_size = lr_size
        self.hr_size = hr_size

    @classmethod
    def from_config(cls, config: PipelineConfig) -> BicubicSuperResolver:
        options = config.options.get("bicubic", {})
        return cls(lr_size=int(options.get("lr_size", 16)), hr_size=int(options.get("hr_size", 128)))

    def super_resolve(self, faces: torch.Tensor) -> torch.Tensor:
        if len(faces) == 0:
            return faces.new_zeros(0, 3, self.hr_size, self.hr_size)
        size = (self.hr_size, self.hr_size)
        return F.interpolate(faces.float(), size=size, mode="bicubic", align_corners=False).clamp(0, 1)
