"""What one client trains this round: a `Plan`.

A plan names the local model (`spec`) and `coords`, the global flat positions of its trained
coordinates in the local model's flatten order, split per tensor by `segments`. Everything
downstream (delta, error feedback, selection, wire, aggregation) works on those coordinates.
Structured plans also carry the kept units of each group (`keep`), unstructured plans their
masks; the extraction methods in methods/extract decide which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .net import ParamLayout
from .table import ModelSpec, ParamSpec


@dataclass
class Plan:
    kind: str  # "none" | "structured" | "unstructured"
    ratio: float
    spec: ModelSpec  # of the local model
    coords: torch.Tensor  # int64 global flat positions, local flatten order
    segments: list[int]  # how many coords fall in each tensor, layout order
    keep: Optional[dict[str, torch.Tensor]] = None  # structured: kept unit indices per group
    masks: Optional[dict[str, torch.Tensor]] = None  # unstructured: float masks, global shapes
    full_widths: Optional[dict[str, int]] = None  # structured: the global model's widths of
    # the layers in `keep` (every group, and the output layer when it keeps only some classes)


def kept_units(width: int, ratio: float, multiple: int = 1) -> int:
    """Units a sub-model keeps of `width` at `ratio`; with `multiple` > 1 rounded to a multiple
    of it (at least `multiple`, at most `width`): oneDNN runs such widths faster per FLOP."""
    if multiple == 1:
        return max(1, int(round(width * (1.0 - ratio))))
    return min(width, max(multiple, multiple * int(round(width * (1.0 - ratio) / multiple))))


def full_plan(layout: ParamLayout, device="cpu") -> Plan:
    """Every coordinate of the full model (no pruning; also the dense broadcast)."""
    return Plan("none", 0.0, layout.spec, torch.arange(layout.size, device=device),
                [s.numel for s in layout])


def structured_plan(layout: ParamLayout, keep: dict[str, torch.Tensor], ratio: float) -> Plan:
    """The sub-model keeping the given units of each group (the server rebuilds it from the
    kept-unit lists on the wire). Every row of a group keeps the group's units: the rows adding
    into one residual stream, and the norm rows on it, keep one channel set."""
    spec = layout.spec
    sub = spec.with_widths({g: len(idx) for g, idx in keep.items()})
    full = {**spec.widths, spec.layers[-1].name: spec.num_classes}
    full_widths = {g: full[g] for g in full if g in keep}
    coords, segments = [], []
    for s in layout:
        local = _sub_tensor_positions(s, spec.index[s.layer], keep, spec)
        coords.append(local + s.offset)
        segments.append(len(local))
    return Plan("structured", ratio, sub, torch.cat(coords), segments, keep=keep,
                full_widths=full_widths)


def with_classes(layout: ParamLayout, plan: Plan, classes: torch.Tensor) -> Plan:
    """A structured plan whose output layer keeps only `classes` (sorted): the client's loss is
    over its own classes and it trains and sends only their outputs (HeteroFL's masked
    cross-entropy), which the server then averages over the clients that have each class."""
    if plan.kind != "structured":
        raise ValueError("masked cross-entropy needs a structured plan")
    out = layout.spec.layers[-1].name
    keep = {**plan.keep, out: torch.sort(classes.to(plan.coords.device))[0]}
    return structured_plan(layout, keep, plan.ratio)


def output_classes(plan: Plan) -> Optional[torch.Tensor]:
    """The classes a plan's output layer keeps (None: all of them)."""
    return None if plan.keep is None else plan.keep.get(plan.spec.layers[-1].name)


def _sub_tensor_positions(s: ParamSpec, index: int, keep: dict[str, torch.Tensor],
                          spec: ModelSpec) -> torch.Tensor:
    """Flat positions, in the global tensor, of the sub-model tensor's elements (row-major).
    A tensor's rows are its row's group's units (a norm row's: its input's); a weight's
    columns are its input group's units, each bringing unit_size features."""
    device = next(iter(keep.values())).device
    group = spec.group_of(index)
    out_idx = keep[group] if group in keep else torch.arange(s.shape[0], device=device)
    if not s.is_weight:  # a bias, or a norm's affine weight or bias: one value a unit
        return out_idx
    in_total, in_group = s.shape[1], spec.input_group(index)
    if in_group is None:
        in_idx = torch.arange(in_total, device=device)
    else:  # each kept input unit brings unit_size features (a conv channel's map into fc1)
        unit = spec.unit_size(index)
        in_idx = (keep[in_group][:, None] * unit
                  + torch.arange(unit, device=device)[None, :]).flatten()
    per_unit = s.numel // (s.shape[0] * in_total)  # kernel elements of a conv, 1 for linear
    inner = torch.arange(per_unit, device=device)
    positions = (out_idx[:, None, None] * (in_total * per_unit)
                 + in_idx[None, :, None] * per_unit + inner[None, None, :])
    return positions.flatten()
