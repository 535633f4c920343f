"""Unstructured magnitude pruning (Han et al. 2015, "Learning both Weights and Connections for
Efficient Neural Networks"): per layer, the smallest-magnitude weights of conv and linear
layers are masked (biases kept) and stay zero through local training.

`unstructured_contribution='kept'` aggregates only the kept coordinates; 'all' also sends the
pruned ones (as -w after training from zero), as the seed's original did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from ...models.plan import Plan
from ...models.net import ParamLayout
from ..registry import register
from .base import Extractor, Planner


class MagnitudePlanner(Planner):
    def __init__(self, layout: ParamLayout, params: torch.Tensor, contribution: str):
        self.layout, self.device, self.contribution = layout, params.device, contribution
        views = layout.views(params)
        self.weight_order = {s.name: torch.sort(views[s.name].abs().flatten(), stable=True)[1]
                             for s in layout if s.is_weight}

    def plan(self, ratio: float, client: Optional[int] = None) -> Plan:
        masks, coords, segments = {}, [], []
        for s in self.layout:
            mask = torch.ones(s.numel, device=self.device)
            if s.is_weight:
                mask[self.weight_order[s.name][: int(ratio * s.numel)]] = 0.0
            masks[s.name] = mask.view(s.shape)
            if self.contribution == "kept":
                local = mask.nonzero().squeeze(1)
            else:  # the seed's original: pruned coordinates are sent too (as -w)
                local = torch.arange(s.numel, device=mask.device)
            coords.append(local + s.offset)
            segments.append(len(local))
        return Plan("unstructured", ratio, self.layout.spec, torch.cat(coords), segments,
                    masks=masks)


@register("extract", "magnitude")
@dataclass(frozen=True)
class Magnitude(Extractor):
    kind: ClassVar[str] = "unstructured"
    unstructured_contribution: str = "kept"

    def for_round(self, layout: ParamLayout, params: torch.Tensor, round_idx: int) -> Planner:
        return MagnitudePlanner(layout, params, self.unstructured_contribution)
