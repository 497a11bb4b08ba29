"""The compared methods, each behind one small interface and selectable by name.

A :class:`Method` turns the source-trained model and (for the one-shot methods) one exemplar of
the target domain into a *restorer*: a function from LR faces ``[B, 3, l, l]`` to HR faces
``[B, 3, h, h]``, both in ``[0, 1]``. :meth:`Method.adapted` is a context manager, so whatever a
method attaches to the model (an adapter) is removed when the draw is done and the next method
starts from the untouched source model.

Every method uses the same decoder and the same data:

- ``bicubic``: bicubic upsampling of the LR input.
- ``source-only``: DAP-FSR as trained on the source domain (no adaptation), its output made
  consistent with the LR input (``model.config.consistency``, :mod:`facetools_dapfsr.models.consistency`).
  The model-based methods below get the same step, so they differ only in the model.
- ``source-only-raw``: the same model's raw decoder output (the paper's method; the ablation of
  the consistency step).
- ``pulse``: PULSE-style latent optimisation: W+ codes ``w = mu + sigma * v`` (``v`` starts at 0,
  the mean face) are optimised with Adam so that the rendered face, downsampled to the LR size,
  matches the LR input (MSE), with a Gaussian prior ``mean(v^2)`` on the normalised code keeping
  it on the decoder's manifold (PULSE proper constrains ``z`` to a sphere; the decoder here is
  reached through W+, so the prior is put there). No encoder, no exemplar.
- ``finetune``: direct fine-tuning of *all* decoder parameters on the exemplar alone: each step
  degrades the exemplar anew (random affine + downsampling) and fits the Eq. 5 loss (pixel MSE +
  perceptual) of the model's output against the exemplar. The encoder stays frozen.
- ``adain``: the paper's Table 3 alternative to DAMMA's mixing: source-domain faces are rendered in
  the exemplar's style by AdaIN style transfer (:mod:`facetools_dapfsr.evaluation.adain`), degraded
  to LR, and only the decoder's modulation parameters are fine-tuned on those pairs (plus the
  exemplar's own pair) with the Eq. 5 loss: DAMMA's constrained fine-tuning with AdaIN data.
- ``damma``: the paper's one-shot adaptation (:func:`facetools_dapfsr.adaptation.damma.run_damma`),
  attached as an adapter.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch.func import functional_call

from facetools_dapfsr.adaptation.damma import DAMMAConfig, run_damma
from facetools_dapfsr.adaptation.finetune import finetune_step
from facetools_dapfsr.adaptation.lowrank import ModulationDelta
from facetools_dapfsr.data.degradation import DegradationConfig, degrade
from facetools_dapfsr.losses import VGGFeatures
from facetools_dapfsr.models.consistency import ConsistencyConfig, consistent_faces

if TYPE_CHECKING:
    from facetools_dapfsr.evaluation.adain import StyleTransfer
    from facetools_dapfsr.models.dapfsr import DAPFSR

Restorer = Callable[[torch.Tensor], torch.Tensor]
EVALUATION_ADAPTER = "evaluation"


@dataclass
class Exemplar:
    """The one-shot exemplar of a draw, as the model sees it."""

    hr: torch.Tensor
    """``[1, 3, h, h]`` aligned face in ``[0, 1]``."""
    lr: torch.Tensor
    """``[1, 3, l, l]`` its LR input."""


class Method(abc.ABC):
    """One compared method. Subclasses set ``name`` (used on the command line), ``label`` (the
    table's row name) and ``uses_exemplar``; methods without an exemplar give the same output
    for an LR face in every draw, which the evaluation uses to compute them once."""

    name: ClassVar[str]
    label: ClassVar[str]
    uses_exemplar: ClassVar[bool]

    @abc.abstractmethod
    def adapted(self, model: DAPFSR, exemplar: Exemplar | None) -> contextlib.AbstractContextManager[Restorer]:
        """A context manager yielding this method's restorer for ``exemplar``."""

    vgg: VGGFeatures | None = None
    """VGG-19 features for the methods that fine-tune with the Eq. 5 loss (loaded on first use)."""

    def settings(self) -> dict[str, Any]:
        """The method's settings, recorded in ``results.json``."""
        return {}

    def _features(self, device: torch.device) -> VGGFeatures:
        """``self.vgg`` on ``device``, read from the weights cache the first time."""
        if self.vgg is None:
            self.vgg = VGGFeatures.from_weights_cache(progress=False)
        return self.vgg.to(device)


class Bicubic(Method):
    name = "bicubic"
    label = "Bicubic"
    uses_exemplar = False

    @contextlib.contextmanager
    def adapted(self, model: DAPFSR, exemplar: Exemplar | None) -> Iterator[Restorer]:
        size = model.config.hr_size

        def restore(lr: torch.Tensor) -> torch.Tensor:
            return F.interpolate(lr, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)

        yield restore


class SourceOnly(Method):
    name = "source-only"
    label = "DAP-FSR (source only)"
    uses_exemplar = False

    @contextlib.contextmanager
    def adapted(self, model: DAPFSR, exemplar: Exemplar | None) -> Iterator[Restorer]:
        yield model.upscale


class SourceOnlyRaw(Method):
    name = "source-only-raw"
    label = "DAP-FSR (source only, raw decoder output)"
    uses_exemplar = False

    @contextlib.contextmanager
    def adapted(self, model: DAPFSR, exemplar: Exemplar | None) -> Iterator[Restorer]:
        yield functools.partial(model.upscale, consistency=False)


@dataclass
class PULSEConfig:
    steps: int = 100
    """Adam steps per face (PULSE's usual budget is a few hundred; DESIGN.md times 100)."""
    learning_rate: float = 0.1
    """Adam step on the normalised code ``v``."""
    prior_weight: float = 1e-3
    """Weight of the Gaussian prior ``mean(v^2)`` on the normalised code."""


class PULSE(Method):
    name = "pulse"
    label = "PULSE-style"
    uses_exemplar = False

    def __init__(self, config: PULSEConfig | None = None) -> None:
        self.config = config or PULSEConfig()

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @contextlib.contextmanager
    def adapted(self, model: DAPFSR, exemplar: Exemplar | None) -> Iterator[Restorer]:
        yield lambda lr: pulse_restore(model, lr, self.config)


def pulse_restore(model: DAPFSR, lr: torch.Tensor, config: PULSEConfig) -> torch.Tensor:
    """Optimise one W+ code per LR face so that its downsampled render matches the face.

    The faces of a batch are independent: the loss is a sum of per-face terms and Adam works
    element-wise, so a batch gives the same result as one face at a time.
    """
    lr_size = model.config.lr_size
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        with torch.enable_grad():
            v = torch.zeros(lr.shape[0], model.num_ws, model.w_dim, device=lr.device, requires_grad=True)
            optimizer = torch.optim.Adam([v], lr=config.learning_rate)
            for _ in range(config.steps):
                rendered = model.decode(model.w_mu + model.w_sigma * v)
                small = F.interpolate(
                    rendered, size=(lr_size, lr_size), mode="bicubic", antialias=True, align_corners=False
                )
                fit = (small - lr).square().mean(dim=(1, 2, 3))
                prior = v.square().mean(dim=(1, 2))
                loss = (fit + config.prior_weight * prior).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            return model.decode(model.w_mu + model.w_sigma * v).clamp(0, 1)
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


@dataclass
class FineTuneConfig:
    steps: int = 100
    learning_rate: float = 1e-4
    """Adam step for every decoder parameter."""
    batch_size: int = 4
    """Fresh degradations of the exemplar per step (its given LR is added to each batch)."""
    perceptual_weight: float = 1.0
    degradation: DegradationConfig = dataclasses.field(default_factory=DegradationConfig)
    seed: int = 0


class DirectFineTune(Method):
    name = "finetune"
    label = "Direct fine-tuning"
    uses_exemplar = True

    def __init__(self, config: FineTuneConfig | None = None, vgg: VGGFeatures | None = None) -> None:
        self.config = config or FineTuneConfig()
        self.vgg = vgg

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @contextlib.contextmanager
    def adapted(self, model: DAPFSR, exemplar: Exemplar | None) -> Iterator[Restorer]:
        if exemplar is None:
            raise ValueError("direct fine-tuning needs an exemplar")
        params = finetune_decoder(model, exemplar, self.config, self._features(model.w_mu.device))

        yield restorer_with(model, params)


def restorer_with(
    model: DAPFSR, params: dict[str, torch.Tensor], consistency: ConsistencyConfig | None = None
) -> Restorer:
    """``model.upscale`` with the decoder tensors in ``params`` (an adaptation kept outside the
    model) in place of the model's own, made consistent with ``consistency`` (default: the
    model's; ``ConsistencyConfig(enabled=False)``: the raw decoder output)."""
    config = model.config.consistency if consistency is None else consistency

    def restore(lr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ws = model.encode(lr)
        return consistent_faces(
            lambda codes: functional_call(model.decoder, params, (codes,)), ws, lr, model.w_sigma, config
        )

    return restore


def finetune_decoder(
    model: DAPFSR, exemplar: Exemplar, config: FineTuneConfig, vgg: VGGFeatures
) -> dict[str, torch.Tensor]:
    """Fine-tuned copies of all decoder parameters (the model itself is not changed)."""
    lr_size = model.config.lr_size
    generator = torch.Generator().manual_seed(config.seed)
    params = {name: p.detach().clone().requires_grad_(True) for name, p in model.decoder.named_parameters()}
    optimizer = torch.optim.Adam(params.values(), lr=config.learning_rate)
    hr = exemplar.hr.expand(config.batch_size, -1, -1, -1)
    target = torch.cat([hr, exemplar.hr])
    for _ in range(config.steps):
        lr = degrade(hr.cpu(), lr_size, config.degradation, generator).to(hr.device)
        lr = torch.cat([lr, exemplar.lr])
        finetune_step(model, params, target, lr, vgg, optimizer, perceptual_weight=config.perceptual_weight)
    return {name: p.detach() for name, p in params.items()}


@dataclass
class AdaINConfig:
    steps: int = 100
    learning_rate: float = 2e-3
    """Adam step for the modulation deltas (relative to each tensor's RMS, as in DAMMA)."""
    batch_size: int = 4
    """Stylised source faces per step (the exemplar's own pair is added to each batch)."""
    strength: float = 1.0
    """AdaIN style strength (1 = the exemplar's feature statistics)."""
    perceptual_weight: float = 1.0
    degradation: DegradationConfig = dataclasses.field(default_factory=DegradationConfig)
    seed: int = 0


class AdaINAugment(Method):
    name = "adain"
    label = "AdaIN augmentation + constrained fine-tuning"
    uses_exemplar = True

    def __init__(
        self,
        config: AdaINConfig | None = None,
        source_faces: torch.Tensor | None = None,
        vgg: VGGFeatures | None = None,
    ) -> None:
        """``source_faces``: aligned source-domain faces ``[N, 3, h, h]`` in ``[0, 1]`` (the
        content images of the style transfer)."""
        self.config = config or AdaINConfig()
        self.source_faces = source_faces
        self.vgg = vgg
        self.transfer: StyleTransfer | None = None

    def settings(self) -> dict[str, Any]:
        n = 0 if self.source_faces is None else len(self.source_faces)
        return {**dataclasses.asdict(self.config), "source_faces": n}

    @contextlib.contextmanager
    def adapted(self, model: DAPFSR, exemplar: Exemplar | None) -> Iterator[Restorer]:
        from facetools_dapfsr.evaluation.adain import StyleTransfer

        if exemplar is None:
            raise ValueError("the AdaIN baseline needs an exemplar")
        if self.source_faces is None or len(self.source_faces) == 0:
            raise ValueError("the AdaIN baseline needs source-domain faces (evaluate --source DIR)")
        device = exemplar.hr.device
        vgg = self._features(device)
        if self.transfer is None:
            self.transfer = StyleTransfer.from_weights_cache(encoder=vgg)
        self.transfer.to(device)
        stylised = torch.cat(
            [
                self.transfer(chunk.to(device), exemplar.hr, self.config.strength)
                for chunk in self.source_faces.split(16)
            ]
        )
        adapted = finetune_modulations(model, stylised, exemplar, self.config, vgg)

        yield restorer_with(model, adapted)


def finetune_modulations(
    model: DAPFSR, faces: torch.Tensor, exemplar: Exemplar, config: AdaINConfig, vgg: VGGFeatures
) -> dict[str, torch.Tensor]:
    """Constrained fine-tuning: only the decoder's modulation parameters learn to map degraded
    ``faces`` (and the exemplar's LR) back to their HR. Returns the adapted modulation tensors."""
    lr_size = model.config.lr_size
    generator = torch.Generator().manual_seed(config.seed)
    delta = ModulationDelta({name: p.detach() for name, p in model.decoder.modulation_parameters()})
    optimizer = torch.optim.Adam(delta.parameters(), lr=config.learning_rate)
    for _ in range(config.steps):
        pick = torch.randint(len(faces), (config.batch_size,), generator=generator)
        hr = torch.cat([faces[pick.to(faces.device)], exemplar.hr])
        lr = torch.cat([degrade(hr[:-1].cpu(), lr_size, config.degradation, generator).to(hr.device), exemplar.lr])
        finetune_step(model, delta.adapted(), hr, lr, vgg, optimizer, perceptual_weight=config.perceptual_weight)
    return {name: value.detach() for name, value in delta.adapted().items()}


class DAMMA(Method):
    name = "damma"
    label = "DAP-FSR + DAMMA (ours)"
    uses_exemplar = True

    def __init__(self, config: DAMMAConfig | None = None, vgg: VGGFeatures | None = None) -> None:
        self.config = config or DAMMAConfig()
        self.vgg = vgg

    def settings(self) -> dict[str, Any]:
        return self.config.to_dict()

    @contextlib.contextmanager
    def adapted(self, model: DAPFSR, exemplar: Exemplar | None) -> Iterator[Restorer]:
        if exemplar is None:
            raise ValueError("DAMMA needs an exemplar")
        vgg = self._features(exemplar.hr.device)
        result = run_damma(model, exemplar.hr, exemplar.lr, config=self.config, vgg=vgg, progress=False)
        model.add_adapter(result.adapter, EVALUATION_ADAPTER)
        try:
            yield model.upscale
        finally:
            model.delete_adapter(EVALUATION_ADAPTER)


METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (Bicubic, SourceOnly, SourceOnlyRaw, PULSE, DirectFineTune, AdaINAugment, DAMMA)
}
DEFAULT_METHODS: tuple[str, ...] = ("bicubic", "source-only", "damma")


def build_methods(
    names: list[str] | tuple[str, ...],
    *,
    pulse: PULSEConfig | None = None,
    finetune: FineTuneConfig | None = None,
    adain: AdaINConfig | None = None,
    damma: DAMMAConfig | None = None,
    source_faces: torch.Tensor | None = None,
    vgg: VGGFeatures | None = None,
) -> list[Method]:
    """Methods by name, in the given order (one VGG network shared by those that need it).

    ``source_faces`` (aligned source-domain faces) are needed by ``adain`` only.

    Raises:
        ValueError: an unknown or repeated name.
    """
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a method is named twice in {', '.join(names)}")
    methods: list[Method] = []
    for name in names:
        if name == "pulse":
            methods.append(PULSE(pulse))
        elif name == "finetune":
            methods.append(DirectFineTune(finetune, vgg=vgg))
        elif name == "adain":
            methods.append(AdaINAugment(adain, source_faces=source_faces, vgg=vgg))
        elif name == "damma":
            methods.append(DAMMA(damma, vgg=vgg))
        else:
            methods.append(METHODS[name]())
    return methods
