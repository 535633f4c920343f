"""FjORD's ordered dropout (Horvath et al. 2021, "FjORD: Fair and Accurate Federated Learning
under heterogeneous targets with Ordered Dropout", NeurIPS), as in Flower's FjORD baseline.

Sub-models are nested (`structured_selection: first`): width p keeps the first ceil(p * units)
units of every group. A client whose capability is p_max receives its p_max sub-model, and each
local step trains one width p drawn uniformly from the levels {1/L, 2/L, ..., 1} (L =
`fjord_levels`) up to p_max; with `fjord_distill`, each step first trains the p_max sub-model on
the labels and then the drawn width on the p_max sub-model's predictions (self-distillation,
the baseline's `know_distill`). The server averages each coordinate over the clients whose p_max
covers it (FjORD's nested aggregation is this suite's masked averaging).

Where this differs: FjORD's clients have p_max on the levels; here p_max is the client's kept
fraction 1 - pruning ratio (adaptive ratios give any value), and it is always one of its
levels, so the client's whole sub-model is trained too (with levels-only p_max, the units
between the highest level below it and p_max would never train).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..registry import register
from .base import LocalMethod


@register("train", "fjord")
@dataclass(frozen=True)
class OrderedDropout(LocalMethod):
    fjord_levels: int = 5
    fjord_distill: bool = False

    @property
    def distill(self) -> bool:
        return self.fjord_distill

    def levels(self, plan) -> list[list[int]]:
        """The widths (one per group) of each level up to the plan's own, which is the last."""
        groups = plan.spec.groups
        own = [plan.spec.widths[g] for g in groups]
        full = [plan.full_widths[g] for g in groups]
        p_max = min(w / f for w, f in zip(own, full))
        out = []
        for step in range(1, self.fjord_levels + 1):
            p = step / self.fjord_levels
            if p >= p_max - 1e-9:
                break
            out.append([min(o, max(1, math.ceil(p * f))) for o, f in zip(own, full)])
        return out + [own]

    def widths(self, plan, generator: torch.Generator):
        choices = self.levels(plan)

        def draw() -> list[int]:  # one draw a step, also with one level (the same stream)
            return choices[int(torch.randint(len(choices), (1,), generator=generator))]
        return draw
