"""The wire format: what is counted is what is sent.

A message carries one client's (possibly sparse, possibly quantised) values over the
coordinates of its plan. Layout (little endian):

    header   magic b"FPS1", kind u8 (plan kind | value codec << 2 | classes << 7), client u32,
             samples u32, ratio f64
    plan     structured only: the kept units of each group, as an index set; then, with the
             classes bit (masked cross-entropy), the output layer's kept classes
    tensors  per tensor of the plan: an index set over the tensor's trained coordinates, then
             the values, encoded by the compression method's codec (float32 by default)

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

from ..methods.compress.base import Compressor
from ..methods.extract.base import Planner
from ..models.plan import Plan, full_plan, output_classes, structured_plan

MAGIC = b"FPS1"
_HEADER = struct.Struct("<4sBIId")
_INDEX_HEAD = struct.Struct("<BI")
KINDS = ("none", "structured", "unstructured")
_CLASSES_BIT = 7  # of the kind byte: the plan's output layer keeps only some classes
FLOAT32 = Compressor()  # the dense float32 codec (broadcasts, uncompressed updates)


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
           positions: Optional[torch.Tensor] = None, payloads: Optional[list[bytes]] = None,
           codec: int = 0) -> bytes:
    """Encode values at `positions` (sorted, within plan.coords; None = all of them); a
    compression method's own per-tensor value bytes replace the float32 values."""
    classes = output_classes(plan) is not None
    kind = KINDS.index(plan.kind) | (codec << 2) | (classes << _CLASSES_BIT)
    parts = [_HEADER.pack(MAGIC, kind, client_id, num_samples, plan.ratio)]
    if plan.kind == "structured":  # the groups' kept units, then the output layer's classes
        for group, width in plan.full_widths.items():
            parts.append(_encode_index_set(plan.keep[group].cpu().numpy(), width))
    vals = values.detach().to("cpu", torch.float32).numpy()
    pos = None if positions is None else positions.cpu().numpy()
    bounds = np.cumsum([0, *plan.segments])
    cut = bounds if pos is None else np.searchsorted(pos, bounds)
    for i, n in enumerate(plan.segments):
        local = None if pos is None else pos[cut[i]:cut[i + 1]] - bounds[i]
        parts.append(_encode_index_set(local, n))
        parts.append(vals[cut[i]:cut[i + 1]].astype("<f4").tobytes() if payloads is None
                     else payloads[i])
    return b"".join(parts)


@dataclass
class Decoded:
    client_id: int
    num_samples: int
    plan: Plan
    coords: torch.Tensor  # global flat positions of the received values
    values: torch.Tensor


def _read_plan(buf: memoryview, kind: str, ratio: float, planner: Planner,
               classes: bool) -> tuple[Plan, int]:
    at = _HEADER.size
    if kind == "structured":
        keep, spec = {}, planner.layout.spec
        widths = {**spec.widths, **({spec.layers[-1].name: spec.num_classes} if classes else {})}
        for group, width in widths.items():
            idx, at = _decode_index_set(buf, at, width)
            keep[group] = (torch.arange(width) if idx is None
                           else torch.as_tensor(idx)).to(planner.device)
        return structured_plan(planner.layout, keep, ratio), at
    if kind == "unstructured":
        return planner.plan(ratio), at
    return full_plan(planner.layout, planner.device), at


def header(message: bytes) -> tuple[int, int, float]:
    """(client, samples, ratio) from a message's header alone, without decoding its values."""
    if len(message) < _HEADER.size:
        raise WireError("shorter than a message header")
    magic, kind_byte, client_id, num_samples, ratio = _HEADER.unpack_from(message, 0)
    if magic != MAGIC or kind_byte & 3 >= len(KINDS):
        raise WireError("not a FedPrune-Sparse update message")
    return client_id, num_samples, ratio


def decode(message: bytes, planner: Planner, device="cpu",
           compressor: Compressor = FLOAT32) -> Decoded:
    """Rebuild the plan from the message and the round's planner; read the values with the
    compression method's codec."""
    buf = memoryview(message)
    magic, kind_byte, client_id, num_samples, ratio = _HEADER.unpack_from(buf, 0)
    kind, codec, classes = kind_byte & 3, (kind_byte >> 2) & 31, bool(kind_byte >> _CLASSES_BIT)
    if magic != MAGIC or kind >= len(KINDS):
        raise WireError("not a FedPrune-Sparse update message")
    if codec != compressor.codec:
        raise WireError(f"values encoded with codec {codec}, this run decodes codec "
                        f"{compressor.codec}")
    plan, at = _read_plan(buf, KINDS[kind], ratio, planner, classes)
    if plan.kind != KINDS[kind]:
        raise WireError(f"a {KINDS[kind]} update does not fit this run ({plan.kind})")
    coords_np = plan.coords.cpu().numpy()
    bounds = np.cumsum([0, *plan.segments])
    picked, values = [], []
    for i, n in enumerate(plan.segments):
        local, at = _decode_index_set(buf, at, n)
        seg_values, at = compressor.decode_values(buf, at, n if local is None else len(local))
        values.append(seg_values)
        seg = coords_np[bounds[i]:bounds[i + 1]]
        picked.append(seg if local is None else seg[local])
    if at != len(message):
        raise WireError(f"{len(message) - at} trailing bytes")
    coords = torch.as_tensor(np.concatenate(picked)).to(device)
    vals = torch.as_tensor(np.concatenate(values).copy()).to(device)
    return Decoded(client_id, num_samples, plan, coords, vals)
