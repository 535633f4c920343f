"""FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"): every client trains the full model and sends it dense. The baseline every
other method is compared against."""

from __future__ import annotations

from ..registry import register
from .base import Preset


@register("method", "fedavg")
class FedAvg(Preset):
    sets = {"pruning_mode": "none", "sparsify_method": "none"}
    knobs = ("aggregation", "server_lr", "server_momentum")
