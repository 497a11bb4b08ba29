"""The DAP-FSR model: encoder E + decoder G with manifold-preserving encoding (paper Eq. 2)."""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from facetools_dapfsr.config import (
    ConsistencyConfig,
    DAPFSRConfig,
    DecoderConfig,
    MobileStyleGANConfig,
    StyleGAN2Config,
)
from facetools_dapfsr.hub.cards import ModelCardInfo
from facetools_dapfsr.models.consistency import consistent_faces
from facetools_dapfsr.models.decoder import Decoder
from facetools_dapfsr.models.encoder import DAPFSREncoder

if TYPE_CHECKING:
    from facetools_dapfsr.hub.adapters import Adapter

# Input range tolerance: resampling (bicubic, antialiasing) overshoots [0, 1] slightly.
RANGE_TOLERANCE = 1e-3


def default_model_path() -> Path:
    """Folder of the built-in model shipped inside the package (config, fp16 weights, card)."""
    return Path(str(resources.files("facetools_dapfsr").joinpath("default_model")))


def build_decoder(config: DecoderConfig) -> Decoder:
    """Construct (without loading weights) the decoder a config names."""
    if isinstance(config, StyleGAN2Config):
        from facetools_dapfsr.models.stylegan2 import StyleGAN2Generator

        return StyleGAN2Generator(config)
    if isinstance(config, MobileStyleGANConfig):
        from facetools_dapfsr.models.mobilestylegan import MobileStyleGANDecoder

        return MobileStyleGANDecoder(config)
    raise ValueError(f"unsupported decoder config {type(config).__name__}")


