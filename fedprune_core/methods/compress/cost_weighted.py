"""Cost-weighted top-k: ranks |value| / cost over the whole model, so coordinates of expensive
(fully connected) layers must be larger to be sent. Within one tensor every coordinate costs
the same, so the rule only differs from top-k across tensors (scope 'model')."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register
from .base import Compressed, Compressor, num_kept, topk_exact


@register("compress", "cost_weighted")
@dataclass(frozen=True)
class CostWeighted(Compressor):
    sparsity_ratio: float = 0.95
    conv_cost: float = 1.0
    fc_cost: float = 2.0

    def compress(self, combined, segments, kinds, generator) -> Compressed:
        costs = [self.fc_cost if kind == "linear" else self.conv_cost for kind in kinds]
        per_coord = torch.repeat_interleave(torch.tensor(costs, device=combined.device),
                                            torch.tensor(segments, device=combined.device))
        scores = combined.abs() / per_coord
        positions = topk_exact(scores, num_kept(combined.numel(), self.sparsity_ratio))
        return Compressed(positions, combined[positions])
