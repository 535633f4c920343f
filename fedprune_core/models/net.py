"""The torch side of a layer table: the network, and the flat vector the server keeps.

The server keeps the global model as one flat float32 vector; `ParamLayout` says where each
named tensor lives in it. A model's state is its parameters alone: norm layers keep no running
statistics (static batch norm: fl/evaluate.py computes evaluation statistics when needed).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..rng import derive_seed
from .table import ModelSpec, ParamSpec

EPS = 1e-5  # torch's BatchNorm2d / GroupNorm default


class _Norm(nn.Module):
    """A norm row's affine parameters (weight 1, bias 0 at initialisation, as torch's norms)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))


class TableNet(nn.Module):
    """The network a ModelSpec describes (models/table.py: the rows run in order, each reading
    one earlier row). Layers are attributes named as in the table, so parameter names read
    `conv1.weight`, ...

    `forward` takes three optional per-group inputs of the width methods (methods/train), one
    value per prunable group in `spec.groups` order:
    - `scales`: while training, the output of every conv and linear row of a group is divided
      by the group's value (HeteroFL's scaler, Diao et al. 2021); in eval mode they are
      ignored, as HeteroFL evaluates. Scaling every row that writes a residual stream scales
      the stream, which equals HeteroFL's scaler before each norm;
    - `widths`: only the first `widths[g]` units of each group run (FjORD's ordered dropout,
      Horvath et al. 2021): the weights are sliced, so a narrower step costs fewer FLOPs;
    - `unit_masks`: each group's output multiplied by a 0/1 mask over its units: the same
      function as `widths` at full-width cost, for the cohort engine's vmap (no slicing there).
      Group norm computes its groups over the masked-in channels, so the masked model equals
      the sliced one for it too.
    `sample_weight` (the cohort engine's padded batches): batch norm's training statistics
    over the samples of weight 1 only.

    Batch norm (`bn` rows): batch statistics in train mode; in eval mode the statistics in
    `norm_stats` (name -> (mean, var), set by fl/evaluate.py), or batch statistics when none
    are set (HeteroFL's track=False models evaluate so). `forward(..., moments={})` records each
    bn row's batch (count, mean, variance) into the dict, for that pass.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.norm_stats: Optional[dict[str, tuple[torch.Tensor, torch.Tensor]]] = None
        for i, layer in enumerate(spec.layers):
            fan_in = spec.in_features(i)
            if layer.is_norm:
                module = _Norm(spec.width_of(i))
            elif layer.kind == "conv":
                module = nn.Conv2d(fan_in, layer.width, layer.kernel, stride=layer.stride,
                                   padding=layer.kernel // 2, bias=layer.bias)
            else:
                module = nn.Linear(fan_in, layer.width, bias=layer.bias)
            self.add_module(layer.name, module)
        index = {g: k for k, g in enumerate(spec.groups)}
        last = len(spec.layers) - 1
        self._group = [index.get(spec.group_of(i)) if i < last else None
                       for i in range(len(spec.layers))]
        self._source = [spec.source(i) for i in range(len(spec.layers))]
        self._relu = [(layer.relu if layer.relu is not None
                       else (not layer.is_norm and i < last))
                      for i, layer in enumerate(spec.layers)]
        read = {layer.input for layer in spec.layers} | {layer.add for layer in spec.layers}
        self._keep = [layer.name in read for layer in spec.layers]
        # A strided 1x1 convolution (a ResNet shortcut) runs as a 1x1 convolution of the
        # subsampled map: the same function, and it avoids a crash of torch 2.14's CPU
        # (oneDNN) backward of strided 1x1 convolutions on channels-last maps with 2+ threads
        # and odd batch sizes (segmentation fault).
        self._subsample = [layer.kind == "conv" and layer.kernel == 1 and layer.stride > 1
                           for layer in spec.layers]

    def forward(self, x: torch.Tensor, scales=None, widths=None, unit_masks=None,
                sample_weight=None, moments: Optional[dict] = None) -> torch.Tensor:
        spec, image = self.spec, x
        last = len(spec.layers) - 1
        scales = scales if self.training else None
        saved: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(spec.layers):
            module = getattr(self, layer.name)
            src = self._source[i]
            if src != i - 1:
                x = image if src < 0 else saved[spec.layers[src].name]
            g = self._group[i]
            if layer.is_norm:
                mask = None if unit_masks is None else unit_masks[g]
                x = self._norm(layer, module, x, mask, sample_weight, moments)
            elif widths is None and layer.kind == "conv" and self._subsample[i]:
                x = F.conv2d(x[:, :, ::layer.stride, ::layer.stride], module.weight, module.bias)
            elif widths is None:
                x = module(x) if layer.kind == "conv" else module(self._features(layer, x))
            else:
                x = self._sliced(i, module, x, widths)
            if layer.kind == "conv" and layer.pool > 1:
                # Pool before ReLU: the same function (both are monotone) with a quarter of the
                # ReLU work; channels-last inputs keep oneDNN's convolutions in their layout.
                x = F.max_pool2d(x, layer.pool)
            if i == last:
                break
            if scales is not None and not layer.is_norm:
                # after pooling: max-pooling commutes with a positive scale
                x = x / scales[g]
            if layer.add:
                x = x + saved[layer.add]
            if self._relu[i]:
                x = F.relu(x)
            if layer.is_norm and layer.pool > 1:  # a conv's norm normalises its whole map
                x = F.max_pool2d(x, layer.pool)
            if unit_masks is not None:
                x = x * (unit_masks[g].view(1, -1, 1, 1) if x.dim() == 4 else unit_masks[g])
            if self._keep[i]:
                saved[layer.name] = x
        return x

    @staticmethod
    def _features(layer, x: torch.Tensor) -> torch.Tensor:
        """A linear row's input: a conv map averaged over positions (avgpool) or flattened in
        NCHW order; features as they are."""
        if x.dim() == 2:
            return x
        return x.mean((2, 3)) if layer.avgpool else x.flatten(1)

    def _sliced(self, i: int, module, x: torch.Tensor, widths) -> torch.Tensor:
        """Row i with only its first widths[g] output units (all of the output layer's), fed
        by the units its input kept: its first input channels, or, where a conv map is
        flattened into a linear row, its first features (NCHW flatten order)."""
        layer = self.spec.layers[i]
        out = widths[self._group[i]] if i < len(self.spec.layers) - 1 else layer.width
        bias = module.bias[:out] if module.bias is not None else None
        if layer.kind == "conv" and self._subsample[i]:
            return F.conv2d(x[:, :, ::layer.stride, ::layer.stride],
                            module.weight[:out, :x.shape[1]], bias)
        if layer.kind == "conv":
            return F.conv2d(x, module.weight[:out, :x.shape[1]], bias, stride=layer.stride,
                            padding=layer.kernel // 2)
        x = self._features(layer, x)
        return F.linear(x, module.weight[:out, :x.shape[1]], bias)

    def _norm(self, layer, module, x: torch.Tensor, mask, sample_weight,
              moments: Optional[dict]) -> torch.Tensor:
        channels = x.shape[1]
        weight, bias = module.weight[:channels], module.bias[:channels]
        if layer.kind == "gn":
            return group_norm(x, weight, bias, layer.num_groups, mask)
        if not self.training and self.norm_stats is not None:
            mean, var = self.norm_stats[layer.name]
            return F.batch_norm(x, mean[:channels], var[:channels], weight, bias, False, 0.0,
                                EPS)
        if sample_weight is None and moments is None:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, EPS)
        mean, var, count = _batch_moments(x, sample_weight)
        if moments is not None:
            moments[layer.name] = (count, mean, var)
        shape = (1, -1, 1, 1)
        return ((x - mean.view(shape)) * torch.rsqrt(var.view(shape) + EPS)
                * weight.view(shape) + bias.view(shape))


def _batch_moments(x: torch.Tensor, sample_weight: Optional[torch.Tensor]):
    """Per channel: mean and (biased) variance over samples and positions, as batch norm
    normalises with; samples weighted (0 = padding) when weights are given."""
    positions = x.shape[2] * x.shape[3]
    if sample_weight is None:
        mean = x.mean((0, 2, 3))
        var = (x - mean.view(1, -1, 1, 1)).square().mean((0, 2, 3))
        return mean, var, x.shape[0] * positions
    w = sample_weight.view(-1, 1, 1, 1)
    count = (sample_weight.sum() * positions).clamp(min=1.0)
    mean = (x * w).sum((0, 2, 3)) / count
    var = ((x - mean.view(1, -1, 1, 1)).square() * w).sum((0, 2, 3)) / count
    return mean, var, count


def group_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int,
               mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Group norm over the channels present (mask 1; all without a mask): the k-th of K such
    channels is in group floor(k * num_groups / K), so groups are contiguous and of equal size
    when num_groups divides K (torch's GroupNorm), of nearly equal size otherwise (a pruned
    width need not divide); mean and biased variance per sample and group."""
    n, c = x.shape[:2]
    present = torch.ones(c, device=x.device) if mask is None else mask
    position = torch.cumsum(present, 0) - 1
    group = torch.floor(position * num_groups / present.sum().clamp(min=1.0))
    member = (group[:, None] == torch.arange(num_groups, device=x.device)[None, :]
              ).to(x.dtype) * present[:, None]  # [C, G]
    flat = x.reshape(n, c, -1)
    count = (member.sum(0) * flat.shape[2]).clamp(min=1.0)  # [G]
    mean = (flat.sum(2) @ member) / count  # [N, G]
    centred = flat - (mean @ member.T)[:, :, None]
    var = (centred.square().sum(2) @ member) / count
    out = centred * torch.rsqrt(var @ member.T + EPS)[:, :, None]
    return out.reshape(x.shape) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


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
