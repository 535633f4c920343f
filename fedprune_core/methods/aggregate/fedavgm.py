"""FedAvg with server momentum, FedAvgM (Hsu et al. 2019, "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification").

The averaged update (masked_mean, as in FedAvg) feeds a momentum buffer on the server:
v <- server_momentum * v + mean update; params <- params + server_lr * v. The buffer is the
aggregator's state: it lives in ServerState and so in the checkpoint. server_momentum 0 is
FedAvg exactly."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register
from .base import Aggregator
from .fedavg import masked_mean


@register("aggregate", "fedavgm")
@dataclass(frozen=True)
class FedAvgM(Aggregator):
    aggregation_weights: str = "samples"
    server_lr: float = 1.0
    server_momentum: float = 0.9

    def init_state(self, params):
        return {"momentum": torch.zeros_like(params)}

    def aggregate(self, params, updates, state):
        step, trained = masked_mean(params, updates, self.aggregation_weights)
        velocity = self.server_momentum * state["momentum"] + step
        return params + self.server_lr * velocity, {"momentum": velocity}, trained
