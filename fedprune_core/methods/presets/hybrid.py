"""The seed's hybrid: structured pruning of each client's sub-model by L1 norm (filters and
neurons, HeteroFL-style masked averaging, Diao et al. 2021) at capability-adaptive ratios, plus
cost-weighted top-k sparsification of its update with error feedback. The default run."""

from __future__ import annotations

from ..registry import register
from .base import Preset


@register("method", "hybrid")
class Hybrid(Preset):
    sets = {"pruning_mode": "structured", "structured_selection": "l1", "local_training": "sgd"}
    knobs = ("pruning_ratio", "adaptive_ratio", "min_pruning_ratio", "max_pruning_ratio",
             "sparsify_method", "sparsity_ratio")
