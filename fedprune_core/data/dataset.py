"""A dataset in memory: uint8 images and int64 labels as tensors, normalised per batch (no
per-sample transforms in the training loop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .catalog import DatasetInfo


@dataclass(frozen=True)
class TensorDataset:
    """Images as uint8 [N, C, H, W], labels as int64 [N] and, for datasets that record who wrote
    each sample (FEMNIST), `groups`: the writer's number, int64 [N] (None otherwise)."""

    images: torch.Tensor
    labels: torch.Tensor
    groups: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.labels)


def normalize(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 batch -> normalised float32, channels-last (the fast layout for the CNN on CPU)."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in info.std], device=images.device)
    shift = torch.tensor([m / s for m, s in zip(info.mean, info.std)], device=images.device)
    x = images.to(torch.float32, memory_format=torch.channels_last)
    return x.mul_(scale.view(1, -1, 1, 1)).sub_(shift.view(1, -1, 1, 1))
