"""Warm start from simulated time: each client's first ratio follows the rank of the simulated
time a full-model round takes it (its own compute, bandwidth and data size), so the slowest
client prunes most; adaptive widths as in HeteroFL (Diao et al. 2021).

The mapping is linear in the rank and symmetric around `pruning_ratio`, as wide as the bounds
allow (spread = min(max_pruning_ratio - pruning_ratio, pruning_ratio - min_pruning_ratio)): the
mean ratio is exactly `pruning_ratio`, so "adaptive vs fixed" compares equal mean compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..registry import register
from .base import RatioPolicy


def rank_ratios(round_time: np.ndarray, base: float, low: float, high: float) -> np.ndarray:
    n = len(round_time)
    if n == 1:
        return np.full(n, base)
    rank = np.argsort(np.argsort(round_time, kind="stable"), kind="stable") / (n - 1)  # 1 slowest
    return base + min(high - base, base - low) * (2 * rank - 1)


@register("ratio", "warm_start")
@dataclass(frozen=True)
class WarmStart(RatioPolicy):
    pruning_ratio: float = 0.4
    min_pruning_ratio: float = 0.1
    max_pruning_ratio: float = 0.8

    def initial(self, round_time: np.ndarray, deadline: float = math.inf) -> np.ndarray:
        return rank_ratios(round_time, self.pruning_ratio, self.min_pruning_ratio,
                           self.max_pruning_ratio)
