"""Masked FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"), averaged per coordinate over the clients that trained it (HeteroFL-style
masked averaging, Diao et al. 2021), then applied with a server learning rate.

Clients are weighted by their sample counts (or uniformly); a coordinate a client trained but
did not send counts as a zero update from it. The server aggregates only what it decoded."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register
from .base import Aggregator


def masked_mean(params: torch.Tensor, updates, weighting: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the weighted mean update per coordinate over the clients that trained it, trained)."""
    numerator = torch.zeros_like(params)
    denominator = torch.zeros_like(params)
    for u in updates:
        weight = float(u.num_samples) if weighting == "samples" else 1.0
        numerator.index_add_(0, u.coords, u.values * weight)
        denominator.index_add_(0, u.plan.coords,
                               torch.full((len(u.plan.coords),), weight, device=params.device))
    trained = denominator > 0
    step = torch.zeros_like(params)
    step[trained] = numerator[trained] / denominator[trained]
    return step, trained


@register("aggregate", "fedavg")
@dataclass(frozen=True)
class FedAvg(Aggregator):
    aggregation_weights: str = "samples"
    server_lr: float = 1.0

    def aggregate(self, params, updates, state):
        step, trained = masked_mean(params, updates, self.aggregation_weights)
        return params + self.server_lr * step, state, trained
