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
    parameter names read `conv1.weight`, ...

    `forward` takes three optional per-group inputs of the width methods (methods/train), one
    value per prunable group in table order:
    - `scales`: while training, each group's output is divided by its value (HeteroFL's
      scaler, Diao et al. 2021); in eval mode they are ignored, as HeteroFL evaluates;
    - `widths`: only the first `widths[g]` units of each group run (FjORD's ordered dropout,
      Horvath et al. 2021): the weights are sliced, so a narrower step costs fewer FLOPs;
    - `unit_masks`: each group's output multiplied by a 0/1 mask over its units: the same
      function as `widths` at full-width cost, for the cohort engine's vmap (no slicing there).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        for i, layer in enumerate(spec.layers):
            fan_in = spec.in_features(i)
            module = (nn.Conv2d(fan_in, layer.width, layer.kernel, padding=layer.kernel // 2)
                      if layer.kind == "conv" else nn.Linear(fan_in, layer.width))
            self.add_module(layer.name, module)

    def forward(self, x: torch.Tensor, scales=None, widths=None, unit_masks=None
                ) -> torch.Tensor:
        last = len(self.spec.layers) - 1
        scales = scales if self.training else None
        for i, layer in enumerate(self.spec.layers):
            module = getattr(self, layer.name)
            if widths is None:
                x = module(x) if layer.kind == "conv" else module(
                    x.flatten(1) if x.dim() > 2 else x)
            else:
                x = self._sliced(i, module, x, widths)
            if layer.kind == "conv" and layer.pool > 1:
                # Pool before ReLU: the same function (both are monotone) with a quarter of the
                # ReLU work; channels-last inputs keep oneDNN's convolutions in their layout.
                x = F.max_pool2d(x, layer.pool)
            if i == last:
                break
            if scales is not None:  # after pooling: max-pooling commutes with a positive scale
                x = x / scales[i]
            x = F.relu(x)
            if unit_masks is not None:
                x = x * (unit_masks[i].view(1, -1, 1, 1) if x.dim() == 4 else unit_masks[i])
        return x

    def _sliced(self, i: int, module, x: torch.Tensor, widths) -> torch.Tensor:
        """Layer i with only its first widths[i] output units (all of the output layer's), fed
        by the units the previous layer kept: its first input channels, or, where a conv map
        is flattened into the first linear layer, its first features (NCHW flatten order)."""
        layer = self.spec.layers[i]
        out = widths[i] if i < len(self.spec.layers) - 1 else layer.width
        if layer.kind == "conv":
            return F.conv2d(x, module.weight[:out, :x.shape[1]], module.bias[:out],
                            padding=layer.kernel // 2)
        x = x.flatten(1) if x.dim() > 2 else x
        return F.linear(x, module.weight[:out, :x.shape[1]], module.bias[:out])


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
