"""A model described once, as a table of layers.

The table drives everything that depends on the architecture: building the network, which
weights a structured sub-model keeps (`ModelSpec.groups`, `input_group`, `unit_size`), FLOP
counts, per-layer costs and the wire format. Adding a model is one more table (models/zoo.py);
pruning and wire code never name a layer.

No torch here: the configuration imports the model names without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional


@dataclass(frozen=True)
class Layer:
    """One layer: a 'conv' (same padding, then optional max-pooling) or a 'linear'."""

    name: str
    kind: str  # "conv" | "linear"
    width: int  # output channels or features
    kernel: int = 1  # conv only
    pool: int = 1  # max-pooling window after a conv (1 = none)

    def __post_init__(self):
        if self.kind not in ("conv", "linear"):
            raise ValueError(f"layer {self.name}: kind {self.kind!r}; allowed: conv, linear")


@dataclass(frozen=True)
class ParamSpec:
    """Where one named tensor lives in the flat parameter vector."""

    name: str  # e.g. "conv2.weight"
    layer: str  # e.g. "conv2"
    kind: str  # the layer's kind
    shape: tuple[int, ...]
    offset: int
    numel: int

    @property
    def is_weight(self) -> bool:
        return self.name.endswith("weight")

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.numel)


@dataclass(frozen=True)
class ModelSpec:
    """Input geometry plus the layer table. Convolutions come first, then linear layers; the
    last layer is the output layer and is never pruned. A prunable layer's output units (conv
    filters, hidden neurons) form a group named after the layer."""

    name: str
    in_channels: int
    image_size: int
    layers: tuple[Layer, ...]

    def __post_init__(self):
        kinds = [layer.kind for layer in self.layers]
        if kinds[-1] != "linear" or "conv" in kinds[kinds.index("linear"):]:
            raise ValueError(f"model {self.name}: convolutions first, then linear layers ending in the output layer")
        if self.flat_spatial() < 1:
            raise ValueError(f"model {self.name}: {self.image_size}x{self.image_size} inputs "
                             f"are pooled away before the first linear layer")

    # --- structure ---------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.layers[-1].width

    @property
    def groups(self) -> tuple[str, ...]:
        """The prunable groups, in layer order (every layer but the output layer)."""
        return tuple(layer.name for layer in self.layers[:-1])

    @property
    def widths(self) -> dict[str, int]:
        return {layer.name: layer.width for layer in self.layers[:-1]}

    def with_widths(self, widths: dict[str, int]) -> "ModelSpec":
        """The same table with other widths: a structured sub-model (the output layer's width
        changes only when named: a client's own classes, for masked cross-entropy)."""
        layers = tuple(replace(layer, width=widths.get(layer.name, layer.width))
                       for layer in self.layers)
        return replace(self, layers=layers)

    def input_group(self, index: int) -> Optional[str]:
        """The group whose units are layer `index`'s inputs (None: the image)."""
        return self.layers[index - 1].name if index > 0 else None

    def unit_size(self, index: int) -> int:
        """Input features each input unit brings: a conv channel flattened into the first
        linear layer brings its spatial map; otherwise one."""
        layer, previous = self.layers[index], self.layers[index - 1] if index else None
        if layer.kind == "linear" and previous is not None and previous.kind == "conv":
            return self.flat_spatial() ** 2
        return 1

    def spatial_sizes(self) -> list[int]:
        """Input side length of each conv layer (same padding keeps it; pooling divides)."""
        sizes, side = [], self.image_size
        for layer in self.layers:
            if layer.kind == "conv":
                sizes.append(side)
                side //= layer.pool
        return sizes

    def flat_spatial(self) -> int:
        side = self.image_size
        for layer in self.layers:
            if layer.kind == "conv":
                side //= layer.pool
        return side

    def in_features(self, index: int) -> int:
        if index == 0:
            return self.in_channels
        return self.layers[index - 1].width * self.unit_size(index)

    def param_specs(self) -> list[ParamSpec]:
        """Every tensor in the order torch's named_parameters() gives: weight, bias a layer."""
        specs, offset = [], 0
        for i, layer in enumerate(self.layers):
            fan_in = self.in_features(i)
            weight = ((layer.width, fan_in, layer.kernel, layer.kernel) if layer.kind == "conv"
                      else (layer.width, fan_in))
            for name, shape in (("weight", weight), ("bias", (layer.width,))):
                numel = math.prod(shape)
                specs.append(ParamSpec(f"{layer.name}.{name}", layer.name, layer.kind, shape,
                                       offset, numel))
                offset += numel
        return specs

    # --- cost --------------------------------------------------------------------------------
    def forward_macs(self) -> int:
        """Multiply-accumulates of one forward pass of one sample (biases not counted)."""
        sides = iter(self.spatial_sizes())
        macs = 0
        for i, layer in enumerate(self.layers):
            if layer.kind == "conv":
                side = next(sides)
                macs += side * side * layer.width * self.in_features(i) * layer.kernel ** 2
            else:
                macs += self.in_features(i) * layer.width
        return macs

    def train_flops_per_sample(self) -> int:
        """6 FLOPs per MAC for a training step: 2 per MAC, forward + two backward products."""
        return 6 * self.forward_macs()
