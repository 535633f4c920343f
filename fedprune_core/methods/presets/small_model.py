"""A small model everywhere: every client trains the same small dense model, the first
(1 - pruning_ratio) of every layer's units (the hybrid's mean width at its base pruning_ratio),
every round; the server's model is that small model (units no client trains are zero in the
evaluated model, so they add nothing). The field's other honest baseline for width methods
(DepthFL's "the smallest model on every client", Kim et al. 2023; HeteroFL's single-rate rows
b-e, Diao et al. 2021): a width method must beat a small model that every client can train."""

from __future__ import annotations

from ..registry import register
from .base import Preset


@register("method", "small_model")
class SmallModel(Preset):
    sets = {"pruning_mode": "structured", "structured_selection": "first",
            "local_training": "sgd", "adaptive_ratio": False, "adaptive_ratio_online": False}
    knobs = ("pruning_ratio", "sparsify_method", "sparsity_ratio")
