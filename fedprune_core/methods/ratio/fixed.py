"""One pruning ratio for every client, every round."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..registry import register
from .base import RatioPolicy


@register("ratio", "fixed")
@dataclass(frozen=True)
class FixedRatio(RatioPolicy):
    pruning_ratio: float = 0.4

    def initial(self, round_time: np.ndarray, deadline: float = math.inf) -> np.ndarray:
        return np.full(len(round_time), self.pruning_ratio)
