"""SimpleCNN and the flat parameter layout the rest of the package works on.

The server keeps the global model as one flat float32 vector; `ParamLayout` says where each
named tensor lives in it. Structured pruning (pruning.py) builds smaller SimpleCNNs from the
same `LAYERS` table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.catalog import DatasetInfo

# (layer, group of its input units, group of its output units); a group is what structured
# pruning keeps or drops together: conv filters, hidden neurons. None = never pruned.
LAYERS = (("conv1", None, "conv1"), ("conv2", "conv1", "conv2"),
          ("fc1", "conv2", "fc1"), ("fc2", "fc1", None))
FULL_WIDTHS = {"conv1": 32, "conv2": 64, "fc1": 256}


@dataclass(frozen=True)
class ModelShape:
    """What the network is sized from: the dataset and the widths of the prunable groups."""

    in_channels: int
    image_size: int
    num_classes: int
    widths: tuple[int, int, int] = (32, 64, 256)

    @classmethod
    def for_dataset(cls, info: DatasetInfo) -> "ModelShape":
        return cls(info.channels, info.image_size, info.num_classes)

    def with_widths(self, widths: dict[str, int]) -> "ModelShape":
        return ModelShape(self.in_channels, self.image_size, self.num_classes,
                          (widths["conv1"], widths["conv2"], widths["fc1"]))

    @property
    def width_of(self) -> dict[str, int]:
        return dict(zip(("conv1", "conv2", "fc1"), self.widths))

    @property
    def fc_spatial(self) -> int:
        """Pixels per channel entering fc1 (two 2x2 poolings)."""
        return (self.image_size // 4) ** 2

    def forward_macs(self) -> int:
        """Multiply-accumulates of one forward pass of one sample."""
        c1, c2, h = self.widths
        s = self.image_size
        return (s * s * c1 * self.in_channels * 9 + (s // 2) ** 2 * c2 * c1 * 9
                + c2 * self.fc_spatial * h + h * self.num_classes)

    def train_flops_per_sample(self) -> int:
        """6 FLOPs per MAC for a training step: 2 per MAC, forward + two backward products."""
        return 6 * self.forward_macs()


class SimpleCNN(nn.Module):
    """conv 3x3 -> pool -> conv 3x3 -> pool -> fc -> fc (the seed's MNIST CNN)."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        c1, c2, h = shape.widths
        self.shape = shape
        self.conv1 = nn.Conv2d(shape.in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * shape.fc_spatial, h)
        self.fc2 = nn.Linear(h, shape.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pool before ReLU: the same function (both are monotone) with a quarter of the ReLU
        # work; channels-last inputs keep oneDNN's convolutions in their native layout.
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@dataclass(frozen=True)
class ParamSpec:
    name: str  # e.g. "conv2.weight"
    layer: str  # e.g. "conv2"
    shape: tuple[int, ...]
    offset: int  # start in the flat vector
    numel: int

    @property
    def is_weight(self) -> bool:
        return self.name.endswith("weight")

    @property
    def is_fc(self) -> bool:
        return self.layer.startswith("fc")

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.numel)


class ParamLayout:
    """Names, shapes and offsets of a SimpleCNN's parameters in the flat vector."""

    def __init__(self, shape: ModelShape):
        self.shape = shape
        self.specs: list[ParamSpec] = []
        offset = 0
        for name, p in SimpleCNN(shape).named_parameters():
            self.specs.append(ParamSpec(name, name.split(".")[0], tuple(p.shape), offset,
                                        p.numel()))
            offset += p.numel()
        self.size = offset

    def __iter__(self):
        return iter(self.specs)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {s.name: flat[s.slice].view(s.shape) for s in self.specs}


def model_from_flat(shape: ModelShape, flat: torch.Tensor, device="cpu") -> SimpleCNN:
    """A model holding a copy of `flat` (training must never write into the caller's vector)."""
    model = SimpleCNN(shape).to(device)
    with torch.no_grad():
        for p, value in zip(model.parameters(), flat.to(device).split(
                [p.numel() for p in model.parameters()])):
            p.copy_(value.view_as(p))
    return model.to(memory_format=torch.channels_last)


def flat_params(model: nn.Module) -> torch.Tensor:
    """Parameters in logical (NCHW) order, whatever their memory format."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def init_flat_params(shape: ModelShape, seed: int) -> torch.Tensor:
    """PyTorch's default initialisation, drawn from the seeded 'init' stream."""
    from ..rng import derive_seed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return flat_params(SimpleCNN(shape)).clone()
