"""Where the clients' states live between the rounds that use them.

A federation of thousands of clients cannot hold every client's error-feedback residual (a dense
copy of the model) in memory, nor rewrite them all in every checkpoint. `ClientStates` is the
view a ServerState holds: every client's pruning ratio (small), the residuals committed to a
store, and an overlay of the residuals changed since the last commit. A round reads only its
cohort's residuals and returns a view whose overlay holds its cohort's new ones; the loop saves
that view in the checkpoint (so a checkpoint holds only what changed) and then commits the
overlay to the store. Replaying a checkpoint's overlay is idempotent, so a run killed anywhere
resumes to the same numbers.

The view keeps a CRC-32 of every row it committed, and every read is checked against it: a store
file deleted, truncated or edited between a run and its resume is refused, not read as zeros.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch


@dataclass(frozen=True)
class ClientState:
    """One client's own state across rounds: its pruning ratio and error-feedback residual."""

    ratio: float
    residual: Optional[torch.Tensor] = None  # global flat size; created on first use

    def to(self, device) -> "ClientState":
        return ClientState(self.ratio, None if self.residual is None
                           else self.residual.to(device))


class StoreError(RuntimeError):
    """The client-state store does not hold what the run committed to it."""


def checksum(residual: torch.Tensor) -> int:
    """CRC-32 of a residual's little-endian float32 bytes (what FileStore writes)."""
    return zlib.crc32(residual.detach().to("cpu", torch.float32).numpy().astype("<f4").tobytes())


class MemoryStore:
    """Residuals in a dict: for tests, benchmarks and federations that fit in memory."""

    def __init__(self):
        self._data: dict[int, torch.Tensor] = {}

    def read(self, cid: int) -> torch.Tensor:
        return self._data[cid]

    def write(self, updates: dict[int, torch.Tensor]) -> None:
        self._data.update({cid: t.detach().to("cpu", copy=True) for cid, t in updates.items()})


class FileStore:
    """Residuals in one sparse float32 file, a row of `size` values per client: only the rows
    written take disk space, and only the rows being read or written take memory."""

    def __init__(self, path: Path, num_clients: int, size: int, create: bool = True):
        """`create`: a new run's empty store (replacing any file there); else the store of a run
        being resumed, which must exist at its full size."""
        self.path, self.num_clients, self.size = Path(path), num_clients, size
        expected = 4 * num_clients * size
        if create:
            self.path.unlink(missing_ok=True)  # a link planted there is removed, not followed
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fd, "wb") as f:
                f.truncate(expected)
        elif not self.path.is_file():
            raise StoreError(f"{self.path} is missing")
        elif self.path.stat().st_size != expected:
            raise StoreError(f"{self.path} is {self.path.stat().st_size:,} bytes, not the "
                             f"{expected:,} the run wrote (truncated or replaced)")

    def read(self, cid: int) -> torch.Tensor:
        with open(self.path, "rb") as f:
            data = os.pread(f.fileno(), 4 * self.size, 4 * self.size * cid)
        return torch.from_numpy(np.frombuffer(data, dtype="<f4").copy())

    def write(self, updates: dict[int, torch.Tensor]) -> None:
        with open(self.path, "r+b") as f:
            for cid, residual in sorted(updates.items()):
                data = residual.detach().to("cpu", torch.float32).numpy().astype("<f4")
                os.pwrite(f.fileno(), data.tobytes(), 4 * self.size * cid)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class ClientStates:
    """Every client's state as a ServerState sees it; never mutated (`replace` returns a new
    view), except that `commit` moves the overlay into the shared store.

    `committed` maps each client with a residual in the store to the CRC-32 of that row."""

    def __init__(self, ratios: tuple[float, ...], store,
                 committed: Optional[dict[int, int]] = None,
                 overlay: Optional[dict[int, torch.Tensor]] = None, device="cpu"):
        self.ratios, self.store = tuple(ratios), store
        self.committed, self.overlay = dict(committed or {}), dict(overlay or {})
        self.device = device

    def __len__(self) -> int:
        return len(self.ratios)

    def __getitem__(self, cid: int) -> ClientState:
        residual = self.overlay.get(cid)
        if residual is None and cid in self.committed:
            residual = self._read(cid).to(self.device)
        return ClientState(self.ratios[cid], residual)

    def __iter__(self) -> Iterator[ClientState]:
        return (self[cid] for cid in range(len(self)))

    def _read(self, cid: int) -> torch.Tensor:
        residual = self.store.read(cid)
        if checksum(residual) != self.committed[cid]:
            raise StoreError(f"{getattr(self.store, 'path', 'the store')}: client {cid}'s "
                             f"residual is not the one the run wrote (the file was changed)")
        return residual

    def verify(self) -> None:
        """Read back every committed row the overlay does not replace (StoreError if one
        differs): a resumed run checks its store before any work."""
        for cid in sorted(set(self.committed) - set(self.overlay)):
            self._read(cid)

    def replace(self, changes: dict[int, ClientState]) -> "ClientStates":
        ratios = list(self.ratios)
        overlay = dict(self.overlay)
        for cid, state in changes.items():
            ratios[cid] = state.ratio
            if state.residual is not None:
                overlay[cid] = state.residual
        return ClientStates(tuple(ratios), self.store, self.committed, overlay, self.device)

    def with_store(self, store) -> "ClientStates":
        """The same view over `store` (a resumed run reopens its run folder's file)."""
        return ClientStates(self.ratios, store, self.committed, self.overlay, self.device)

    def commit(self) -> "ClientStates":
        """Write the overlay to the store; the returned view reads it from there."""
        self.store.write(self.overlay)
        committed = {**self.committed, **{cid: checksum(t) for cid, t in self.overlay.items()}}
        return ClientStates(self.ratios, self.store, committed, {}, self.device)

    def to(self, device) -> "ClientStates":
        return ClientStates(self.ratios, self.store, self.committed,
                            {cid: t.to(device) for cid, t in self.overlay.items()}, device)

    # --- the checkpoint's part: plain values and tensors, no store object ----------------------
    def to_dict(self) -> dict:
        return {"ratios": [float(r) for r in self.ratios], "committed": dict(self.committed),
                "overlay": {cid: t.to("cpu") for cid, t in self.overlay.items()}}

    @classmethod
    def from_dict(cls, data: dict, store, device="cpu") -> "ClientStates":
        return cls(tuple(data["ratios"]), store, data["committed"],
                   {cid: t.to(device) for cid, t in data["overlay"].items()}, device)
