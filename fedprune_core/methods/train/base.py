"""What a local-training method provides: the hooks of the one SGD loop (fl/training.py).

Every method trains with the same loop, batch order, optimiser and loss; a method only says
- `scales(plan)`: a divisor per prunable group, applied to the group's output while training
  (None: none), and
- `widths(plan, generator)`: a function giving each step's nested widths, one per group (None:
  every step trains the whole sub-model), drawn from `generator` (the client's own stream for
  the method, apart from its batch order, so methods see the same batches), and
- `distill`: whether each step also trains the client's whole sub-model and teaches the
  narrower one with its predictions (self-distillation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass(frozen=True)
class LocalMethod:
    @property
    def distill(self) -> bool:
        return False

    def scales(self, plan) -> Optional[list[float]]:
        return None

    def widths(self, plan, generator: torch.Generator) -> Optional[Callable[[], list[int]]]:
        return None


def keep_fractions(plan) -> list[float]:
    """Per prunable group, the fraction of the global model's units the plan keeps (1 for a
    plan that is not a structured sub-model)."""
    if plan.kind != "structured":
        return [1.0] * len(plan.spec.groups)
    return [len(plan.keep[g]) / plan.full_widths[g] for g in plan.spec.groups]
