"""LR consistency: make a super-resolved face agree with its own LR input (inference only).

The encoder maps the LR face to a code of the prior, and the prior draws a plausible face; but on
the paper's protocol the built-in model's output, downsampled again, does not reproduce its
input: the pose, the gaze and the tone drift towards an average face, and that drift is most of
what keeps its PSNR and identity low. This step puts the input back, as iterative
back-projection does (Irani and Peleg, 1991), in two parts:

1. **Register.** The LR face is unaligned (the protocol rotates, scales and shifts the face before
   downsampling; a detector's crop is off by as much), while the output is in the template's
   frame. :func:`register` finds the similarity ``theta`` (rotation, scale, shift) under which
   the output, warped and downsampled, best matches the LR: Adam on the four parameters, from a
   few starting angles, on luma normalised per image (so that a tone difference does not move
   the geometry).
2. **Project.** :func:`project` adds the LR residual ``lr - down(warp(out, theta))``, upsampled
   (bicubic) and warped back to the template's frame, ``projection_steps`` times. Optionally
   split: its coarse part (a Gaussian of ``detail_scale`` x the LR side: tone, lighting, where
   the features are) at ``weight``, the rest at ``detail_weight``, since a registration a pixel
   off turns the fine residual into faint ghost edges; by default both are 1 (the split trades
   identity for face quality, see ``ConsistencyConfig.detail_weight``).

Optionally, between the two, **refine** (``refine_steps``): a few Adam steps on the face's W+ code
(its coarse slots) so that the prior's own face, warped and downsampled, matches the LR; the
projection then has less to put back. It needs the code and a differentiable renderer, so it
runs in :func:`consistent_faces`, which :meth:`~facetools_dapfsr.DAPFSR.upscale` and the
evaluation's adapted restorers call.

The prior supplies what the LR cannot hold (detail finer than one LR pixel); the LR supplies what
it does hold (where the eyes look, the lighting, the colour). It costs 0.1-0.2 s per face on one
CPU core. ``ConsistencyConfig(enabled=False)`` gives the paper's raw output. Measured:
``dapfsr evaluate --methods bicubic,source-only,source-only-raw`` (with and without it) and
``benchmarks/consistency.py`` (its settings); figures in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from facetools_dapfsr.config import ConsistencyConfig
from facetools_dapfsr.data.degradation import downsample, gaussian_blur, misalign


def similarity(params: torch.Tensor) -> torch.Tensor:
    """``[B, 4]`` (angle in radians, log zoom, shift x, shift y) -> ``[B, 2, 3]`` in the form of
    :func:`~facetools_dapfsr.data.degradation.random_affine` (normalised output -> input).

    Normalised coordinates, not the pixel matrices of :mod:`facetools_dapfsr.data.alignment`:
    the same ``theta`` holds at the template face's size and at its LR input's."""
    angle, log_zoom, shift_x, shift_y = params.unbind(1)
    zoom = torch.exp(log_zoom)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)


def invert_similarity(theta: torch.Tensor) -> torch.Tensor:
    """The inverse of ``theta [B, 2, 3]`` (same form)."""
    inverse = torch.linalg.inv(theta[:, :, :2])
    return torch.cat([inverse, -inverse @ theta[:, :, 2:]], dim=2)


def _normalised_luma(image: torch.Tensor) -> torch.Tensor:
    luma = image.mean(dim=1, keepdim=True)
    luma = luma - luma.mean(dim=(2, 3), keepdim=True)
    return luma / (luma.std(dim=(2, 3), keepdim=True) + 1e-6)


def register(output: torch.Tensor, lr: torch.Tensor, config: ConsistencyConfig) -> torch.Tensor:
    """The similarity ``[B, 2, 3]`` under which ``output`` (template frame) downsampled best
    matches ``lr`` (its unaligned input), best of the starting angles per face."""
    side = min(config.registration_side, output.shape[-1])
    small = F.interpolate(
        output.detach().float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False
    )
    target = _normalised_luma(lr.detach().float())
    lr_side = lr.shape[-1]

    def mismatch(params: torch.Tensor) -> torch.Tensor:
        warped = downsample(misalign(small, similarity(params)), lr_side)
        return (_normalised_luma(warped) - target).pow(2).mean(dim=(1, 2, 3))

    best_params = best_loss = None
    # The pipeline runs under inference_mode and may run under autocast: the registration is a
    # small float32 optimisation of its own, so it leaves both (inference tensors are cloned in).
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(output.device.type, enabled=False):
        small, target = small.clone(), target.clone()
        for degrees in config.registration_start_degrees:
            params = torch.zeros(len(output), 4, device=output.device)
            params[:, 0] = math.radians(degrees)
            params.requires_grad_(True)
            optimizer = torch.optim.Adam([params], lr=config.registration_learning_rate)
            for _ in range(config.registration_steps):
                optimizer.zero_grad(set_to_none=True)
                mismatch(params).sum().backward()
                optimizer.step()
            with torch.no_grad():
                loss = mismatch(params)
                if best_params is None or best_loss is None:
                    best_params, best_loss = params.detach().clone(), loss
                else:
                    better = loss < best_loss
                    best_params[better] = params.detach()[better]
                    best_loss = torch.minimum(loss, best_loss)
    assert best_params is not None  # ConsistencyConfig requires at least one start angle
    return similarity(best_params)


def project(output: torch.Tensor, lr: torch.Tensor, theta: torch.Tensor, config: ConsistencyConfig) -> torch.Tensor:
    """Back-project the LR residual into ``output`` (``[B, 3, S, S]`` in ``[0, 1]``)."""
    size, lr_side = output.shape[-1], lr.shape[-1]
    dtype = output.dtype
    result = output.float()
    lr, theta = lr.float(), theta.float()
    back_grid = F.affine_grid(invert_similarity(theta), [len(output), 3, size, size], align_corners=False)
    for _ in range(config.projection_steps):
        residual = lr - downsample(misalign(result, theta), lr_side)
        if config.detail_scale > 0 and config.detail_weight != config.weight:
            coarse = gaussian_blur(residual, config.detail_scale * lr_side)
            residual = config.weight * coarse + config.detail_weight * (residual - coarse)
        else:
            residual = config.weight * residual
        residual = F.interpolate(residual, size=(size, size), mode="bicubic", align_corners=False)
        # Border padding: template pixels that the LR's frame does not cover take the nearest
        # residual; zeros there left a visible edge where the correction stopped.
        residual = F.grid_sample(residual, back_grid, mode="bilinear", padding_mode="border", align_corners=False)
        result = (result + residual).clamp(0, 1)
    return result.to(dtype)


def refine_codes(
    render: Callable[[torch.Tensor], torch.Tensor],
    ws: torch.Tensor,
    lr: torch.Tensor,
    theta: torch.Tensor,
    sigma: torch.Tensor,
    config: ConsistencyConfig,
) -> torch.Tensor:
    """W+ codes ``[B, num_ws, w_dim]`` whose face (``render``, differentiable), warped by ``theta``
    and downsampled, matches ``lr`` better: ``config.refine_steps`` Adam steps on an offset of the
    first ``config.refine_slots`` slots, in units of ``sigma`` (Eq. 2 space)."""
    slots = config.refine_slots or ws.shape[1]
    lr_side = lr.shape[-1]
    # Like register(): an optimisation of its own, outside the caller's inference or autocast.
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(ws.device.type, enabled=False):
        base, target, theta, sigma = ws.detach().clone(), lr.detach().float().clone(), theta.clone(), sigma.clone()
        offset = torch.zeros(len(ws), slots, ws.shape[2], device=ws.device, requires_grad=True)
        optimizer = torch.optim.Adam([offset], lr=config.refine_learning_rate)

        def codes() -> torch.Tensor:
            moved = base[:, :slots] + (offset * sigma).to(base.dtype)
            return torch.cat([moved, base[:, slots:]], dim=1)

        for _ in range(config.refine_steps):
            face = render(codes()).float()
            mismatch = (downsample(misalign(face, theta), lr_side) - target).pow(2).mean()
            # Gradients for the offset only: the renderer's parameters may require grad (a model
            # being trained, an adapter being made), and must not collect any here.
            (offset.grad,) = torch.autograd.grad(mismatch, [offset])
            optimizer.step()
        return codes().detach()


def consistent_faces(
    render: Callable[[torch.Tensor], torch.Tensor],
    ws: torch.Tensor,
    lr: torch.Tensor,
    sigma: torch.Tensor,
    config: ConsistencyConfig,
    render_output: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The faces of codes ``ws`` made to agree with their LR inputs: render, register, refine the
    codes (if ``config.refine_steps``), render again, back-project.

    ``render`` maps W+ codes to faces differentiably (the refinement's renderer, at the model's HR
    size); ``render_output`` renders the returned faces (default ``render``; e.g. a larger size).
    """
    render_output = render_output or render
    with torch.no_grad():
        output = render_output(ws).clamp(0, 1)
    if not config.enabled:
        return output
    theta = register(output, lr, config)
    if config.refine_steps:
        ws = refine_codes(render, ws, lr, theta, sigma, config)
        with torch.no_grad():
            output = render_output(ws).clamp(0, 1)
    return enforce_consistency(output, lr, config, theta)


def enforce_consistency(
    output: torch.Tensor, lr: torch.Tensor, config: ConsistencyConfig, theta: torch.Tensor | None = None
) -> torch.Tensor:
    """Register ``output`` on ``lr`` (unless ``theta`` is given) and back-project; ``output``
    unchanged if disabled. (Without the codes, there is no refinement: :func:`consistent_faces`.)"""
    if not config.enabled:
        return output
    if theta is None:
        theta = register(output, lr, config)
    with torch.no_grad(), torch.autocast(output.device.type, enabled=False):
        return project(output, lr, theta, config)
