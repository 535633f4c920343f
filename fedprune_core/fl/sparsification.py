"""Sparsified client updates with error feedback.

Top-k (Stich et al. 2018; Lin et al. 2018), random-k, and cost-weighted top-k, which ranks
|value| / cost so that expensive (fully connected) coordinates must be larger to be sent.
Each client owns its residual across rounds: combined = delta + residual, exactly k
coordinates of `combined` are sent, and the rest becomes the new residual, so
sent + new residual == delta + old residual holds exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..config import ExperimentConfig


def num_kept(n: int, sparsity: float) -> int:
    """k for n coordinates: the sent fraction is 1 - sparsity, at least one coordinate."""
    return 0 if n == 0 else min(n, max(1, int(round(n * (1.0 - sparsity)))))


def topk_exact(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted positions of the k largest scores; ties go to the lower index, never more than k
    (a `scores >= threshold` rule keeps every tied coordinate)."""
    n = scores.numel()
    if k >= n:
        return torch.arange(n, device=scores.device)
    threshold = torch.topk(scores, k, sorted=False).values.min()
    above = (scores > threshold).nonzero().squeeze(1)
    tied = (scores == threshold).nonzero().squeeze(1)[: k - len(above)]
    return torch.sort(torch.cat([above, tied]))[0]


def random_k(n: int, k: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.sort(torch.randperm(n, generator=generator)[:k])[0].to(device)


def select(combined: torch.Tensor, segments: list[int], costs: list[float],
           cfg: ExperimentConfig, generator: torch.Generator) -> torch.Tensor:
    """Positions in `combined` (sorted) to send; `segments` splits it into tensors."""
    method, scope = cfg.sparsify_method, cfg.effective_scope
    if scope == "model":
        k = num_kept(combined.numel(), cfg.sparsity_ratio)
        if method == "random":
            return random_k(combined.numel(), k, generator, combined.device)
        scores = combined.abs()
        if method == "cost_weighted":
            per_coord = torch.repeat_interleave(
                torch.tensor(costs, device=combined.device),
                torch.tensor(segments, device=combined.device))
            scores = scores / per_coord
        return topk_exact(scores, k)
    picked, start = [], 0
    for n in segments:
        k = num_kept(n, cfg.sparsity_ratio)
        part = combined[start:start + n]
        local = (random_k(n, k, generator, combined.device) if method == "random"
                 else topk_exact(part.abs(), k))
        picked.append(local + start)
        start += n
    return torch.cat(picked)


@dataclass
class Compressed:
    positions: Optional[torch.Tensor]  # sorted positions in the client's coords; None = all
    values: torch.Tensor
    residual: Optional[torch.Tensor]  # new residual at the client's coords; None = no EF


def compress(delta: torch.Tensor, residual: Optional[torch.Tensor], segments: list[int],
             costs: list[float], cfg: ExperimentConfig,
             generator: torch.Generator) -> Compressed:
    """Error feedback + selection on a client's trained coordinates."""
    combined = delta if residual is None else delta + residual
    if not cfg.sparsification:
        return Compressed(None, combined, torch.zeros_like(combined) if cfg.error_feedback
                          else None)
    positions = select(combined, segments, costs, cfg, generator)
    values = combined[positions]
    new_residual = None
    if cfg.error_feedback:
        new_residual = combined.clone()
        new_residual[positions] = 0.0
    return Compressed(positions, values, new_residual)
