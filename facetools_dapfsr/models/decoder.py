"""The small interface every decoder (face prior) implements.

DAP-FSR only needs four things from a style-based generator: render a W+ code to the model's HR
face crop, the shape of W+, statistics of its W space (for the manifold-preserving encoding of
Eq. 2 and for sampling source codes in DAMMA) and the list of style-modulation parameters (the
"AdaIN affine parameters" that DAMMA adapts). Both the native StyleGAN2 generator and the
imported FFHQ prior implement it.
"""

from __future__ import annotations

import abc

import torch
from torch import nn


class Decoder(nn.Module, abc.ABC):
    """A style-based generator seen through the interface DAP-FSR needs.

    Subclasses set ``num_ws`` (slots of W+), ``w_dim`` (size of one code), ``z_dim`` and
    ``resolution`` (side of the rendered HR face crop) in their constructor.
    """

    num_ws: int
    w_dim: int
    z_dim: int
    resolution: int

    @abc.abstractmethod
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents ``z [B, z_dim]`` to codes ``w [B, w_dim]``."""

    @abc.abstractmethod
    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """Render ``ws [B, num_ws, w_dim]`` to the HR face crop ``[B, 3, R, R]`` in ``[0, 1]``
        (values may overshoot slightly; callers clamp where they need to)."""

    @abc.abstractmethod
    def modulation_parameter_names(self) -> list[str]:
        """Names (as in ``state_dict()``) of the style-modulation parameters DAMMA adapts."""

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.synthesis(ws)

    @property
    def output_sizes(self) -> tuple[int, ...]:
        """Sides :meth:`render` offers; a generator that renders only its own resolution
        offers just that."""
        return (self.resolution,)

    def check_size(self, size: int | None) -> int:
        """``size`` (default: the resolution) if :meth:`render` offers it, else a ValueError."""
        if size is None:
            return self.resolution
        if size not in self.output_sizes:
            raise ValueError(f"size must be one of {self.output_sizes}, got {size!r}")
        return int(size)

    def render(self, ws: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """The HR face crop at ``size`` px (one of :attr:`output_sizes`; default the resolution)."""
        self.check_size(size)
        return self.synthesis(ws)

    def renderer(self, size: int | None = None) -> nn.Module:
        """A module ``ws -> `` :meth:`render` ``(ws, size)`` with every per-call Python decision
        (geometry, sizes) taken now, so ``torch.export`` and ONNX can trace it."""
        self.check_size(size)
        return _Synthesis(self)

    def modulation_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` pairs for :meth:`modulation_parameter_names`."""
        params = dict(self.named_parameters())
        return [(name, params[name]) for name in self.modulation_parameter_names()]

    @torch.no_grad()
    def w_statistics(
        self, num_samples: int = 10_000, seed: int = 0, batch_size: int = 1000
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and standard deviation of ``w = mapping(z)``, ``z ~ N(0, I)``.

        Returns ``(mu [w_dim], sigma [w_dim])`` computed in float64 from ``num_samples`` samples.
        """
        generator = torch.Generator().manual_seed(seed)
        device = next(self.parameters()).device
        total = torch.zeros(self.w_dim, dtype=torch.float64)
        total_sq = torch.zeros(self.w_dim, dtype=torch.float64)
        done = 0
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            z = torch.randn(n, self.z_dim, generator=generator).to(device)
            w = self.mapping(z).double().cpu()
            total += w.sum(0)
            total_sq += (w * w).sum(0)
            done += n
        mean = total / num_samples
        var = (total_sq / num_samples - mean * mean).clamp_min(0) * num_samples / max(num_samples - 1, 1)
        return mean.float(), var.sqrt().float()


class _Synthesis(nn.Module):
    """:meth:`Decoder.synthesis` as a module (for a decoder that renders only its resolution)."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.decoder.synthesis(ws)
