"""What a ratio policy provides: the clients' first ratios and a client's next ratio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RatioPolicy:
    def initial(self, strength: np.ndarray) -> np.ndarray:
        """First ratio of every client, from their capability (compute x uplink)."""
        raise NotImplementedError

    def next(self, ratio: float, simulated_time: float, deadline: float) -> float:
        """A client's ratio after a round that took `simulated_time` (default: unchanged)."""
        return ratio
