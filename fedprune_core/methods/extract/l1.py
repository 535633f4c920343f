"""Structured pruning by L1 norm: a client keeps the filters and neurons whose weights have
the largest L1 norm (Li et al. 2017, "Pruning Filters for Efficient ConvNets")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register
from .base import StructuredExtractor


@register("extract", "l1")
@dataclass(frozen=True)
class L1Norm(StructuredExtractor):
    def unit_order(self, weight: torch.Tensor, round_idx: int) -> torch.Tensor:
        norms = weight.abs().flatten(1).sum(1)
        return torch.sort(norms, descending=True, stable=True)[1]  # ties: the lower index