class DAPFSR(nn.Module):
    """Super-resolves tiny, unaligned faces: ``HR = G(mu_w + E(LR) * sigma_w)``.

    Images are float tensors ``[B, 3, H, W]`` with values in ``[0, 1]``. The latent statistics
    ``w_mu``/``w_sigma`` (per W dimension) are buffers saved with the weights; call
    :meth:`refresh_latent_statistics` after changing the decoder.
    """

    w_mu: torch.Tensor
    w_sigma: torch.Tensor

    def __init__(self, config: DAPFSRConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder = build_decoder(config.decoder)
        self.encoder = DAPFSREncoder(config.encoder, num_ws=self.decoder.num_ws, w_dim=self.decoder.w_dim)
        self.register_buffer("w_mu", torch.zeros(self.decoder.w_dim))
        self.register_buffer("w_sigma", torch.ones(self.decoder.w_dim))
        self.card_info = ModelCardInfo()
        """How the model was trained and what it measured: rendered into its README.md."""

    # -- the network -----------------------------------------------------------------------
    @property
    def num_ws(self) -> int:
        return self.decoder.num_ws

    @property
    def w_dim(self) -> int:
        return self.decoder.w_dim

    @torch.no_grad()
    def refresh_latent_statistics(self, num_samples: int = 10_000, seed: int = 0) -> None:
        """Set ``w_mu``/``w_sigma`` from the decoder's W space."""
        mu, sigma = self.decoder.w_statistics(num_samples=num_samples, seed=seed)
        self.w_mu.copy_(mu)
        self.w_sigma.copy_(sigma)

    def encode(self, lr: torch.Tensor) -> torch.Tensor:
        """LR faces ``[B, 3, lr, lr]`` -> W+ codes ``[B, num_ws, w_dim]`` (Eq. 2)."""
        self._check_image(lr, self.config.lr_size, "lr")
        return self.w_mu + self.encoder(lr) * self.w_sigma

    def decode(self, ws: torch.Tensor) -> torch.Tensor:
        """W+ codes ``[B, num_ws, w_dim]`` -> HR faces ``[B, 3, hr, hr]`` (not clamped)."""
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            got = tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
            raise ValueError(f"expected W+ codes of shape [B, {self.num_ws}, {self.w_dim}], got {got}")
        return self.decoder.synthesis(ws)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Training-time forward: differentiable, not clamped."""
        return self.decode(self.encode(lr))

    @property
    def output_sizes(self) -> tuple[int, ...]:
        """Face sides :meth:`upscale` can render (``size=``): for the FFHQ prior 128, 256, 512
        and 1024 (the same template crop read from the prior's frame at more pixels)."""
        return self.decoder.output_sizes

    def upscale(
        self, lr: torch.Tensor, size: int | None = None, consistency: ConsistencyConfig | bool | None = None
    ) -> torch.Tensor:
        """Super-resolve aligned-ish LR faces.

        Args:
            lr: float tensor ``[B, 3, lr_size, lr_size]`` with values in ``[0, 1]``.
            size: side of the rendered face, one of :attr:`output_sizes` (default ``hr_size``).
            consistency: how the output is made to agree with ``lr``
                (:mod:`facetools_dapfsr.models.consistency`); ``None``: ``config.consistency``,
                ``False``: the decoder's raw output, ``True``: the default settings.
        Returns:
            ``[B, 3, size, size]`` in ``[0, 1]``.
        Raises:
            ValueError: wrong type, dtype, shape or value range, or a size the decoder does not offer.
        """
        self._check_image(lr, self.config.lr_size, "lr")
        self.decoder.check_size(size)  # before the encoder runs
        low, high = float(lr.min()), float(lr.max())
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise ValueError(
                f"expected lr values in [0, 1], got [{low:.3g}, {high:.3g}]; convert uint8 images with .float() / 255"
            )
        if consistency is None:
            consistency = self.config.consistency
        elif isinstance(consistency, bool):
            consistency = ConsistencyConfig(enabled=consistency)
        lr = lr.clamp(0, 1)
        with torch.no_grad():
            ws = self.encode(lr)
        return consistent_faces(
            self.decoder.render, ws, lr, self.w_sigma, consistency, lambda codes: self.decoder.render(codes, size)
        )

    @staticmethod
    def _check_image(image: torch.Tensor, size: int, name: str) -> None:
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"expected {name} to be a torch.Tensor, got {type(image).__name__}")
        if not image.is_floating_point():
            raise ValueError(
                f"expected {name} to be a float tensor (float32, float16 or bfloat16) in [0, 1], "
                f"got dtype {image.dtype}; convert uint8 images with .float() / 255"
            )
        if image.ndim != 4 or image.shape[1] != 3 or tuple(image.shape[2:]) != (size, size):
            raise ValueError(f"expected {name} of shape [B, 3, {size}, {size}], got {tuple(image.shape)}")
        if image.shape[0] == 0:
            raise ValueError(f"expected {name} to hold at least one image, got an empty batch")
        if not torch.isfinite(image).all():
            raise ValueError(f"{name} contains NaN or infinite values")

    # -- Hub format (see facetools_dapfsr.hub.checkpoint) ---------------------------------
    def save_pretrained(
        self, save_directory: str | Path, dtype: torch.dtype | None = None, max_shard_bytes: int | None = None
    ) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``model_card.json`` and the model card
        ``README.md`` (from ``hub_cards/base_model.md``) to ``save_directory``.

        Args:
            dtype: store floating-point tensors in this dtype (``torch.float16`` halves the file;
                loading casts them back to the model's dtype). Default: as they are.
            max_shard_bytes: split the weights into ``model-0000k-of-0000n.safetensors`` files of
                at most this size, with the Hub's ``model.safetensors.index.json``. Default: one file.
        """
        from facetools_dapfsr.hub.checkpoint import save_model

        # An active adapter is not part of the base model: save the base weights.
        with self.disable_adapter():
            return save_model(self, save_directory, dtype=dtype, max_shard_bytes=max_shard_bytes)

    @classmethod
    def default(cls) -> DAPFSR:
        """The built-in model, loaded offline: trained on CelebA with the imported FFHQ prior.

        Its encoder ships inside the package; the first call fetches and converts the prior into
        the weights cache (``DAPFSR_CACHE``, with progress), later calls read it from there.
        See ``facetools_dapfsr/default_model/README.md`` for its training, metrics and licence.
        """
        from facetools_dapfsr.hub.checkpoint import WEIGHTS_NAME

        path = default_model_path()
        if not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"the built-in model is missing from this installation ({path})")
        return cls.from_pretrained(path)

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | Path,
        revision: str | None = None,
        adapter: str | Path | None = None,
        adapter_revision: str | None = None,
        adapter_name: str = "default",
    ) -> DAPFSR:
        """Load a model from a local folder or a Hub repository (strict; never unpickles).

        Hub downloads go through ``huggingface_hub`` (cache, ``HF_HUB_OFFLINE=1``,
        ``HF_ENDPOINT``). A file not in its cache, with the Hub unreachable, is an error after one
        request (no retries). The returned model is in eval mode.

        Args:
            adapter: a domain adapter (folder or Hub repo) to load and activate as
                ``adapter_name``; see :meth:`load_adapter`.
            adapter_revision: the adapter repo's revision (branch, tag or commit).
        """
        from facetools_dapfsr.hub.adapters import record_base_source
        from facetools_dapfsr.hub.checkpoint import load_model

        model = load_model(cls, model_id_or_path, revision=revision)
        record_base_source(model, model_id_or_path, revision)
        if adapter is not None:
            model.load_adapter(adapter, adapter_name=adapter_name, revision=adapter_revision)
        return model

    def push_to_hub(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload DAP-FSR model",
    ) -> str:
        """Upload ``config.json`` + ``model.safetensors`` to a Hub model repo; returns the commit URL."""
        from facetools_dapfsr.hub.checkpoint import push_model

        with self.disable_adapter():
            return push_model(
                self, repo_id, revision=revision, private=private, token=token, commit_message=commit_message
            )

    # -- domain adapters (see facetools_dapfsr.hub.adapters) ------------------------------
    # An adapter replaces the decoder's modulation parameters. The base values are kept in
    # memory when the first adapter is attached, so switching never re-reads the base weights,
    # and every adapter is checked against the base model before anything changes.
    def load_adapter(
        self,
        adapter_id_or_path: str | Path,
        adapter_name: str = "default",
        revision: str | None = None,
        set_active: bool = True,
    ) -> str:
        """Load an adapter folder or Hub repo as ``adapter_name`` (and activate it by default).

        Raises:
            FileNotFoundError: no such folder, repo, revision or file.
            facetools_dapfsr.hub.adapters.AdapterError: (a ``ValueError``) the adapter was made
                for another base model, has wrong shapes, or its weights do not match the hash
                recorded in its config. The model is left unchanged.
        """
        from facetools_dapfsr.hub.adapters import load_adapter

        return load_adapter(self, adapter_id_or_path, adapter_name, revision=revision, set_active=set_active)

    def add_adapter(self, adapter: Adapter, adapter_name: str = "default", set_active: bool = True) -> str:
        """Attach an in-memory adapter (e.g. ``run_damma(...).adapter``), checked like a loaded one."""
        from facetools_dapfsr.hub.adapters import add_adapter

        return add_adapter(self, adapter, adapter_name, set_active=set_active)

    def set_adapter(self, adapter_name: str) -> None:
        """Make a loaded adapter the only active one (``set_adapters([adapter_name])``).

        Raises:
            KeyError: no adapter of that name is loaded.
        """
        from facetools_dapfsr.hub.adapters import registry_of

        registry_of(self).set_active(adapter_name)

    def set_adapters(self, adapter_names: str | list[str], weights: float | list[float] | None = None) -> None:
        """Activate several loaded adapters at once, mixed with ``weights`` (default 1 each).

        The decoder's modulation tensors become ``base + sum_i weights[i] * (adapter_i - base)``
        (a low-rank adapter contributes ``weights[i] * up @ down``): ``set_adapters(["nir",
        "old-camera"], weights=[0.7, 0.3])``. One adapter at weight 1 is exactly
        :meth:`set_adapter`; weight 0 leaves the base; an empty list runs the base model. Only
        the modulation tensors are mixed: the adapters' ``alpha`` and exemplar codes are records
        of how they were made and play no part in upscaling. Every adapter was checked against
        this base model when it was loaded.

        Raises:
            ValueError: an unknown or repeated name, as many weights as names not given, or a
                weight that is not a finite number. The model is left unchanged.
        """
        from facetools_dapfsr.hub.adapters import set_adapters

        set_adapters(self, adapter_names, weights)

    def unload(self) -> DAPFSR:
        """Remove every adapter and restore the base tensors (PEFT's ``unload``); returns ``self``."""
        from facetools_dapfsr.hub.adapters import unload

        unload(self)
        return self

    def disable_adapter(self) -> contextlib.AbstractContextManager[None]:
        """Context manager: the base model inside the block, the active adapter(s) again after it."""
        from facetools_dapfsr.hub.adapters import base_model_only

        return base_model_only(self)

    def delete_adapter(self, adapter_name: str) -> None:
        """Forget an adapter; deleting the only active one restores the base model, deleting one
        of a mix leaves the others active with their weights."""
        from facetools_dapfsr.hub.adapters import registry_of

        registry_of(self).delete(adapter_name)

    @property
    def active_adapter(self) -> str | None:
        """Name of the active adapter (the first one of a mix), or None when the base model runs."""
        from facetools_dapfsr.hub.adapters import existing_registry

        registry = existing_registry(self)
        return registry.active if registry is not None else None

    @property
    def active_adapters(self) -> list[str]:
        """Names of the active adapters (PEFT's ``active_adapters``); empty when the base runs."""
        from facetools_dapfsr.hub.adapters import existing_registry

        registry = existing_registry(self)
        return list(registry.active_names) if registry is not None else []

    @property
    def adapter_weights(self) -> list[float]:
        """The weights of :attr:`active_adapters`, in the same order."""
        from facetools_dapfsr.hub.adapters import existing_registry

        registry = existing_registry(self)
        return list(registry.weights) if registry is not None else []

    @property
    def adapter_names(self) -> list[str]:
        """Names of the attached adapters, in the order they were added."""
        from facetools_dapfsr.hub.adapters import existing_registry

        registry = existing_registry(self)
        return list(registry.adapters) if registry is not None else []

    def save_adapter(self, save_directory: str | Path, adapter_name: str | None = None) -> Path:
        """Write an adapter (default: the active one; name it when several are) as ``adapter_config.json`` +
        ``adapter_model.safetensors`` + ``README.md``."""
        from facetools_dapfsr.hub.adapters import save_adapter

        return save_adapter(self, save_directory, adapter_name)

    def push_adapter_to_hub(
        self,
        repo_id: str,
        *,
        adapter_name: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload DAP-FSR adapter",
    ) -> str:
        """Upload an adapter (default: the active one) to a Hub model repo, created if needed.

        Returns the commit URL (a ``huggingface_hub.CommitInfo``; ``.oid`` is the commit hash).
        """
        from facetools_dapfsr.hub.adapters import get_adapter, push_adapter

        return push_adapter(
            get_adapter(self, adapter_name),
            repo_id,
            revision=revision,
            private=private,
            token=token,
            commit_message=commit_message,
        )
