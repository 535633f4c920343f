"""Federated Dropout (Caldas et al. 2018, "Expanding the Reach of Federated Learning by Reducing
Client Resource Requirements"): a random sub-model a client and round, seeded
(methods/extract/random.py)."""

from __future__ import annotations

from ..registry import register
from .base import Preset


@register("method", "federated_dropout")
class FederatedDropout(Preset):
    sets = {"pruning_mode": "structured", "structured_selection": "random",
            "local_training": "sgd"}
    knobs = ("pruning_ratio",)
