"""Top-k sparsification (Stich et al. 2018, "Sparsified SGD with Memory"; Lin et al. 2018,
"Deep Gradient Compression"): exactly k of the largest-magnitude coordinates are sent, k per
tensor (default) or over the whole model."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import register
from .base import Compressed, Compressor, num_kept, per_tensor, topk_exact


def topk_positions(combined, segments, sparsity: float, scope: str):
    if scope == "model":
        return topk_exact(combined.abs(), num_kept(combined.numel(), sparsity))
    return per_tensor(combined, segments,
                      lambda part, n: topk_exact(part.abs(), num_kept(n, sparsity)))


@register("compress", "topk")
@dataclass(frozen=True)
class TopK(Compressor):
    sparsity_ratio: float = 0.95
    sparsify_scope: str = "auto"  # auto = per tensor

    def compress(self, combined, segments, kinds, generator) -> Compressed:
        scope = "per_tensor" if self.sparsify_scope == "auto" else self.sparsify_scope
        positions = topk_positions(combined, segments, self.sparsity_ratio, scope)
        return Compressed(positions, combined[positions])
