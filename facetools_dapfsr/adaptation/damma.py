"""DAMMA: one-shot domain adaptation by manifold-preserving mixing (paper section 4.2, Algorithm 1).

Given a source-trained model and ONE high-resolution exemplar of the target domain, repeat until
converged:

1. ``w_t = mu + E(I_LR_t) * sigma``: the exemplar's code (manifold-preserving projection, Eq. 2);
2. ``w_s = mu + sigma * eps``, ``eps ~ N(0, I)``: a batch of source codes (one code per face,
   used in every W+ slot, as the mapping network's codes are);
3. one update of the layer-wise mixing weight ``alpha`` (one value per W+ slot, in ``[0, 1]``
   through a sigmoid) for ``w_m = (1 - alpha) * w_t + alpha * w_s`` (Eq. 6), minimising
   ``L_c + L_s`` (Eq. 7-9): the content loss between VGG-19 features of ``G(w_m)`` and
   ``G(w_s)``, the style loss between feature means and standard deviations of ``G(w_m)`` and
   of the exemplar;
4. the mixed faces ``G(w_m)`` are target-style HR faces; degrade them to LR and update only the
   decoder's modulation parameters so that the model maps those LR faces, and the exemplar's own
   LR, back to their HR (Eq. 5: pixel MSE + perceptual loss). Everything else stays frozen.

Grey domains (``DAMMAConfig.grey_targets``, a named departure from Algorithm 1): when the exemplar
is grey (infrared, a black-and-white scan), the mixed faces of step 4 are made grey (BT.601 luma)
before they become targets, so the adapted decoder draws the domain's grey rather than the
prior's skin colour, which the style loss of step 3 alone does not remove.

``G`` in steps 3-4 is the base (source) decoder: the targets do not move while the modulation
parameters are trained. The faces rendered for the alpha update are reused as the targets of the
same step (one rendering instead of two; the alpha they were made with is at most one update old).

Convergence: the mean Eq. 5 loss over the last ``window`` steps improved by less than
``tolerance`` (relative) on the ``window`` steps before; ``max_steps`` caps the run. All random
draws come from one ``torch.Generator`` seeded with ``seed``: the same inputs give the same
adapter on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from facetools_dapfsr.adaptation.finetune import finetune_step
from facetools_dapfsr.adaptation.lowrank import ModulationDelta
from facetools_dapfsr.data.degradation import DegradationConfig, degrade
from facetools_dapfsr.hub.adapters import (
    ALPHA_KEY,
    DECODER_PREFIX,
    EXEMPLAR_CODE_KEY,
    Adapter,
    AdapterConfig,
    base_model_only,
    registry_of,
)
from facetools_dapfsr.images import is_grey_content
from facetools_dapfsr.losses import FEATURE_LAYERS, VGGFeatures, style_loss
from facetools_dapfsr.metrics.image import to_grey

if TYPE_CHECKING:
    from facetools_dapfsr.models.dapfsr import DAPFSR


@dataclass
class DAMMAConfig:
    """Settings of one DAMMA run. The paper gives the losses, not these numbers: the defaults are
    ours, chosen so that a 128 px model adapts in a few hundred steps."""

    max_steps: int = 300
    """Step cap (one alpha update + one modulation update per step)."""
    tolerance: float = 0.01
    """Converged when the windowed mean loss improves by less than this fraction."""
    window: int = 25
    """Steps per convergence window (so at least ``2 * window`` steps run)."""
    batch_size: int = 4
    """Source codes sampled per step; the exemplar's own pair is added to each batch."""
    learning_rate: float = 2e-3
    """Adam step for the modulation deltas (relative to each tensor's RMS, see lowrank.py)."""
    rank: int = 0
    """0: adapt the modulation tensors in full (the paper). r > 0: rank-r deltas on the 2-D
    modulation weights (far smaller adapters)."""
    alpha_learning_rate: float = 0.05
    """Adam step for the mixing-weight logits."""
    alpha_init: float = 0.5
    """Initial mixing weight of every W+ slot (0 = exemplar code, 1 = source code)."""
    content_weight: float = 1.0
    """Weight of L_c (Eq. 8)."""
    style_weight: float = 1.0
    """Weight of L_s (Eq. 9)."""
    content_layers: tuple[str, ...] = ("relu4_1",)
    """VGG-19 layers of the content loss (AdaIN's choice)."""
    style_layers: tuple[str, ...] = FEATURE_LAYERS
    """VGG-19 layers of the style loss (feature mean and std)."""
    pixel_weight: float = 1.0
    """Weight of the pixel MSE in the Eq. 5 loss."""
    perceptual_weight: float = 1.0
    """Weight of the perceptual loss in the Eq. 5 loss (relu1_1..relu4_1, equal weights)."""
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    """How generated HR faces (and the exemplar, when no LR is given) become LR inputs."""
    exemplar_pair: bool = True
    """Add the exemplar's own (LR, HR) pair to every step-4 batch (Algorithm 1). ``False`` (a
    named departure) trains on the mixed faces alone."""
    grey_targets: bool | None = None
    """Make the mixed faces grey before they become targets (step 4). ``None``: when the exemplar
    is grey (its three channels equal); ``False``: Algorithm 1 as published."""
    seed: int = 0
    """Seeds every random draw (source codes, degradation, low-rank initialisation)."""

    def __post_init__(self) -> None:
        self.content_layers = tuple(self.content_layers)
        self.style_layers = tuple(self.style_layers)
        if isinstance(self.degradation, dict):
            self.degradation = DegradationConfig(**self.degradation)
        for name in (*self.content_layers, *self.style_layers):
            if name not in FEATURE_LAYERS:
                raise ValueError(f"unknown VGG layer {name!r}; choose from {', '.join(FEATURE_LAYERS)}")
        if self.max_steps < 1 or self.window < 1 or self.batch_size < 1:
            raise ValueError("max_steps, window and batch_size must be at least 1")
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0 (0 = full adaptation), got {self.rank}")
        if not 0.0 < self.alpha_init < 1.0:
            raise ValueError(f"alpha_init must be inside (0, 1), got {self.alpha_init}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["content_layers"] = list(self.content_layers)
        data["style_layers"] = list(self.style_layers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DAMMAConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DAMMA setting(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass
class DAMMAResult:
    """What a DAMMA run produced."""

    adapter: Adapter
    """The adapter (attach with ``model.add_adapter``, write with ``adapter.save``)."""
    steps: int
    converged: bool
    """False when ``max_steps`` ended the run."""
    seconds: float
    history: list[dict[str, float]]
    """Per step: ``loss`` (Eq. 5), ``content``, ``style``, ``alpha_mean``."""
    snapshots: dict[int, Adapter] = field(default_factory=dict)
    """step -> the adapter as it was after that step (the steps asked for with ``snapshot_steps``)."""


def run_damma(
    model: DAPFSR,
    exemplar_hr: torch.Tensor,
    exemplar_lr: torch.Tensor | None = None,
    config: DAMMAConfig | None = None,
    vgg: VGGFeatures | None = None,
    progress: bool = True,
    snapshot_steps: Collection[int] = (),
) -> DAMMAResult:
    """Adapt ``model`` to the domain of one exemplar (Algorithm 1); the model is not changed.

    Args:
        model: the source-trained model (any active adapter is set aside during the run).
        exemplar_hr: ``[1, 3, hr, hr]`` (or ``[3, hr, hr]``) aligned face in ``[0, 1]``.
        exemplar_lr: its LR ``[1, 3, lr, lr]``; made with ``config.degradation`` when omitted.
        config: settings (defaults: :class:`DAMMAConfig`).
        vgg: VGG-19 features; default: loaded from the weights cache.
        progress: show a progress bar with the step, losses and alpha.
        snapshot_steps: steps after which to keep a copy of the adapter (learning curves).
    Returns:
        a :class:`DAMMAResult` whose adapter holds the adapted modulation tensors, alpha and w_t.
    """
    config = config or DAMMAConfig()
    hr_size, lr_size = model.config.hr_size, model.config.lr_size
    exemplar_hr = _as_batch(exemplar_hr, hr_size, "exemplar_hr")
    device = model.w_mu.device
    exemplar_hr = exemplar_hr.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    if exemplar_lr is None:
        exemplar_lr = degrade(exemplar_hr.cpu(), lr_size, config.degradation, generator).to(device)
    exemplar_lr = _as_batch(exemplar_lr, lr_size, "exemplar_lr").to(device)
    vgg = (vgg if vgg is not None else VGGFeatures.from_weights_cache(progress=progress)).to(device).eval()
    vgg.requires_grad_(False)
    grey_targets = is_grey_content(exemplar_hr[0]) if config.grey_targets is None else config.grey_targets
    content_index = [FEATURE_LAYERS.index(n) for n in config.content_layers]
    style_index = [FEATURE_LAYERS.index(n) for n in config.style_layers]

    registry = registry_of(model)  # snapshots the base and its hash before anything runs
    was_training = model.training
    grad_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    started = time.perf_counter()
    try:
        model.eval().requires_grad_(False)
        with base_model_only(model):
            decoder = model.decoder
            # The registry's copy of the base values, not the live parameters: an adapter that was
            # active before the run is written back into those when the run ends.
            delta = ModulationDelta(registry.base, rank=config.rank, generator=generator)
            with torch.no_grad():
                w_t = model.encode(exemplar_lr)  # [1, num_ws, w_dim]
                exemplar_style = _select(vgg(exemplar_hr), style_index)
            alpha_logit = torch.full(
                (model.num_ws,), math.log(config.alpha_init / (1 - config.alpha_init)), device=device
            ).requires_grad_(True)
            alpha_optimizer = torch.optim.Adam([alpha_logit], lr=config.alpha_learning_rate)
            delta_optimizer = torch.optim.Adam(delta.parameters(), lr=config.learning_rate)
            history: list[dict[str, float]] = []
            snapshots: dict[int, Adapter] = {}
            converged = False
            bar = tqdm(total=config.max_steps, desc="DAMMA", disable=not progress, unit="step")
            for step in range(1, config.max_steps + 1):
                # 2. source codes
                eps = torch.randn(config.batch_size, model.w_dim, generator=generator).to(device)
                w_s = (model.w_mu + model.w_sigma * eps).unsqueeze(1).expand(-1, model.num_ws, -1)
                # 3. alpha: content of G(w_s), style of the exemplar
                alpha = torch.sigmoid(alpha_logit)[None, :, None]
                w_m = (1 - alpha) * w_t + alpha * w_s
                mixed = decoder.synthesis(w_m)
                with torch.no_grad():
                    source_features = vgg(decoder.synthesis(w_s))
                mixed_features = vgg(mixed)
                content = torch.stack([F.mse_loss(mixed_features[i], source_features[i]) for i in content_index]).sum()
                style = style_loss(_select(mixed_features, style_index), exemplar_style)
                alpha_loss = config.content_weight * content + config.style_weight * style
                alpha_optimizer.zero_grad(set_to_none=True)
                alpha_loss.backward()
                alpha_optimizer.step()
                # 4. constrained fine-tuning of the modulation parameters on target-style pairs
                targets = mixed.detach().clamp(0, 1)
                if grey_targets:
                    targets = to_grey(targets).expand_as(targets)
                lr = degrade(targets.cpu(), lr_size, config.degradation, generator).to(device)
                hr = targets
                if config.exemplar_pair:
                    hr, lr = torch.cat([hr, exemplar_hr]), torch.cat([lr, exemplar_lr])
                adapted = {name[len(DECODER_PREFIX) :]: value for name, value in delta.adapted().items()}
                loss = finetune_step(
                    model, adapted, hr, lr, vgg, delta_optimizer, config.pixel_weight, config.perceptual_weight
                )

                alpha_now = torch.sigmoid(alpha_logit.detach())
                record = {
                    "loss": loss,
                    "content": content.item(),
                    "style": style.item(),
                    "alpha_mean": alpha_now.mean().item(),
                }
                history.append(record)
                if step in snapshot_steps:
                    snapshots[step] = adapter_from_delta(
                        model, delta, alpha_now, w_t[0], {"method": "DAMMA snapshot", "steps": step}
                    )
                bar.update(1)
                bar.set_postfix(
                    loss=f"{record['loss']:.4g}",
                    Lc=f"{record['content']:.3g}",
                    Ls=f"{record['style']:.3g}",
                    alpha=f"{record['alpha_mean']:.2f}[{alpha_now.min().item():.2f},{alpha_now.max().item():.2f}]",
                )
                if _converged(history, config):
                    converged = True
                    break
            bar.close()
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(grad_flags[name])
        model.train(was_training)
    seconds = time.perf_counter() - started

    training = {
        "method": "DAMMA (Li, Yu, Yang, ICCV 2021, Algorithm 1)",
        "settings": config.to_dict(),
        "steps": len(history),
        "converged": converged,
        "final_loss": _window_mean(history, config.window),
        "grey_targets": grey_targets,
        "seconds": seconds,
    }
    adapter = adapter_from_delta(model, delta, torch.sigmoid(alpha_logit.detach()), w_t[0], training)
    return DAMMAResult(
        adapter=adapter, steps=len(history), converged=converged, seconds=seconds, history=history, snapshots=snapshots
    )


def adapter_from_delta(
    model: DAPFSR,
    delta: ModulationDelta,
    alpha: torch.Tensor,
    exemplar_code: torch.Tensor,
    training: dict[str, Any] | None = None,
) -> Adapter:
    """Package trained deltas (made on ``registry_of(model).base``) as an :class:`Adapter`."""
    registry = registry_of(model)
    tensors = delta.adapter_tensors()
    tensors[ALPHA_KEY] = alpha.detach().float().cpu().clone()
    tensors[EXEMPLAR_CODE_KEY] = exemplar_code.detach().float().cpu().clone()
    config = AdapterConfig(
        kind=delta.kind,
        r=delta.rank,
        base_model_sha256=registry.base_sha256,
        target_parameters={name: list(registry.base[name].shape) for name in delta.names},
        num_ws=model.num_ws,
        w_dim=model.w_dim,
        resolution=model.config.hr_size,
        lr_size=model.config.lr_size,
        base_model_name_or_path=registry.base_model,
        revision=registry.base_revision,
        base_decoder=model.config.decoder.type,
        training=training or {},
    )
    return Adapter(config=config, tensors=tensors)


def _as_batch(image: torch.Tensor, size: int, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1]")
    batch = image.unsqueeze(0) if image.ndim == 3 else image
    if batch.ndim != 4 or batch.shape[0] != 1 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != (size, size):
        raise ValueError(f"{name} must be one RGB face of shape [1, 3, {size}, {size}], got {tuple(image.shape)}")
    if not torch.isfinite(batch).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return batch.float().clamp(0, 1)


def _select(features: tuple[torch.Tensor, ...], indices: list[int]) -> list[torch.Tensor]:
    return [features[i] for i in indices]


def _window_mean(history: list[dict[str, float]], window: int) -> float:
    recent = history[-window:]
    return sum(h["loss"] for h in recent) / max(len(recent), 1)


def _converged(history: list[dict[str, float]], config: DAMMAConfig) -> bool:
    """Relative improvement of the last window's mean loss over the window before it."""
    if len(history) < 2 * config.window or len(history) % config.window:
        return False
    current = _window_mean(history, config.window)
    previous = sum(h["loss"] for h in history[-2 * config.window : -config.window]) / config.window
    return previous <= 0 or (previous - current) / previous < config.tolerance
