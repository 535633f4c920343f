"""A model described once, as a table of layers.

The table drives everything that depends on the architecture: building the network, which
weights a structured sub-model keeps (`ModelSpec.groups`, `group_of`, `input_group`,
`unit_size`), FLOP counts, per-layer costs and the wire format. Adding a model is one more
table (models/zoo.py); pruning and wire code never name a layer.

The grammar. A table is a program: rows run in order, each reading one earlier row's output
(`input`, default the row above; the image for the first row) and writing its own:

    conv    weight [width, in, kernel, kernel] (+ bias): same padding, `stride`, then `pool`x`pool`
            max-pooling;
    linear  weight [width, in] (+ bias), reading a feature vector, a conv map flattened (NCHW
            order) or, with `avgpool`, a conv map averaged over its positions;
    bn      static batch norm (HeteroFL's sBN, Diao et al. 2021): batch statistics while
            training, statistics of a pass over training data when evaluating (fl/evaluate.py);
            affine weight and bias per channel;
    gn      group norm (Wu & He 2018) with `num_groups` groups of (nearly) equal size over the
            channels present, affine weight and bias per channel.

After its operation a row adds another row's output (`add`, a residual connection) and applies
a ReLU (`relu`; by default after every conv and linear row but the output row, never after a
norm row); a norm row with `pool` max-pools after that ReLU (a convolution normalised over its
whole map, then pooled, as HeteroFL's Conv). The last row is the output layer (linear, never
pruned).

Groups. The output units of a conv or linear row (filters, neurons) belong to a group: its own
name by default, or the `group` it names. Rows that add into one residual stream name one group,
so a structured sub-model keeps the same channel set in all of them: the stem (or a stage's
shortcut), the last convolution of every block of the stage, and every norm on the stream. A
norm row's units are its input's, and so are its affine parameters. A group is named after one
of its conv or linear rows, whose weight rows rank its units (methods/extract ranks by
`<group>.weight`: a stream by its stem's or shortcut's filters). `with_widths` sets a group's
width in every row of it, which is how structured sub-models, FLOP counts and the width methods
follow residual streams.

Not counted in FLOPs (as biases are not): norm layers, residual additions, ReLU and pooling,
elementwise operations: about 0.3% of a ResNet-18's forward FLOPs on 32x32 inputs.

No torch here: the configuration imports the model names without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Optional

KINDS = ("conv", "linear", "bn", "gn")
NORMS = ("bn", "gn")


@dataclass(frozen=True)
class Layer:
    """One row of the table (see the module docstring for the grammar)."""

    name: str
    kind: str  # one of KINDS
    width: int = 0  # conv/linear: output channels or features; norm rows: 0 (their input's)
    kernel: int = 1  # conv only
    pool: int = 1  # max-pooling window after a conv, or after a norm row and its ReLU (1 = none)
    stride: int = 1  # conv only
    bias: bool = True  # conv/linear: a bias vector (norm rows always have weight and bias)
    group: str = ""  # conv/linear: the group of its output units ("" = its own name)
    input: str = ""  # the row it reads ("" = the row above; the image for the first row)
    add: str = ""  # a row whose output is added to this row's (a residual connection)
    relu: Optional[bool] = None  # None: after every conv and linear row but the output row
    avgpool: bool = False  # linear reading a conv map: average it over positions (else flatten)
    num_groups: int = 0  # gn only

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"layer {self.name}: kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        if not self.name or "." in self.name:
            raise ValueError(f"layer {self.name!r}: a name without dots (torch module names)")
        if self.kind in NORMS and (self.width or self.group):
            raise ValueError(f"layer {self.name}: a norm row takes its input's units "
                             f"(no width or group of its own)")
        if self.kind == "gn" and self.num_groups < 1:
            raise ValueError(f"layer {self.name}: gn needs num_groups >= 1")

    @property
    def is_norm(self) -> bool:
        return self.kind in NORMS


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
        """A conv or linear weight (a norm's affine weight is a per-channel scale, as a bias
        is a per-unit shift: unstructured magnitude pruning keeps both)."""
        return self.name.endswith("weight") and self.kind not in NORMS

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.numel)


@dataclass(frozen=True)
class ModelSpec:
    """Input geometry plus the layer table. The last row is the output layer and is never
    pruned; its units are the classes (a client's own classes under masked cross-entropy)."""

    name: str
    in_channels: int
    image_size: int
    layers: tuple[Layer, ...]

    def __post_init__(self):
        rows = self.layers
        names = [row.name for row in rows]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.name}: layer names must be unique")
        if rows[-1].kind != "linear":
            raise ValueError(f"model {self.name}: the output layer (last row) must be linear")
        index = {n: i for i, n in enumerate(names)}
        maps = []  # does row i write a conv map (4-D) rather than a feature vector?
        for i, row in enumerate(rows):
            for ref in (row.input, row.add):
                if ref and index.get(ref, i) >= i:
                    raise ValueError(f"model {self.name}: layer {row.name} reads {ref!r}, "
                                     f"which is not an earlier row")
            src = self._source(i, index)
            if row.is_norm and src < 0:
                raise ValueError(f"model {self.name}: norm layer {row.name} must read a "
                                 f"convolution's output, not the image")
            reads_map = src < 0 or maps[src]
            if row.kind != "linear" and not reads_map:
                raise ValueError(f"model {self.name}: convolutions first, then linear layers "
                                 f"ending in the output layer ({row.name} reads features)")
            maps.append(row.kind != "linear")
        last = rows[-1].name
        if any(last in (row.input, row.add) for row in rows):
            raise ValueError(f"model {self.name}: the output layer feeds nothing")
        if any(r.avgpool and (r.kind != "linear" or not maps[self._source(i, index)])
               for i, r in enumerate(rows) if self._source(i, index) >= 0):
            raise ValueError(f"model {self.name}: avgpool only on a linear row reading a map")
        if self.flat_spatial() < 1:
            raise ValueError(f"model {self.name}: {self.image_size}x{self.image_size} inputs "
                             f"are pooled away before the first linear layer")
        self._check_groups()

    def _source(self, i: int, index: dict[str, int]) -> int:
        row = self.layers[i]
        return index[row.input] if row.input else i - 1

    def _check_groups(self) -> None:
        widths, owners = {}, {}
        for i, row in enumerate(self.layers[:-1]):
            if row.is_norm:
                continue
            g = self.group_of(i)
            if widths.setdefault(g, row.width) != row.width:
                raise ValueError(f"model {self.name}: group {g} has widths {widths[g]} and "
                                 f"{row.width} ({row.name}); a group's rows share their units")
            owners.setdefault(g, set()).add(row.name)
        for g, members in owners.items():
            if g not in members:
                raise ValueError(f"model {self.name}: group {g!r} must be named after one of "
                                 f"its conv or linear rows ({', '.join(sorted(members))})")
        sides = self._sides
        for i, row in enumerate(self.layers):
            if row.add:
                j = self.index[row.add]
                if self.group_of(i) != self.group_of(j) or sides[i][1] != sides[j][1]:
                    raise ValueError(f"model {self.name}: {row.name} adds {row.add}: both must "
                                     f"be one group (one channel set) of the same spatial size")

    # --- structure ---------------------------------------------------------------------------
    @cached_property
    def index(self) -> dict[str, int]:
        return {row.name: i for i, row in enumerate(self.layers)}

    def source(self, i: int) -> int:
        """The row whose output row i reads (-1: the image)."""
        return self._source(i, self.index)

    @property
    def num_classes(self) -> int:
        return self.layers[-1].width

    def group_of(self, i: int) -> str:
        """The group of row i's output units (a norm row: its input's; the output row: its own
        name, which is not a prunable group)."""
        row = self.layers[i]
        if row.is_norm:
            return self.group_of(self.source(i))
        if i == len(self.layers) - 1:
            return row.name
        return row.group or row.name

    @property
    def groups(self) -> tuple[str, ...]:
        """The prunable groups, in order of their first row (every row's but the output's)."""
        return tuple(dict.fromkeys(self.group_of(i) for i, row in enumerate(self.layers[:-1])
                                   if not row.is_norm))

    @property
    def widths(self) -> dict[str, int]:
        out = {}
        for i, row in enumerate(self.layers[:-1]):
            if not row.is_norm:
                out.setdefault(self.group_of(i), row.width)
        return out

    def has_norm(self, kind: str) -> bool:
        """Has the table a normalisation row of this kind ("bn" or "gn")?"""
        return any(row.kind == kind for row in self.layers)

    def with_widths(self, widths: dict[str, int]) -> "ModelSpec":
        """The same table with other widths: a structured sub-model; a group's width changes in
        every row of it (the output layer's width changes only when named: a client's own
        classes, for masked cross-entropy)."""
        layers = tuple(row if row.is_norm else
                       replace(row, width=widths.get(self.group_of(i), row.width))
                       for i, row in enumerate(self.layers))
        return replace(self, layers=layers)

    def input_group(self, index: int) -> Optional[str]:
        """The group whose units are row `index`'s inputs (None: the image)."""
        src = self.source(index)
        return self.group_of(src) if src >= 0 else None

    def width_of(self, i: int) -> int:
        """Output units of row i (a norm row: its input's)."""
        row = self.layers[i]
        return self.width_of(self.source(i)) if row.is_norm else row.width

    def unit_size(self, index: int) -> int:
        """Input features each input unit brings: a conv channel flattened into a linear row
        brings its spatial map; otherwise one (averaged maps included)."""
        row, src = self.layers[index], self.source(index)
        if row.kind != "linear" or row.avgpool:
            return 1
        if src < 0:
            return self.image_size ** 2
        return 1 if self.layers[src].kind == "linear" else self._sides[src][1] ** 2

    @cached_property
    def _sides(self) -> tuple[tuple[int, int], ...]:
        """(input side, output side) of every row; 1 for feature vectors."""
        out = []
        for i, row in enumerate(self.layers):
            src = self.source(i)
            side = self.image_size if src < 0 else out[src][1]
            if row.kind == "conv":
                after = (side + 2 * (row.kernel // 2) - row.kernel) // row.stride + 1
                out.append((side, after // row.pool))
            elif row.kind == "linear":
                out.append((side, 1))
            else:
                out.append((side, side // row.pool))
        return tuple(out)

    def spatial_sizes(self) -> list[int]:
        """Input side length of each conv layer."""
        return [self._sides[i][0] for i, row in enumerate(self.layers) if row.kind == "conv"]

    def flat_spatial(self) -> int:
        """Side of the map the first linear row reads (flattened or averaged)."""
        for i, row in enumerate(self.layers):
            if row.kind == "linear":
                return self._sides[i][0]
        return 1

    def in_features(self, index: int) -> int:
        src = self.source(index)
        if src < 0:
            return self.in_channels * self.unit_size(index)
        return self.width_of(src) * self.unit_size(index)

    def param_specs(self) -> list[ParamSpec]:
        """Every tensor in the order torch's named_parameters() gives: weight, bias a row."""
        specs, offset = [], 0
        for i, row in enumerate(self.layers):
            fan_in = self.in_features(i)
            if row.is_norm:
                shapes = (("weight", (self.width_of(i),)), ("bias", (self.width_of(i),)))
            else:
                weight = ((row.width, fan_in, row.kernel, row.kernel) if row.kind == "conv"
                          else (row.width, fan_in))
                shapes = (("weight", weight),) + ((("bias", (row.width,)),) if row.bias else ())
            for name, shape in shapes:
                numel = math.prod(shape)
                specs.append(ParamSpec(f"{row.name}.{name}", row.name, row.kind, shape,
                                       offset, numel))
                offset += numel
        return specs

    # --- cost --------------------------------------------------------------------------------
    def forward_macs(self) -> int:
        """Multiply-accumulates of one forward pass of one sample: convolutions (at their
        output positions, before pooling) and linear rows; biases, norms, additions, ReLU and
        pooling are not counted."""
        macs = 0
        for i, row in enumerate(self.layers):
            if row.kind == "conv":
                side = self._sides[i][0]
                out = (side + 2 * (row.kernel // 2) - row.kernel) // row.stride + 1
                macs += out * out * row.width * self.in_features(i) * row.kernel ** 2
            elif row.kind == "linear":
                macs += self.in_features(i) * row.width
        return macs

    def train_flops_per_sample(self) -> int:
        """6 FLOPs per MAC for a training step: 2 per MAC, forward + two backward products."""
        return 6 * self.forward_macs()
