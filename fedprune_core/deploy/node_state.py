"""A client's own state, kept on the node that hosts it: its error-feedback residual and its
pruning ratio, never sent to the server.

One file per client per round it trained: `<state-dir>/<run_name>/client-<id>/round-<r>.pt`
holds the ratio and residual after round r, written atomically (a temporary file, fsync,
rename), so a SuperNode or ClientApp killed at any point leaves every finished file whole and
a restarted one reads them back.

Why per round: the server only counts an update it received and saved. A node may train
round r + 1 and then the server dies before saving it, or the reply is lost and the server
counts the update missing; either way the server goes on from an earlier round. So each train
instruction names the round the client must start from (`base_round`: the last round whose
update from this client the server kept), the node loads that round's file, and keeps only
that file and the one it writes: later files are of rounds the server never kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from ..fl.state import ClientState

FORMAT = 1


class NodeStateError(RuntimeError):
    """The node does not hold the state the server resumes from."""


def run_key(cfg) -> str:
    """Which experiment a state file belongs to: the run's parameters (runtime settings such as
    paths left out), so a state folder shared by two runs of one name is not mixed up."""
    text = json.dumps({**cfg.science_dict(), "run_name": cfg.run_name}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class NodeStore:
    def __init__(self, root: Path, run_name: str, key: str):
        self.root, self.key = Path(root) / run_name, key

    def folder(self, cid: int) -> Path:
        return self.root / f"client-{cid}"

    def path(self, cid: int, round_idx: int) -> Path:
        return self.folder(cid) / f"round-{round_idx}.pt"

    def load(self, cid: int, base_round: int, initial_ratio: float) -> ClientState:
        """The state after `base_round` (0: the client's first state: its initial ratio, no
        residual yet)."""
        if base_round == 0:
            return ClientState(initial_ratio)
        path = self.path(cid, base_round)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise NodeStateError(
                f"client {cid}: the server continues from its round-{base_round} state, but "
                f"{path} does not exist (was this node's state-dir moved or wiped?); the run "
                f"cannot continue with this client's residual lost") from None
        except Exception as err:  # noqa: BLE001 - torch.load raises many kinds for a bad file
            raise NodeStateError(f"client {cid}: {path} cannot be read ({type(err).__name__}: "
                                 f"{err})") from None
        if not (isinstance(data, dict) and data.get("format") == FORMAT
                and data.get("run") == self.key and data.get("client") == cid
                and data.get("round") == base_round):
            raise NodeStateError(f"client {cid}: {path} is not this run's round-{base_round} "
                                 f"state (another experiment under the same run_name?)")
        fields = data["state"]
        return ClientState(**{**fields, "ratio": float(fields["ratio"])})

    def save(self, cid: int, round_idx: int, state: ClientState, base_round: int) -> None:
        """Write the state after `round_idx`; then drop every other file but `base_round`'s
        (still needed if the server does not keep this round)."""
        folder = self.folder(cid)
        folder.mkdir(parents=True, exist_ok=True)
        path = self.path(cid, round_idx)
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        # every field of the client's state (ratio, residual, whatever a method adds), on the CPU
        fields = {f.name: getattr(state.to("cpu"), f.name) for f in dataclasses.fields(state)}
        try:
            with open(tmp, "wb") as out:
                torch.save({"format": FORMAT, "run": self.key, "client": cid,
                            "round": round_idx, "state": fields}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        keep = {path.name, self.path(cid, base_round).name}
        for old in folder.glob("round-*.pt"):
            if old.name not in keep:
                old.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
