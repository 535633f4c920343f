"""Warm start from capability profiles: the median client gets pruning_ratio, the weakest
max_pruning_ratio and the strongest min_pruning_ratio, linearly in the rank of strength
(compute x uplink), as in adaptive-width federated learning (HeteroFL, Diao et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import register
from .base import RatioPolicy


def rank_ratios(strength: np.ndarray, base: float, low: float, high: float) -> np.ndarray:
    n = len(strength)
    if n == 1:
        return np.full(n, base)
    rank = np.argsort(np.argsort(strength, kind="stable"), kind="stable") / (n - 1)  # 0 weakest
    return np.where(rank < 0.5, base + (high - base) * (1 - 2 * rank),
                    base - (base - low) * (2 * rank - 1))


@register("ratio", "warm_start")
@dataclass(frozen=True)
class WarmStart(RatioPolicy):
    pruning_ratio: float = 0.4
    min_pruning_ratio: float = 0.1
    max_pruning_ratio: float = 0.8

    def initial(self, strength: np.ndarray) -> np.ndarray:
        return rank_ratios(strength, self.pruning_ratio, self.min_pruning_ratio,
                           self.max_pruning_ratio)
