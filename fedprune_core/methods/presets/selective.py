"""Selective participation (methods/ratio/selective.py): only the clients that can train the
full model within the round deadline train it; the others sit out. With the hybrid's update
compression, so that it differs from the pruned methods only in who trains what. The field's
baseline for width methods (DepthFL's "full model on the capable clients", Kim et al. 2023)."""

from __future__ import annotations

from ..registry import register
from .base import Preset


@register("method", "selective")
class Selective(Preset):
    sets = {"pruning_mode": "none", "participation": "capable"}
    knobs = ("pruning_ratio", "round_deadline_sec", "sparsify_method", "sparsity_ratio")

    @classmethod
    def check(cls, cfg, need) -> None:
        need(cfg.participation == "all" or cfg.pruning_mode == "none", "participation",
             "all unless pruning_mode is none (capable clients train the full model)")
