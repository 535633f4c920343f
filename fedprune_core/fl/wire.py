"""The wire format: what is counted is what is sent.

A message carries one client's (possibly sparse) values over the coordinates of its plan.
Layout (little endian):

    header   magic b"FPS1", kind u8, client u32, samples u32, ratio f64
    plan     structured only: the kept units of each group, as an index set
    tensors  per tensor of the plan: an index set over the tensor's trained coordinates,
             then float32 values

An index set is whichever is smallest: `all` (mode 0, no bytes), a bitmap (mode 1), or a list
of uint16 (mode 2) / uint32 (mode 3) positions; a u8 mode and a u32 count precede it.
Unstructured masks are not sent: they follow from the global model and the ratio, which both
sides have (the server rebuilds them with the same deterministic ranking).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .pruning import Plan, Pruner

MAGIC = b"FPS1"
_HEADER = struct.Struct("<4sBIId")
_INDEX_HEAD = struct.Struct("<BI")
KINDS = ("none", "structured", "unstructured")
GROUPS = ("conv1", "conv2", "fc1")


class WireError(ValueError):
    """A message that does not decode."""


def _encode_index_set(positions: Optional[np.ndarray], n: int) -> bytes:
    if positions is None or len(positions) == n:
        return _INDEX_HEAD.pack(0, n)
    count = len(positions)
    options = {1: (n + 7) // 8, 2 if n <= 65536 else 3: count * (2 if n <= 65536 else 4)}
    mode = min(options, key=options.get)
    if mode == 1:
        bits = np.zeros(n, dtype=bool)
        bits[positions] = True
        payload = np.packbits(bits, bitorder="little").tobytes()
    else:
        payload = positions.astype("<u2" if mode == 2 else "<u4").tobytes()
    return _INDEX_HEAD.pack(mode, count) + payload


def _decode_index_set(buf: memoryview, at: int, n: int) -> tuple[Optional[np.ndarray], int]:
    mode, count = _INDEX_HEAD.unpack_from(buf, at)
    at += _INDEX_HEAD.size
    if mode == 0:
        return None, at
    if mode == 1:
        size = (n + 7) // 8
        bits = np.unpackbits(np.frombuffer(buf, np.uint8, size, at), count=n, bitorder="little")
        positions = np.flatnonzero(bits)
    elif mode in (2, 3):
        size = count * (2 if mode == 2 else 4)
        positions = np.frombuffer(buf, "<u2" if mode == 2 else "<u4", count, at).astype(np.int64)
    else:
        raise WireError(f"unknown index-set mode {mode}")
    if len(positions) != count:
        raise WireError("index set count does not match its payload")
    return positions, at + size


def encode(plan: Plan, client_id: int, num_samples: int, values: torch.Tensor,
           positions: Optional[torch.Tensor] = None) -> bytes:
    """Encode values at `positions` (sorted, within plan.coords; None = all of them)."""
    parts = [_HEADER.pack(MAGIC, KINDS.index(plan.kind), client_id, num_samples, plan.ratio)]
    if plan.kind == "structured":
        for group in GROUPS:
            parts.append(_encode_index_set(plan.keep[group].cpu().numpy(),
                                           plan.full_widths[group]))
    vals = values.detach().to("cpu", torch.float32).numpy()
    pos = None if positions is None else positions.cpu().numpy()
    bounds = np.cumsum([0, *plan.segments])
    cut = None if pos is None else np.searchsorted(pos, bounds)
    for i, n in enumerate(plan.segments):
        if pos is None:
            local, seg_vals = None, vals[bounds[i]:bounds[i + 1]]
        else:
            local = pos[cut[i]:cut[i + 1]] - bounds[i]
            seg_vals = vals[cut[i]:cut[i + 1]]
        parts.append(_encode_index_set(local, n))
        parts.append(seg_vals.astype("<f4").tobytes())
    return b"".join(parts)


@dataclass
class Decoded:
    client_id: int
    num_samples: int
    plan: Plan
    coords: torch.Tensor  # global flat positions of the received values
    values: torch.Tensor


def decode(message: bytes, pruner: Pruner, device="cpu") -> Decoded:
    """Rebuild the plan from the message and the round's global model; read the values."""
    buf = memoryview(message)
    magic, kind, client_id, num_samples, ratio = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC or kind >= len(KINDS):
        raise WireError("not a FedPrune-Sparse update message")
    at = _HEADER.size
    if KINDS[kind] == "structured":
        keep = {}
        for group in GROUPS:
            width = pruner.full_widths[group]
            idx, at = _decode_index_set(buf, at, width)
            keep[group] = torch.arange(width) if idx is None else torch.as_tensor(idx)
        plan = pruner.plan_from_keep({g: k.to(pruner.device) for g, k in keep.items()}, ratio)
    elif KINDS[kind] == "unstructured":
        plan = pruner.plan(ratio)
    else:
        plan = pruner.full_plan()
    if plan.kind != KINDS[kind]:
        raise WireError(f"a {KINDS[kind]} update does not fit this run ({plan.kind})")
    coords_np = plan.coords.cpu().numpy()
    bounds = np.cumsum([0, *plan.segments])
    picked, values = [], []
    for i, n in enumerate(plan.segments):
        local, at = _decode_index_set(buf, at, n)
        count = n if local is None else len(local)
        values.append(np.frombuffer(buf, "<f4", count, at))
        at += 4 * count
        seg = coords_np[bounds[i]:bounds[i + 1]]
        picked.append(seg if local is None else seg[local])
    if at != len(message):
        raise WireError(f"{len(message) - at} trailing bytes")
    coords = torch.as_tensor(np.concatenate(picked)).to(device)
    vals = torch.as_tensor(np.concatenate(values).copy()).to(device)
    return Decoded(client_id, num_samples, plan, coords, vals)
