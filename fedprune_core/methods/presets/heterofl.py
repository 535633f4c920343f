"""HeteroFL (Diao et al. 2021, "HeteroFL: Computation and Communication Efficient Federated
Learning for Heterogeneous Clients", ICLR): nested sub-models (the first units of every layer),
the scaler (a pruned layer's output divided by its kept fraction while training,
methods/train/scaler.py) and masked cross-entropy (a client's loss over its own classes); the
model mixes of the paper are `pruning_levels` (0, 0.5, 0.75, 0.875, 0.9375 for a-e).

Without normalisation layers the scaler's 1/r compounds layer by layer while training only;
HeteroFL's own models follow each convolution with static batch norm (`model_norm: bn`)."""

from __future__ import annotations

from ..registry import register
from .base import Preset


@register("method", "heterofl")
class HeteroFL(Preset):
    sets = {"pruning_mode": "structured", "structured_selection": "first",
            "local_training": "scaler", "masked_ce": True}
    knobs = ("pruning_levels", "level_assignment", "pruning_ratio", "model_norm")

    @classmethod
    def check(cls, cfg, need) -> None:
        structured = cfg.pruning_mode == "structured"
        need(cfg.local_training != "scaler" or structured, "local_training",
             "sgd unless pruning_mode is structured (the scaler acts on sub-models)")
        need(not cfg.masked_ce or structured, "masked_ce",
             "false unless pruning_mode is structured (a client's classes travel with its "
             "sub-model's kept units; pruning_ratio 0 trains the whole model)")
