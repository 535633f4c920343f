"""Rolling sub-model extraction (FedRolex, Alam et al. 2022, "FedRolex: Model-Heterogeneous
Federated Learning with Rolling Sub-Model Extraction", NeurIPS).

The kept window of every layer rolls by `rolex_step` units a round (1 in the paper): in round r
(1-based) a client keeping k of a group's n units keeps units s, s + 1, ..., s + k - 1, modulo
n, with s = rolex_step * (r - 1). Over n / rolex_step rounds every unit is trained by clients of
every width, unlike nested (`first`) sub-models whose outer units only the strongest clients
see. With the paper's step a 256-unit layer takes 256 rounds to be covered, so a 20-round run
behaves almost like `first`; a larger step covers it within a short run.

The paper's code (`torch.roll` of the unit indices by the round) moves the window the other way
round the layer; which way it rolls changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register
from .base import StructuredExtractor


@register("extract", "rolex")
@dataclass(frozen=True)
class RollingWindow(StructuredExtractor):
    rolex_step: int = 1

    def unit_order(self, weight: torch.Tensor, round_idx: int) -> torch.Tensor:
        width = weight.shape[0]
        start = (self.rolex_step * (round_idx - 1)) % width
        return (start + torch.arange(width, device=weight.device)) % width
