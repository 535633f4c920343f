"""The checkpoint of an unfinished run: what `--resume` continues from.

Saved after every round, it holds the ServerState (fl/state.py) as plain values and tensors, the
rows written so far (as JSON text), the elapsed time, and the torch thread count the numbers were
computed on. It is read with `torch.load(weights_only=True)`, which rebuilds tensors, numbers,
strings, lists and dicts and nothing else, so a crafted file cannot run code on `--resume`; a
file that is not such a checkpoint, or does not fit the run being resumed, is refused with a
CheckpointError (exit status 2) before any work.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, ExperimentConfig, experiment_differences
from ..data.catalog import DATASETS
from ..fl.store import ClientStates, FileStore, StoreError
from ..models.net import ParamLayout
from ..models.zoo import model_spec
from . import artifacts
from .artifacts import CLIENT_STATES

FORMAT = 2  # 1: the pickled ServerState of earlier versions (code could ride along)


class CheckpointError(ConfigError):
    """A checkpoint that cannot be resumed: unreadable, from another version or another run."""


def numeric_threads(cfg: ExperimentConfig, intra_op: int) -> int:
    """The torch thread count a run's numbers are computed on: 1 on the parallel engine,
    whatever the number of workers; the intra-op count on the others."""
    return 1 if cfg.engine == "parallel" else intra_op


def save(path: Path, cfg: ExperimentConfig, state, history: dict, elapsed_sec: float,
         threads: int) -> None:
    artifacts.save_atomic({"format": FORMAT, "config": cfg.science_dict(), "numeric_threads": threads,
                 "state": state.to_dict(), "history": json.dumps(history, default=_plain),
                 "elapsed_sec": float(elapsed_sec)}, path)


def _plain(value: Any) -> Any:
    """numpy scalars in the rows, as the Python numbers they hold."""
    return value.item()


def load(path: Path, cfg: ExperimentConfig, threads: int) -> dict:
    """The checkpoint at `path`, checked against `cfg` (the run being resumed), with its
    history decoded and the run's client-state store opened and checked: {"state": dict for
    ServerState.from_dict, "history": {...}, "elapsed_sec": float, "store": FileStore}."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CheckpointError(f"resume: {path} is not a checkpoint this run can continue "
                                  f"({what}); allowed: the checkpoint.pt a run of this version "
                                  f"wrote; start again with --overwrite")
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it did not write
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        need(False, f"cannot be read: {err.strerror or err}")
    except Exception as err:  # noqa: BLE001 - the unpickler raises anything on arbitrary bytes
        # (IndexError for a bare STOP opcode): whatever it is, the file is not a checkpoint
        need(False, f"unreadable: {type(err).__name__}: {_first_line(err)}")
    need(isinstance(data, dict), "not a mapping")
    need(data.get("format") == FORMAT, f"format {data.get('format', 1)!r}, this version reads "
                                       f"{FORMAT}")
    need(isinstance(data.get("config"), dict), "no configuration")
    changed = experiment_differences(data["config"], cfg)
    if changed:
        raise CheckpointError(f"resume: {path.parent} was started with other parameters: "
                              f"{', '.join(changed)}; resume with the same parameters, or use "
                              f"--overwrite")
    saved_threads = data.get("numeric_threads")
    need(isinstance(saved_threads, int), "no thread count")
    if saved_threads != threads:
        raise CheckpointError(
            f"num_threads: the run was computed on {saved_threads} torch thread(s) (engine "
            f"{cfg.engine}) and would continue on {threads}, which changes its numbers; "
            f"allowed: --num_threads {saved_threads}, or the parallel engine, whose numbers do "
            f"not depend on it")
    _check_state(data.get("state"), cfg, need)
    try:
        history = json.loads(data.get("history"))
    except (TypeError, ValueError) as err:
        need(False, f"history: {err}")
    need(isinstance(history, dict)
         and all(isinstance(history.get(k), list) for k in ("metrics", "clients", "diagnostics"))
         and len(history["metrics"]) == data["state"]["round"], "history does not match")
    elapsed = data.get("elapsed_sec")
    need(isinstance(elapsed, float) and math.isfinite(elapsed) and elapsed >= 0, "elapsed time")
    return {"state": data["state"], "history": history, "elapsed_sec": elapsed,
            "store": _open_store(path.parent, cfg, data["state"])}


def _open_store(run_dir: Path, cfg: ExperimentConfig, state: dict) -> FileStore:
    """The store of the run being resumed: there, whole, and holding what the checkpoint's
    checksums say (the rows its last round changed are rewritten from the checkpoint)."""
    try:
        store = FileStore(run_dir / CLIENT_STATES, cfg.num_clients, len(state["params"]),
                          create=False)
        ClientStates.from_dict(state["clients"], store).verify()
    except StoreError as err:
        raise CheckpointError(f"resume: the client-state store {err}; the run cannot continue "
                              f"from it; allowed: the store the run wrote; start again with "
                              f"--overwrite") from None
    return store


def _check_state(state: Any, cfg: ExperimentConfig, need) -> None:
    """Every field ServerState.from_dict reads, with the types and sizes this run has."""
    size = ParamLayout(model_spec(cfg.model, DATASETS[cfg.dataset])).size
    need(isinstance(state, dict), "no server state")

    def vector(value: Any, dtype: torch.dtype) -> bool:
        return isinstance(value, torch.Tensor) and value.dtype == dtype and value.shape == (size,)

    need(isinstance(state.get("round"), int) and 1 <= state["round"] <= cfg.rounds,
         f"round {state.get('round')!r} of {cfg.rounds}")
    need(vector(state.get("params"), torch.float32), "global model")
    need(vector(state.get("trained"), torch.bool), "trained coordinates")
    aggregator = state.get("aggregator")
    need(isinstance(aggregator, dict) and all(
        isinstance(k, str) and vector(v, torch.float32) for k, v in aggregator.items()),
        "aggregator state")
    clients = state.get("clients")
    need(isinstance(clients, dict), "client states")
    ratios, committed, overlay = (clients.get(k) for k in ("ratios", "committed", "overlay"))
    need(isinstance(ratios, list) and len(ratios) == cfg.num_clients
         and all(isinstance(r, float) and 0.0 <= r < 1.0 for r in ratios), "pruning ratios")
    ids = range(cfg.num_clients)
    need(isinstance(committed, dict) and all(k in ids and isinstance(v, int)
                                             for k, v in committed.items()), "store checksums")
    need(isinstance(overlay, dict) and all(k in ids and vector(v, torch.float32)
                                           for k, v in overlay.items()), "client residuals")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]
