"""Online ratio control against a simulated round deadline (this project's controller): a client that missed the deadline
prunes one step more next time, one with more than a step's worth of slack one step less,
within [min_pruning_ratio, max_pruning_ratio]. Starts from the warm start when adaptive_ratio
is on, else from pruning_ratio."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..registry import register
from .warm_start import WarmStart


@register("ratio", "online")
@dataclass(frozen=True)
class Online(WarmStart):
    ratio_step: float = 0.05
    adaptive_ratio: bool = True  # warm start first

    def initial(self, round_time: np.ndarray, deadline: float = math.inf) -> np.ndarray:
        if not self.adaptive_ratio:
            return np.full(len(round_time), self.pruning_ratio)
        return super().initial(round_time, deadline)

    def next(self, ratio: float, simulated_time: float, deadline: float) -> float:
        if simulated_time > deadline:
            ratio += self.ratio_step
        elif simulated_time < deadline * (1.0 - self.ratio_step):
            ratio -= self.ratio_step
        return float(np.clip(ratio, self.min_pruning_ratio, self.max_pruning_ratio))
