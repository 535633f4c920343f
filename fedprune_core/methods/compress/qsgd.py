"""QSGD stochastic quantisation (Alistarh et al. 2017, "QSGD: Communication-Efficient SGD via
Gradient Quantization and Encoding", NeurIPS).

Per bucket v of `qsgd_bucket` consecutive coordinates of a tensor (the paper quantises buckets
of 512; 0 = the whole tensor) with s levels: each coordinate becomes norm(v) x sign(v_i) x l_i / s,
where l_i is |v_i| / norm(v) x s rounded down or up at random with the probability that makes it
unbiased (E[l_i / s] = |v_i| / norm(v)). Buckets matter: with one norm for fc1's 803k
coordinates nearly every level is 0, and the variance (about sqrt(n) / s times the signal) swamps
training. Dense: the wire carries per tensor one float32 norm a bucket, then per coordinate a sign
bit and ceil(log2(s + 1)) level bits, bit-packed: exact bits, no entropy coding (the paper's Elias
coding would shrink it further).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..registry import register
from .base import Compressed, Compressor

def level_bits(levels: int) -> int:
    return max(1, math.ceil(math.log2(levels + 1)))


def dequantize(norm, negative: np.ndarray, level: np.ndarray, levels: int) -> np.ndarray:
    """The value both sides compute from the wire fields (float32 throughout); `norm` is one
    float32 or one per coordinate."""
    magnitude = np.asarray(norm, np.float32) * level.astype(np.float32) / np.float32(levels)
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
    qsgd_bucket: int = 512

    def bucket(self, n: int) -> int:
        return n if self.qsgd_bucket == 0 else min(self.qsgd_bucket, n)

    def compress(self, combined, segments, kinds, generator) -> Compressed:
        s, bits = self.qsgd_levels, level_bits(self.qsgd_levels)
        values, payloads, start = [], [], 0
        for n in segments:
            part = combined[start:start + n].detach().cpu()
            start += n
            norms = _bucket_norms(part, self.bucket(n))  # float32, one a bucket
            norm = torch.from_numpy(self._per_coordinate(norms, n))
            scaled = torch.where(norm > 0, part.abs() / norm * s, torch.zeros_like(part))
            floor = scaled.floor()
            up = torch.rand(n, generator=generator) < (scaled - floor)
            level = (floor + up).clamp_(max=s).to(torch.int64).numpy()
            negative = (part < 0).numpy()
            values.append(dequantize(norm.numpy(), negative, level, s))
            packed = np.packbits(_bit_matrix(negative, level, bits).astype(np.uint8).ravel(),
                                 bitorder="little")
            payloads.append(norms.astype("<f4").tobytes() + packed.tobytes())
        out = torch.from_numpy(np.concatenate(values)).to(combined.device)
        return Compressed(None, out, payloads)

    def decode_values(self, buf: memoryview, at: int, count: int) -> tuple[np.ndarray, int]:
        s, bits = self.qsgd_levels, level_bits(self.qsgd_levels)
        buckets = -(-count // self.bucket(count))
        norms = np.frombuffer(buf, "<f4", buckets, at).astype(np.float32)
        at += 4 * buckets
        size = (count * (1 + bits) + 7) // 8
        flat = np.unpackbits(np.frombuffer(buf, np.uint8, size, at),
                             count=count * (1 + bits), bitorder="little")
        matrix = flat.reshape(count, 1 + bits).astype(np.int64)
        level = (matrix[:, 1:] << np.arange(bits, dtype=np.int64)).sum(1)
        return dequantize(self._per_coordinate(norms, count), matrix[:, 0].astype(bool), level,
                          s), at + size

    def _per_coordinate(self, norms: np.ndarray, n: int) -> np.ndarray:
        """Each of a tensor's n coordinates with its bucket's norm."""
        return np.repeat(norms, self.bucket(n))[:n]


def _bucket_norms(part: torch.Tensor, bucket: int) -> np.ndarray:
    """The L2 norm of each run of `bucket` coordinates (the last one may be shorter)."""
    n = len(part)
    if bucket == n:  # one norm: the whole tensor's
        return np.array([torch.linalg.vector_norm(part).item()], dtype=np.float32)
    padded = torch.zeros(-(-n // bucket) * bucket, dtype=part.dtype)
    padded[:n] = part
    return torch.linalg.vector_norm(padded.view(-1, bucket), dim=1).numpy().astype(np.float32)
