"""StyleGAN2 training objectives: non-saturating logistic loss, lazy R1, path length, EMA.

Images are ``[B, 3, H, W]`` in ``[0, 1]`` (the generator's and discriminator's convention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facetools_dapfsr.models.stylegan2 import StyleGAN2Generator


class MappedGenerator(nn.Module):
    """``z -> (image, ws)``: mapping, optional style mixing, synthesis; the module DDP wraps.

    Also holds the path-length target (a buffer, so checkpoints keep it).
    """

    pl_mean: torch.Tensor

    def __init__(self, generator: StyleGAN2Generator, style_mixing: float = 0.9) -> None:
        super().__init__()
        self.generator = generator
        self.style_mixing = style_mixing
        self.register_buffer("pl_mean", torch.zeros(()))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator
        ws = g.mapping(z).unsqueeze(1).repeat(1, g.num_ws, 1)
        if self.training and self.style_mixing > 0:
            # Style mixing regularisation: a second code from a random slot onwards.
            cutoff = int(torch.randint(1, g.num_ws, ()))
            if float(torch.rand(())) < self.style_mixing:
                ws2 = g.mapping(torch.randn_like(z)).unsqueeze(1)
                ws = torch.cat([ws[:, :cutoff], ws2.expand(-1, g.num_ws - cutoff, -1)], dim=1)
        return g.synthesis(ws), ws


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of D: ``softplus(D(fake)) + softplus(-D(real))``."""
    return F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of G: ``softplus(-D(G(z)))``."""
    return F.softplus(-logits_fake).mean()


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1: mean over the batch of ``|grad_x D(x)|^2`` on real images (``real`` requires grad)."""
    (gradient,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
    return gradient.square().sum(dim=(1, 2, 3)).mean()


def path_length_penalty(
    images: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2 path-length regularisation.

    Returns ``(penalty, batch mean of the path lengths)``; the caller averages the latter over
    processes and updates ``pl_mean`` with :func:`update_pl_mean`, so every process keeps the
    same target.
    """
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (gradient,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    lengths = gradient.square().sum(dim=2).mean(dim=1).sqrt()
    target = pl_mean.detach()
    return (lengths - target).square().mean(), lengths.detach().mean()


def update_pl_mean(pl_mean: torch.Tensor, batch_mean: torch.Tensor, decay: float = 0.01) -> None:
    pl_mean.copy_(pl_mean + decay * (batch_mean - pl_mean))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema = beta * ema + (1 - beta) * model`` for parameters; buffers are copied."""
    for target, source in zip(ema.parameters(), model.parameters(), strict=True):
        target.copy_(source.detach().to(target.dtype).lerp(target, beta))
    for target_buffer, source_buffer in zip(ema.buffers(), model.buffers(), strict=True):
        target_buffer.copy_(source_buffer)


def ema_beta(images_per_step: int, half_life_images: float) -> float:
    """Decay that halves an old weight's share after ``half_life_images`` training images."""
    return 0.5 ** (images_per_step / max(half_life_images, 1e-8))
