"""Selective participation: a client trains the full model only if its capability allows it
within the round; the others sit every round out (sampled, they train and send nothing).

The field's honest baseline for width methods: "the full model on only the capable clients"
(DepthFL's baseline, Kim et al. 2023, "DepthFL: Depthwise Federated Learning for
Heterogeneous Clients", ICLR; HeFlwr's "selective" row). A width method that does not beat it
only spends its complexity on clients whose data the full model could do without.

Capable: the client's simulated full-model round (fl/systems.py: compute, download, upload)
fits the round deadline, the same deadline the hybrid's clients are pruned to meet (the median
client's time at the base pruning_ratio; `round_deadline_sec` sets it). Ratio 0 (the full
model) or 1 (nothing kept: the client sits out); a client's capability does not change, so
neither does its ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..registry import register
from .base import RatioPolicy


@register("ratio", "selective")
@dataclass(frozen=True)
class Selective(RatioPolicy):
    def initial(self, round_time: np.ndarray, deadline: float = math.inf) -> np.ndarray:
        return np.where(np.asarray(round_time) <= deadline, 0.0, 1.0)
