"""What a ratio policy provides: the clients' first ratios and a client's next ratio."""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np


@dataclass(frozen=True)
class RatioPolicy:
    def initial(self, round_time: np.ndarray, deadline: float = math.inf) -> np.ndarray:
        """First ratio of every client, from the simulated time a full-model round takes it
        (its own compute, bandwidth and data size) and the round's deadline (simulated
        seconds): slower clients may prune more. A ratio of 1 (nothing kept) sits the client
        out: it is sampled, but trains and sends nothing."""
        raise NotImplementedError

    def next(self, ratio: float, simulated_time: float, deadline: float) -> float:
        """A client's ratio after a round that took `simulated_time` (default: unchanged)."""
        return ratio
