"""Where the clients' states live between the rounds that use them.

A federation of thousands of clients cannot hold every client's error-feedback residual (a dense
copy of the model) in memory, nor rewrite them all in every checkpoint. `ClientStates` is the
view a ServerState holds: every client's pruning ratio (small), the residuals committed to a
store, and an overlay of the residuals changed since the last commit. A round reads only its
cohort's residuals and returns a view whose overlay holds its cohort's new ones; the loop saves
that view in the checkpoint (so a checkpoint holds only what changed) and then commits the
overlay to the store. Replaying a checkpoint's overlay is idempotent, so a run killed anywhere
resumes to the same numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .state import ClientState


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

    def __init__(self, path: Path, num_clients: int, size: int):
        self.path, self.num_clients, self.size = Path(path), num_clients, size
        if not self.path.exists() or self.path.stat().st_size != 4 * num_clients * size:
            with open(self.path, "wb") as f:
                f.truncate(4 * num_clients * size)

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
    view), except that `commit` moves the overlay into the shared store."""

    def __init__(self, ratios: tuple[float, ...], store, has_residual: frozenset = frozenset(),
                 overlay: Optional[dict[int, torch.Tensor]] = None, device="cpu"):
        self.ratios, self.store, self.has_residual = tuple(ratios), store, has_residual
        self.overlay, self.device = dict(overlay or {}), device

    def __len__(self) -> int:
        return len(self.ratios)

    def __getitem__(self, cid: int) -> ClientState:
        residual = self.overlay.get(cid)
        if residual is None and cid in self.has_residual:
            residual = self.store.read(cid).to(self.device)
        return ClientState(self.ratios[cid], residual)

    def __iter__(self) -> Iterator[ClientState]:
        return (self[cid] for cid in range(len(self)))

    def replace(self, changes: dict[int, ClientState]) -> "ClientStates":
        ratios = list(self.ratios)
        overlay, has = dict(self.overlay), set(self.has_residual)
        for cid, state in changes.items():
            ratios[cid] = state.ratio
            if state.residual is not None:
                overlay[cid] = state.residual
                has.add(cid)
        return ClientStates(tuple(ratios), self.store, frozenset(has), overlay, self.device)

    def with_store(self, store) -> "ClientStates":
        """The same view over `store` (a resumed run reopens its run folder's file)."""
        return ClientStates(self.ratios, store, self.has_residual, self.overlay, self.device)

    def commit(self) -> "ClientStates":
        """Write the overlay to the store; the returned view reads it from there."""
        self.store.write(self.overlay)
        return ClientStates(self.ratios, self.store, self.has_residual, {}, self.device)

    def to(self, device) -> "ClientStates":
        return ClientStates(self.ratios, self.store, self.has_residual,
                            {cid: t.to(device) for cid, t in self.overlay.items()}, device)

    def __getstate__(self):  # a checkpoint holds the overlay and where the store is
        return {**self.__dict__, "overlay": {c: t.cpu() for c, t in self.overlay.items()},
                "device": "cpu"}
