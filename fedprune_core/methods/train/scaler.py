"""HeteroFL's scaler (Diao et al. 2021, "HeteroFL: Computation and Communication Efficient
Federated Learning for Heterogeneous Clients", ICLR): while a client trains a sub-model that
keeps a fraction r of a layer's units, the layer's output is divided by r, so a narrow
sub-model's activations, and so its gradient steps, have the scale of the full model's; the
global model is evaluated without it.

HeteroFL divides by the model's nominal rate (the same r for every layer, `Scaler(rate)` after
each convolution). Here r is each group's own kept fraction (kept units / the global model's
units): the same value up to the rounding of widths, and exact when `width_multiple` rounds them.
FedRolex (Alam et al. 2022) trains with the same scaler.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import register
from .base import LocalMethod, keep_fractions


@register("train", "scaler")
@dataclass(frozen=True)
class Scaler(LocalMethod):
    def scales(self, plan):
        fractions = keep_fractions(plan)
        return None if all(f == 1.0 for f in fractions) else fractions
