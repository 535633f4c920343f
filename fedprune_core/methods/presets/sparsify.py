"""Update sparsification alone: the full model trained, the update compressed with error
feedback (top-k, Stich et al. 2018 "Sparsified SGD with Memory"; cost-weighted top-k, the
seed's; STC, Sattler et al. 2019; QSGD, Alistarh et al. 2017): less uplink, no less compute."""

from __future__ import annotations

from ..registry import register
from .base import Preset


@register("method", "sparsify")
class Sparsify(Preset):
    sets = {"pruning_mode": "none"}
    knobs = ("sparsify_method", "sparsity_ratio", "error_feedback", "sparsify_scope")

    @classmethod
    def check(cls, cfg, need) -> None:
        if cfg.method == "sparsify":
            need(cfg.sparsify_method != "none", "sparsify_method",
                 "a compression method with method sparsify (none would be FedAvg)")
