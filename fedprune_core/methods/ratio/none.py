"""No pruning: every ratio is 0."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..registry import register
from .base import RatioPolicy


@register("ratio", "none")
@dataclass(frozen=True)
class NoRatio(RatioPolicy):
    def initial(self, round_time: np.ndarray, deadline: float = math.inf) -> np.ndarray:
        return np.zeros(len(round_time))
