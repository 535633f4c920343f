"""Random-k sparsification (Stich et al. 2018, "Sparsified SGD with Memory"): k coordinates
drawn uniformly from the client's seeded stream; the baseline for any selection rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import register
from .base import Compressed, Compressor, num_kept, per_tensor


def random_k(n: int, k: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.sort(torch.randperm(n, generator=generator)[:k])[0].to(device)


@register("compress", "random")
@dataclass(frozen=True)
class RandomK(Compressor):
    sparsity_ratio: float = 0.95
    sparsify_scope: str = "auto"  # auto = per tensor

    def compress(self, combined, segments, kinds, generator) -> Compressed:
        device = combined.device
        if self.sparsify_scope == "model":
            n = combined.numel()
            positions = random_k(n, num_kept(n, self.sparsity_ratio), generator, device)
        else:
            positions = per_tensor(combined, segments, lambda part, n: random_k(
                n, num_kept(n, self.sparsity_ratio), generator, device))
        return Compressed(positions, combined[positions])
