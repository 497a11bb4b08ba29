"""The Eq. 5 fine-tuning step, shared by DAMMA (Algorithm 1, step 4) and the fine-tuning baselines.

One step: encode the LR faces with the frozen encoder, render them with the decoder under the
trainable ``params`` (all decoder tensors, or the adapted modulation tensors), and move ``params``
down the Eq. 5 loss (pixel MSE + perceptual loss on VGG-19 relu1_1..relu4_1) against the HR faces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.func import functional_call

from facetools_dapfsr.losses import VGGFeatures, perceptual_loss

if TYPE_CHECKING:
    from facetools_dapfsr.models.dapfsr import DAPFSR


def reconstruction_loss(
    output: torch.Tensor,
    hr: torch.Tensor,
    vgg: VGGFeatures,
    pixel_weight: float = 1.0,
    perceptual_weight: float = 1.0,
) -> torch.Tensor:
    """Eq. 5: ``pixel_weight * MSE + perceptual_weight * perceptual`` (a zero weight skips its term)."""
    loss = pixel_weight * F.mse_loss(output, hr)
    if perceptual_weight:
        loss = loss + perceptual_weight * perceptual_loss(output, hr, vgg)
    return loss


def finetune_step(
    model: DAPFSR,
    params: Mapping[str, torch.Tensor],
    hr: torch.Tensor,
    lr: torch.Tensor,
    vgg: VGGFeatures,
    optimizer: torch.optim.Optimizer,
    pixel_weight: float = 1.0,
    perceptual_weight: float = 1.0,
) -> float:
    """One optimiser step of the decoder tensors behind ``params`` (names as in
    ``model.decoder.state_dict()``; tensors the optimiser does not hold stay fixed). Returns the loss."""
    with torch.no_grad():
        ws = model.encode(lr)
    with torch.enable_grad():
        output = functional_call(model.decoder, dict(params), (ws,))
        loss = reconstruction_loss(output, hr, vgg, pixel_weight, perceptual_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    return loss.item()
