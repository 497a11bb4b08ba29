"""The trainable change DAMMA makes to the modulation parameters: full, or low-rank.

``adapted = base + scale * delta`` for every targeted tensor, where ``scale`` is the RMS of the
base tensor so that one learning rate suits layers whose weights differ in magnitude by orders
of magnitude (StyleGAN2 keeps unit-variance weights and scales them at run time; the imported
prior stores the scaled values).

- full: ``delta`` has the tensor's shape (zero at the start);
- low-rank (rank ``r``): ``delta = up @ down`` for 2-D weights ``[out, in]``, with
  ``up [out, r]`` zero at the start and ``down [r, in]`` random, so training starts from the base
  model exactly; 1-D tensors (biases, a few values each) keep a full delta.

The adapter file stores the adapted tensors (full) or ``scale * up`` and ``down`` (low-rank),
see :mod:`facetools_dapfsr.hub.adapters`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from facetools_dapfsr.hub.adapters import LOWRANK_DOWN, LOWRANK_UP

# Floor for the per-tensor scale: an all-zero base tensor still gets a usable step size.
MIN_SCALE = 1e-3


class ModulationDelta(nn.Module):
    """Trainable deltas for a set of named tensors (names as in the base state dict).

    Args:
        base: name -> base value of every targeted tensor (not modified; kept by reference).
        rank: ``None`` or 0 for full deltas; ``r >= 1`` for rank-``r`` deltas on 2-D tensors.
        generator: seeds the random ``down`` factors (low-rank only).
    """

    def __init__(
        self, base: Mapping[str, torch.Tensor], rank: int | None = None, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if rank is not None and rank < 0:
            raise ValueError(f"rank must be >= 0 (0 = full), got {rank}")
        self.rank = rank or None
        self.names = list(base)
        self.base = {name: tensor.detach() for name, tensor in base.items()}
        self.scales = {name: max(float(t.float().square().mean().sqrt()), MIN_SCALE) for name, t in self.base.items()}
        # ParameterList (not a dict): state-dict names contain dots, which ParameterDict refuses.
        self.full = nn.ParameterList()
        self.up = nn.ParameterList()
        self.down = nn.ParameterList()
        self._slot: dict[str, tuple[str, int]] = {}
        for name, tensor in self.base.items():
            if self.factorised(tensor):
                out_features, in_features = tensor.shape
                assert self.rank is not None
                down = torch.randn(self.rank, in_features, generator=generator) / math.sqrt(self.rank)
                self._slot[name] = ("lowrank", len(self.up))
                self.up.append(nn.Parameter(torch.zeros(out_features, self.rank, dtype=torch.float32)))
                self.down.append(nn.Parameter(down.float()))
            else:
                self._slot[name] = ("full", len(self.full))
                self.full.append(nn.Parameter(torch.zeros(tensor.shape, dtype=torch.float32)))
        device = next(iter(self.base.values())).device if self.base else torch.device("cpu")
        self.to(device)

    def factorised(self, tensor: torch.Tensor) -> bool:
        return self.rank is not None and tensor.ndim == 2

    @property
    def kind(self) -> str:
        return "lowrank" if self.rank is not None else "full"

    def delta(self, name: str) -> torch.Tensor:
        kind, index = self._slot[name]
        raw = self.up[index] @ self.down[index] if kind == "lowrank" else self.full[index]
        return raw * self.scales[name]

    def adapted(self) -> dict[str, torch.Tensor]:
        """name -> ``base + delta`` (differentiable with respect to the deltas)."""
        return {name: (self.base[name].float() + self.delta(name)).to(self.base[name].dtype) for name in self.names}

    @torch.no_grad()
    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors an adapter file stores (see the module docstring), on the CPU."""
        tensors = {}
        for name in self.names:
            kind, index = self._slot[name]
            if kind == "lowrank":
                tensors[name + LOWRANK_UP] = (self.up[index] * self.scales[name]).detach().cpu().clone()
                tensors[name + LOWRANK_DOWN] = self.down[index].detach().cpu().clone()
            else:
                tensors[name] = (self.base[name].float() + self.delta(name)).to(self.base[name].dtype).cpu().clone()
        return tensors

    def num_stored_values(self) -> int:
        return sum(t.numel() for t in self.adapter_tensors().values())
