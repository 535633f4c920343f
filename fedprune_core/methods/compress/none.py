"""No compression: the dense update in float32 (FedAvg, McMahan et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass


from ..registry import register
from .base import Compressed, Compressor


@register("compress", "none")
@dataclass(frozen=True)
class Dense(Compressor):
    def compress(self, combined, segments, kinds, generator) -> Compressed:
        return Compressed(None, combined)
