"""Sparse ternary compression (Sattler et al. 2019, "Robust and Communication-Efficient
Federated Learning from Non-IID Data", IEEE TNNLS).

Top-k as in topk.py, then every kept value of a tensor becomes sign x mu, mu = the mean
magnitude of the tensor's kept values. The wire carries the positions (index set), one sign bit
per kept value and one float32 mu per tensor: about 1 bit a value instead of 32. Combined with
error feedback (the default), what ternarisation loses stays in the client's residual.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..registry import register
from .base import Compressed, Compressor, segment_bounds
from .topk import topk_positions

_MU = struct.Struct("<f")


@register("compress", "stc")
@dataclass(frozen=True)
class SparseTernary(Compressor):
    codec: ClassVar[int] = 1
    sparsity_ratio: float = 0.95
    sparsify_scope: str = "auto"  # auto = per tensor

    def compress(self, combined, segments, kinds, generator) -> Compressed:
        scope = "per_tensor" if self.sparsify_scope == "auto" else self.sparsify_scope
        positions = topk_positions(combined, segments, self.sparsity_ratio, scope)
        kept = combined[positions]
        values, payloads = torch.empty_like(kept), []
        for begin, end in segment_bounds(positions, segments):
            part = kept[begin:end]
            if end == begin:
                payloads.append(b"")
                continue
            mu = part.abs().mean()
            negative = part < 0
            values[begin:end] = torch.where(negative, -mu, mu)
            signs = np.packbits(negative.cpu().numpy(), bitorder="little").tobytes()
            payloads.append(_MU.pack(mu.item()) + signs)
        return Compressed(positions, values, payloads)

    def decode_values(self, buf: memoryview, at: int, count: int) -> tuple[np.ndarray, int]:
        if count == 0:
            return np.zeros(0, np.float32), at
        (mu,) = _MU.unpack_from(buf, at)
        size = (count + 7) // 8
        negative = np.unpackbits(np.frombuffer(buf, np.uint8, size, at + _MU.size),
                                 count=count, bitorder="little").astype(bool)
        mu = np.float32(mu)
        return np.where(negative, -mu, mu).astype(np.float32), at + _MU.size + size
