"""Named random streams derived from the one experiment seed.

Every random choice draws from its own stream, keyed by a purpose and ids such as the round and
the client: turning pruning on or off then changes nothing about which clients are picked or the
order in which they see their data (common random numbers across ablations), and a resumed run
draws exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, purpose: str, *ids: int) -> int:
    key = ":".join([str(seed), purpose, *map(str, ids)]).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def torch_generator(seed: int, purpose: str, *ids: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *ids))


def numpy_generator(seed: int, purpose: str, *ids: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, purpose, *ids))
