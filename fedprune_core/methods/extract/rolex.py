"""Rolling sub-model extraction (FedRolex, Alam et al. 2022, "FedRolex: Model-Heterogeneous
Federated Learning with Rolling Sub-Model Extraction", NeurIPS).

The kept window of every layer rolls by one unit a round: in round r (1-based) a client keeping
k of a group's n units keeps units (r - 1), r, ..., (r + k - 2), modulo n. Over n rounds every
unit is trained by clients of every width, unlike nested (`first`) sub-models whose outer units
only the strongest clients see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register
from .base import StructuredExtractor


@register("extract", "rolex")
@dataclass(frozen=True)
class RollingWindow(StructuredExtractor):
    def unit_order(self, weight: torch.Tensor, round_idx: int) -> torch.Tensor:
        width = weight.shape[0]
        start = (round_idx - 1) % width
        return (start + torch.arange(width, device=weight.device)) % width
