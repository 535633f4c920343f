"""QSGD stochastic quantisation (Alistarh et al. 2017, "QSGD: Communication-Efficient SGD via
Gradient Quantization and Encoding", NeurIPS).

Per tensor v with s levels: each coordinate becomes norm(v) x sign(v_i) x l_i / s, where l_i is
|v_i| / norm(v) x s rounded down or up at random with the probability that makes it unbiased
(E[l_i / s] = |v_i| / norm(v)). Dense: the wire carries per tensor one float32 norm, then per
coordinate a sign bit and ceil(log2(s + 1)) level bits, bit-packed: exact bits, no entropy coding
(the paper's Elias coding would shrink it further).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..registry import register
from .base import Compressed, Compressor

_NORM = struct.Struct("<f")


def level_bits(levels: int) -> int:
    return max(1, math.ceil(math.log2(levels + 1)))


def dequantize(norm: np.float32, negative: np.ndarray, level: np.ndarray,
               levels: int) -> np.ndarray:
    """The value both sides compute from the wire fields (float32 throughout)."""
    magnitude = np.float32(norm) * level.astype(np.float32) / np.float32(levels)
    return np.where(negative, -magnitude, magnitude).astype(np.float32)


def _bit_matrix(negative: np.ndarray, level: np.ndarray, bits: int) -> np.ndarray:
    """Per coordinate [sign, level bit 0, ..., level bit b-1] (little endian)."""
    shifts = np.arange(bits, dtype=np.int64)
    return np.concatenate([negative[:, None], (level[:, None] >> shifts) & 1], axis=1)


@register("compress", "qsgd")
@dataclass(frozen=True)
class QSGD(Compressor):
    codec: ClassVar[int] = 2
    qsgd_levels: int = 16

    def compress(self, combined, segments, kinds, generator) -> Compressed:
        s, bits = self.qsgd_levels, level_bits(self.qsgd_levels)
        values, payloads, start = [], [], 0
        for n in segments:
            part = combined[start:start + n].detach().cpu()
            start += n
            norm = torch.linalg.vector_norm(part)
            scaled = part.abs() / norm * s if norm > 0 else torch.zeros_like(part)
            floor = scaled.floor()
            up = torch.rand(n, generator=generator) < (scaled - floor)
            level = (floor + up).clamp_(max=s).to(torch.int64).numpy()
            negative = (part < 0).numpy()
            norm32 = np.float32(norm.item())
            values.append(dequantize(norm32, negative, level, s))
            packed = np.packbits(_bit_matrix(negative, level, bits).astype(np.uint8).ravel(),
                                 bitorder="little")
            payloads.append(_NORM.pack(norm32) + packed.tobytes())
        out = torch.from_numpy(np.concatenate(values)).to(combined.device)
        return Compressed(None, out, payloads)

    def decode_values(self, buf: memoryview, at: int, count: int) -> tuple[np.ndarray, int]:
        s, bits = self.qsgd_levels, level_bits(self.qsgd_levels)
        (norm,) = _NORM.unpack_from(buf, at)
        size = (count * (1 + bits) + 7) // 8
        flat = np.unpackbits(np.frombuffer(buf, np.uint8, size, at + _NORM.size),
                             count=count * (1 + bits), bitorder="little")
        matrix = flat.reshape(count, 1 + bits).astype(np.int64)
        level = (matrix[:, 1:] << np.arange(bits, dtype=np.int64)).sum(1)
        return dequantize(np.float32(norm), matrix[:, 0].astype(bool), level, s), \
            at + _NORM.size + size
