"""Federated Dropout (Caldas et al. 2018, "Expanding the Reach of Federated Learning by Reducing
Client Resource Requirements"): each client trains a sub-model of randomly chosen units,
drawn anew for every client in every round, the baseline HeteroFL, FjORD and FedRolex compare
their sub-model extraction with.

A client keeping k of a group's n units keeps k of them drawn uniformly without replacement from
its own seeded stream (seed, round, client), so the draw does not depend on the engine or on
the other clients. Caldas et al. drop units of the fully connected layers and filters of the
convolutions at one fixed rate; here every prunable group keeps the client's ratio, as every
structured method does. Evaluated sub-models of a ratio (no client) draw from the round's
own stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ...models.plan import Plan, structured_plan
from ...models.net import ParamLayout
from ...rng import torch_generator
from ..registry import register
from .base import StructuredExtractor, StructuredPlanner


class DropoutPlanner(StructuredPlanner):
    def __init__(self, layout: ParamLayout, device, multiple: int, seed: int, round_idx: int):
        super().__init__(layout, {}, device, multiple)
        self.seed, self.round_idx = seed, round_idx

    def plan(self, ratio: float, client: Optional[int] = None) -> Plan:
        g = torch_generator(self.seed, "dropout", self.round_idx, -1 if client is None else client)
        order = {group: torch.randperm(width, generator=g).to(self.device)
                 for group, width in self.layout.spec.widths.items()}
        return structured_plan(self.layout, self.keep(order, ratio), ratio)


@register("extract", "random")
@dataclass(frozen=True)
class FederatedDropout(StructuredExtractor):
    seed: int = 0

    def for_round(self, layout: ParamLayout, params: torch.Tensor, round_idx: int):
        return DropoutPlanner(layout, params.device, self.width_multiple, self.seed, round_idx)
