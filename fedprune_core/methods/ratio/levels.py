"""Width levels: clients spread over a few sub-model widths, as HeteroFL's model mixes (Diao et
al. 2021, "HeteroFL: Computation and Communication Efficient Federated Learning for
Heterogeneous Clients", ICLR: levels a = 1, b = 1/2, c = 1/4, d = 1/8, e = 1/16 of the hidden
sizes) and FjORD's client tiers (Horvath et al. 2021, NeurIPS; Flower's baseline: p_max = 0.2,
0.4, ..., 1.0) deploy them.

`pruning_levels` are the levels' pruning ratios (fractions removed, 1 - the papers' kept
fractions) in the order written; client i of N starts at level floor(i * L / N) (even blocks of
clients: FjORD's `cid // 20` for 100 clients and 5 tiers, HeteroFL's `fix` split for equal
proportions).
- `fixed`: a client keeps its level all run (FjORD's tiers, HeteroFL's `fix`).
- `dynamic`: a client moves to the next level, cyclically, after each round it trains.
  HeteroFL's `dynamic` re-draws every client's level each round from the mix's proportions
  (`torch.multinomial`); a ratio policy learns only a client's last ratio when its round ends
  (fl/round.py passes neither the round nor the client), so there is no (seed, round, client)
  stream to draw from here. The cycle keeps what the draw is for: each round's clients are
  spread evenly over the levels in expectation (blocks of clients start on every level and
  sampling is uniform), and every client's data trains every width over its rounds; unlike the
  draw, a client's levels follow a fixed order. It is a pure function of the checkpointed
  ratio, so resume is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..registry import register
from .base import RatioPolicy


@register("ratio", "levels")
@dataclass(frozen=True)
class WidthLevels(RatioPolicy):
    pruning_levels: str = ""
    level_assignment: str = "fixed"

    @property
    def ratios(self) -> np.ndarray:
        """Each level's pruning ratio, in the order written."""
        return np.array([float(v) for v in self.pruning_levels.split(",")])

    def initial(self, round_time: np.ndarray, deadline: float = math.inf) -> np.ndarray:
        n, ratios = len(round_time), self.ratios
        return ratios[np.arange(n) * len(ratios) // max(n, 1)]

    def next(self, ratio: float, simulated_time: float, deadline: float) -> float:
        if self.level_assignment == "fixed":
            return ratio
        ratios = self.ratios
        current = int(np.argmin(np.abs(ratios - ratio)))
        return float(ratios[(current + 1) % len(ratios)])
