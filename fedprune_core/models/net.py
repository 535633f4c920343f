"""The torch side of a layer table: the network, and the flat vector the server keeps.

The server keeps the global model as one flat float32 vector; `ParamLayout` says where each
named tensor lives in it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..rng import derive_seed
from .table import ModelSpec, ParamSpec


class TableNet(nn.Module):
    """The network a ModelSpec describes: conv (same padding) -> max-pool -> ReLU blocks, then
    linear layers with ReLU between them. Layers are attributes named as in the table, so
    parameter names read `conv1.weight`, ..."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        for i, layer in enumerate(spec.layers):
            fan_in = spec.in_features(i)
            module = (nn.Conv2d(fan_in, layer.width, layer.kernel, padding=layer.kernel // 2)
                      if layer.kind == "conv" else nn.Linear(fan_in, layer.width))
            self.add_module(layer.name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.spec.layers) - 1
        for i, layer in enumerate(self.spec.layers):
            module = getattr(self, layer.name)
            if layer.kind == "conv":
                # Pool before ReLU: the same function (both are monotone) with a quarter of the
                # ReLU work; channels-last inputs keep oneDNN's convolutions in their layout.
                x = module(x)
                x = F.relu(F.max_pool2d(x, layer.pool) if layer.pool > 1 else x)
            else:
                x = module(x.flatten(1) if x.dim() > 2 else x)
                x = x if i == last else F.relu(x)
        return x


class ParamLayout:
    """Names, shapes and offsets of a model's parameters in the flat vector."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.specs: list[ParamSpec] = spec.param_specs()
        self.size = sum(s.numel for s in self.specs)

    def __iter__(self):
        return iter(self.specs)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {s.name: flat[s.slice].view(s.shape) for s in self.specs}


def model_from_flat(spec: ModelSpec, flat: torch.Tensor, device="cpu") -> TableNet:
    """A model holding a copy of `flat` (training must never write into the caller's vector)."""
    model = TableNet(spec).to(device)
    with torch.no_grad():
        for p, value in zip(model.parameters(), flat.to(device).split(
                [p.numel() for p in model.parameters()])):
            p.copy_(value.view_as(p))
    return model.to(memory_format=torch.channels_last)


def flat_params(model: nn.Module) -> torch.Tensor:
    """Parameters in logical (NCHW) order, whatever their memory format."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def init_flat_params(spec: ModelSpec, seed: int) -> torch.Tensor:
    """PyTorch's default initialisation, drawn from the seeded 'init' stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return flat_params(TableNet(spec)).clone()
