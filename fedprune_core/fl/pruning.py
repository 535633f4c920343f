"""Client-side pruning: unstructured masks, structured sub-models, adaptive ratios.

- Unstructured: per-layer magnitude masks on conv and linear weights (biases kept), held
  through local training.
- Structured: filters and hidden neurons ranked by L1 norm; the client trains a genuinely
  smaller SimpleCNN whose update is expanded back with a contribution mask, so the server
  averages each coordinate over the clients that trained it (HeteroFL, Diao et al. 2021).
  The output layer is never pruned.

A `Plan` says what one client trains: the local model's shape and `coords`, the global flat
positions of its trained coordinates in the local model's flatten order. Everything downstream
(delta, error feedback, selection, wire, aggregation) works on those coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..config import ExperimentConfig
from ..models.layers import LAYERS, ModelShape, ParamLayout


@dataclass
class Plan:
    kind: str  # "none" | "structured" | "unstructured"
    ratio: float
    shape: ModelShape  # of the local model
    coords: torch.Tensor  # int64 global flat positions, local flatten order
    segments: list[int]  # how many coords fall in each tensor, layout order
    keep: Optional[dict[str, torch.Tensor]] = None  # structured: kept unit indices per group
    masks: Optional[dict[str, torch.Tensor]] = None  # unstructured: float masks, global shapes
    full_widths: Optional[dict[str, int]] = None  # structured: the global model's widths


def kept_units(width: int, ratio: float) -> int:
    return max(1, int(round(width * (1.0 - ratio))))


class Pruner:
    """Ranks the global model once a round, then makes a plan for any client's ratio."""

    def __init__(self, layout: ParamLayout, global_flat: torch.Tensor, cfg: ExperimentConfig):
        self.layout, self.cfg = layout, cfg
        self.mode = cfg.pruning_mode if cfg.pruning else "none"
        views = layout.views(global_flat)
        self.device = device = global_flat.device
        self.full_widths = layout.shape.width_of
        self.all_coords = torch.arange(layout.size, device=device)
        if self.mode == "structured":
            self.unit_order = {}  # group -> unit indices, most important first
            for layer, _, group in LAYERS:
                if group is None:
                    continue
                weight = views[f"{layer}.weight"]
                width = weight.shape[0]
                if cfg.structured_selection == "first":
                    self.unit_order[group] = torch.arange(width, device=device)
                else:  # l1: stable sort, so ties go to the lower index
                    norms = weight.abs().flatten(1).sum(1)
                    self.unit_order[group] = torch.sort(norms, descending=True, stable=True)[1]
        elif self.mode == "unstructured":
            self.weight_order = {s.name: torch.sort(views[s.name].abs().flatten(), stable=True)[1]
                                 for s in layout if s.is_weight}

    def plan(self, ratio: float) -> Plan:
        if self.mode == "none":
            return self.full_plan()
        if self.mode == "structured":
            keep = {g: torch.sort(order[:kept_units(len(order), ratio)])[0]
                    for g, order in self.unit_order.items()}
            return self.plan_from_keep(keep, ratio)
        return self._unstructured(ratio)

    def full_plan(self) -> Plan:
        """Every coordinate of the full model (no pruning; also the dense broadcast)."""
        return Plan("none", 0.0, self.layout.shape, self.all_coords,
                    [s.numel for s in self.layout])

    def _unstructured(self, ratio: float) -> Plan:
        masks, coords, segments = {}, [], []
        for s in self.layout:
            mask = torch.ones(s.numel, device=self.all_coords.device)
            if s.is_weight:
                mask[self.weight_order[s.name][: int(ratio * s.numel)]] = 0.0
            masks[s.name] = mask.view(s.shape)
            if self.cfg.unstructured_contribution == "kept":
                local = mask.nonzero().squeeze(1)
            else:  # the seed's original: pruned coordinates are sent too (as -w)
                local = torch.arange(s.numel, device=mask.device)
            coords.append(local + s.offset)
            segments.append(len(local))
        return Plan("unstructured", ratio, self.layout.shape, torch.cat(coords), segments,
                    masks=masks)

    def plan_from_keep(self, keep: dict[str, torch.Tensor], ratio: float) -> Plan:
        """The structured plan for given kept units (the server rebuilds it from the wire)."""
        shape = self.layout.shape
        sub = shape.with_widths({g: len(idx) for g, idx in keep.items()})
        coords, segments = [], []
        for s in self.layout:
            local = _sub_tensor_positions(s.shape, s.layer, s.is_weight, keep, shape)
            coords.append(local + s.offset)
            segments.append(len(local))
        return Plan("structured", ratio, sub, torch.cat(coords), segments, keep=keep,
                    full_widths=self.full_widths)


def _sub_tensor_positions(full_shape, layer: str, is_weight: bool,
                          keep: dict[str, torch.Tensor], shape: ModelShape) -> torch.Tensor:
    """Flat positions, in the global tensor, of the sub-model tensor's elements (row-major)."""
    _, in_group, out_group = next(entry for entry in LAYERS if entry[0] == layer)
    device = next(iter(keep.values())).device
    out_idx = keep[out_group] if out_group else torch.arange(full_shape[0], device=device)
    if not is_weight:
        return out_idx
    in_total = full_shape[1]
    if in_group is None:
        in_idx = torch.arange(in_total, device=device)
    elif layer.startswith("fc") and in_group.startswith("conv"):
        # fc1's inputs are the flattened channels of the last conv: each kept channel c
        # brings its fc_spatial features c*S .. c*S+S-1.
        spatial = shape.fc_spatial
        in_idx = (keep[in_group][:, None] * spatial
                  + torch.arange(spatial, device=device)[None, :]).flatten()
    else:
        in_idx = keep[in_group]
    per_unit = int(np.prod(full_shape[2:])) if len(full_shape) > 2 else 1
    inner = torch.arange(per_unit, device=device)
    positions = (out_idx[:, None, None] * (in_total * per_unit)
                 + in_idx[None, :, None] * per_unit + inner[None, None, :])
    return positions.flatten()


# --- adaptive ratios --------------------------------------------------------------------------

def initial_ratios(strength: np.ndarray, cfg: ExperimentConfig) -> np.ndarray:
    """Warm start: the median client gets pruning_ratio, the weakest max_pruning_ratio and
    the strongest min_pruning_ratio, linearly in the rank of strength (compute x bandwidth)."""
    n = len(strength)
    if not cfg.pruning:
        return np.zeros(n)
    if not cfg.adaptive_ratio or n == 1:
        return np.full(n, cfg.pruning_ratio)
    rank = np.argsort(np.argsort(strength, kind="stable"), kind="stable") / (n - 1)  # 0 weakest
    base, low, high = cfg.pruning_ratio, cfg.min_pruning_ratio, cfg.max_pruning_ratio
    return np.where(rank < 0.5, base + (high - base) * (1 - 2 * rank),
                    base - (base - low) * (2 * rank - 1))


def online_ratio(ratio: float, simulated_time: float, deadline: float,
                 cfg: ExperimentConfig) -> float:
    """One controller step: prune more when the client missed the deadline, less when it had
    more than a step's worth of slack."""
    if simulated_time > deadline:
        ratio += cfg.ratio_step
    elif simulated_time < deadline * (1.0 - cfg.ratio_step):
        ratio -= cfg.ratio_step
    return float(np.clip(ratio, cfg.min_pruning_ratio, cfg.max_pruning_ratio))
