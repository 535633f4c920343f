"""FedAvg with server momentum, FedAvgM (Hsu et al. 2019, "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification").

The averaged update (masked_mean, as in FedAvg) feeds a momentum buffer on the server:
v <- server_momentum * v + mean update; params <- params + server_lr * v. The buffer is the
aggregator's state: it lives in ServerState and so in the checkpoint. server_momentum 0 is
FedAvg exactly.

Hsu et al. write it for updates that cover the whole model. With pruned sub-models a coordinate
may be trained by no client in a round; with `momentum_untrained: hold` (the default) such a
coordinate neither moves nor decays its momentum until some client trains it again, as if the
round had not happened for it; `drift` applies the formula to every coordinate, so an untrained
one keeps moving on old momentum (1.0 -> 1.9 -> 2.71 -> 3.44 over three rounds from v = 1)."""

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
    momentum_untrained: str = "hold"

    def init_state(self, params):
        return {"momentum": torch.zeros_like(params)}

    def aggregate(self, params, updates, state):
        step, trained = masked_mean(params, updates, self.aggregation_weights)
        velocity = self.server_momentum * state["momentum"] + step
        if self.momentum_untrained == "hold":
            velocity = torch.where(trained, velocity, state["momentum"])
            return (params + self.server_lr * torch.where(trained, velocity, 0.0),
                    {"momentum": velocity}, trained)
        return params + self.server_lr * velocity, {"momentum": velocity}, trained
