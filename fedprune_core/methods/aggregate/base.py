"""What an aggregation method provides: its own state (kept in ServerState and the
checkpoint) and one step from the decoded updates to the next global parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass(frozen=True)
class Aggregator:
    def init_state(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def aggregate(self, params: torch.Tensor, updates: Iterable,
                  state: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(new params, new state, which coordinates some client trained this round).
        `updates` (fl.wire.Decoded, in cohort order) can be read once: they are decoded as they
        are read, so that a large cohort's decoded updates are never all in memory."""
        raise NotImplementedError
