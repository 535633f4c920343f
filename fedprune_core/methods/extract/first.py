"""Nested sub-models: a client keeps the first units of every layer (HeteroFL, Diao et al.
2021, "HeteroFL: Computation and Communication Efficient Federated Learning for Heterogeneous
Clients")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register
from .base import StructuredExtractor


@register("extract", "first")
@dataclass(frozen=True)
class FirstUnits(StructuredExtractor):
    def unit_order(self, weight: torch.Tensor, round_idx: int) -> torch.Tensor:
        return torch.arange(weight.shape[0], device=weight.device)
