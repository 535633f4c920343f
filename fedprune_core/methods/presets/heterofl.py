"""HeteroFL (Diao et al. 2021, "HeteroFL: Computation and Communication Efficient Federated
Learning for Heterogeneous Clients", ICLR): nested sub-models (the first units of every layer),
the scaler (a pruned layer's output divided by its kept fraction while training,
methods/train/scaler.py) and masked cross-entropy (a client's loss over its own classes); the
model mixes of the paper are `pruning_levels` (0, 0.5, 0.75, 0.875, 0.9375 for a-e).

Without normalisation layers the scaler's 1/r compounds layer by layer while training only;
HeteroFL's own models follow each convolution with static batch norm (`model_norm: bn`).

Where this differs from the reference code (and Flower's baselines/heterofl), and why:
- Masked cross-entropy: the reference sets the logits of the classes a client lacks to 0
  (`masked_fill(label_mask == 0, 0)`), so they stay in the softmax at logit 0; here the loss is
  over the client's own classes only (as if their logits were -inf), and the client trains and
  sends only those outputs (fl/wire.py's class list): the uplink then carries no rows the loss
  gave no gradient, and the two agree once the own classes' logits are well above 0.
- Initialisation: the reference zeroes the output layer's bias; here PyTorch's default
  initialisation, as for every model of the zoo (models/zoo.py)."""

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
