"""FedRolex (Alam et al. 2022, "FedRolex: Model-Heterogeneous Federated Learning with Rolling
Sub-Model Extraction", NeurIPS): each client's sub-model is a window of every layer's units that
rolls `rolex_step` units a round (methods/extract/rolex.py), trained with HeteroFL's scaler."""

from __future__ import annotations

from ..registry import register
from .base import Preset


@register("method", "fedrolex")
class FedRolex(Preset):
    sets = {"pruning_mode": "structured", "structured_selection": "rolex",
            "local_training": "scaler"}
    knobs = ("rolex_step", "pruning_ratio", "pruning_levels")
