"""What an extraction method provides, and the planners that turn a ratio into a Plan.

An extractor looks at the round's global model once (`for_round`) and returns a planner; the
planner makes the plan for any client's pruning ratio. The server uses the same planner to
rebuild unstructured plans from a message (masks are not sent); structured plans come from the
kept-unit lists on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from ...models.plan import Plan, full_plan, kept_units, structured_plan
from ...models.net import ParamLayout


class Planner:
    """The round's plans; `layout` is the global model's."""

    layout: ParamLayout
    device: torch.device

    def plan(self, ratio: float, client: Optional[int] = None) -> Plan:
        """The plan for a client of `ratio` (`client`: its id, for methods that draw a
        sub-model per client; None: the round's sub-model of that ratio, e.g. to evaluate)."""
        raise NotImplementedError


class FullPlanner(Planner):
    def __init__(self, layout: ParamLayout, device):
        self.layout, self.device = layout, device
        self._plan = full_plan(layout, device)

    def plan(self, ratio: float, client: Optional[int] = None) -> Plan:
        return self._plan


class StructuredPlanner(Planner):
    """Keeps, in every group, the first kept_units(width, ratio, multiple) units of the group's
    order."""

    def __init__(self, layout: ParamLayout, unit_order: dict[str, torch.Tensor], device,
                 multiple: int = 1):
        self.layout, self.unit_order, self.device = layout, unit_order, device
        self.multiple = multiple

    def plan(self, ratio: float, client: Optional[int] = None) -> Plan:
        return structured_plan(self.layout, self.keep(self.unit_order, ratio), ratio)

    def keep(self, unit_order: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
        return {g: torch.sort(order[:kept_units(len(order), ratio, self.multiple)])[0]
                for g, order in unit_order.items()}


@dataclass(frozen=True)
class Extractor:
    kind: ClassVar[str] = "none"

    def for_round(self, layout: ParamLayout, params: torch.Tensor, round_idx: int) -> Planner:
        return FullPlanner(layout, params.device)


@dataclass(frozen=True)
class StructuredExtractor(Extractor):
    """A structured method only says in which order a group's units are kept; how many follows
    from the client's ratio (and `width_multiple`, shared by every structured method)."""

    kind: ClassVar[str] = "structured"
    width_multiple: int = 1

    def unit_order(self, weight: torch.Tensor, round_idx: int) -> torch.Tensor:
        """Unit indices of one group (rows of its weight), the first ones kept first."""
        raise NotImplementedError

    def for_round(self, layout: ParamLayout, params: torch.Tensor, round_idx: int) -> Planner:
        views = layout.views(params)
        order = {g: self.unit_order(views[f"{g}.weight"], round_idx) for g in layout.spec.groups}
        return StructuredPlanner(layout, order, params.device, self.width_multiple)
