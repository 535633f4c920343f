"""No pruning: every client trains the full model (FedAvg, McMahan et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import register
from .base import Extractor


@register("extract", "none")
@dataclass(frozen=True)
class NoPruning(Extractor):
    pass
