"""What a compression method provides.

`compress` gets the client's error-feedback-corrected update (`combined`, over the coordinates
it trained, split per tensor by `segments`) and returns the positions it sends, the values the
server will decode there, and optionally its own per-tensor value bytes. The wire writes those
bytes (float32 values when a method has no codec of its own) and the server reads them back
with the same method's `decode_values`, so what is counted is what is sent. Error feedback is
the client's job (fl/client.py): residual = combined - what the server decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch


@dataclass
class Compressed:
    positions: Optional[torch.Tensor]  # sorted positions in the client's coords; None = all
    values: torch.Tensor  # exactly the values the server decodes at those positions
    payloads: Optional[list[bytes]] = None  # per tensor value bytes; None = float32 values


@dataclass(frozen=True)
class Compressor:
    codec: ClassVar[int] = 0  # wire id of the value encoding; 0 = float32

    def compress(self, combined: torch.Tensor, segments: list[int], kinds: list[str],
                 generator: torch.Generator) -> Compressed:
        """`kinds` gives each tensor's layer kind ('conv' or 'linear')."""
        raise NotImplementedError

    def decode_values(self, buf: memoryview, at: int, count: int) -> tuple[np.ndarray, int]:
        """One tensor's `count` values from the wire; returns them and the next offset."""
        return np.frombuffer(buf, "<f4", count, at), at + 4 * count


def num_kept(n: int, sparsity: float) -> int:
    """k for n coordinates: the sent fraction is 1 - sparsity, at least one coordinate."""
    return 0 if n == 0 else min(n, max(1, int(round(n * (1.0 - sparsity)))))


def topk_exact(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted positions of the k largest scores; ties go to the lower index, never more than k
    (a `scores >= threshold` rule keeps every tied coordinate)."""
    n = scores.numel()
    if k >= n:
        return torch.arange(n, device=scores.device)
    threshold = torch.topk(scores, k, sorted=False).values.min()
    above = (scores > threshold).nonzero().squeeze(1)
    tied = (scores == threshold).nonzero().squeeze(1)[: k - len(above)]
    return torch.sort(torch.cat([above, tied]))[0]


def per_tensor(combined: torch.Tensor, segments: list[int], pick) -> torch.Tensor:
    """Positions chosen tensor by tensor: pick(part, start) -> positions within the part."""
    picked, start = [], 0
    for n in segments:
        picked.append(pick(combined[start:start + n], n) + start)
        start += n
    return torch.cat(picked)


def segment_bounds(positions: torch.Tensor, segments: list[int]) -> list[tuple[int, int]]:
    """For sorted positions, the [begin, end) slice of them falling in each tensor."""
    bounds = np.cumsum([0, *segments])
    cut = np.searchsorted(positions.cpu().numpy(), bounds)
    return list(zip(cut[:-1].tolist(), cut[1:].tolist()))
