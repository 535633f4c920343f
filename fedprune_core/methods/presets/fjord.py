"""FjORD (Horvath et al. 2021, "FjORD: Fair and Accurate Federated Learning under heterogeneous
targets with Ordered Dropout", NeurIPS): nested sub-models, each local step trains a width drawn
from the levels 1/L, ..., 1 up to the client's own (methods/train/fjord.py), optionally with
self-distillation from the client's widest sub-model."""

from __future__ import annotations

from ..registry import register
from .base import Preset


@register("method", "fjord")
class FjORD(Preset):
    sets = {"pruning_mode": "structured", "structured_selection": "first",
            "local_training": "fjord"}
    knobs = ("fjord_levels", "fjord_distill", "pruning_levels", "pruning_ratio")

    @classmethod
    def check(cls, cfg, need) -> None:
        fjord = cfg.local_training == "fjord"
        need(not fjord or cfg.pruning_mode == "structured", "local_training",
             "sgd unless pruning_mode is structured (ordered dropout acts on sub-models)")
        need(not fjord or cfg.structured_selection == "first", "local_training",
             "fjord with structured_selection first (ordered dropout's widths are nested)")
        need(not cfg.fjord_distill or fjord, "fjord_distill",
             "false unless local_training is fjord")
