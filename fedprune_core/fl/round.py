"""One synchronous round as a function: `run_round(state, cohort, setup) -> (state, rows)`.

No I/O: the loop around it (run/loop.py) samples the cohort, evaluates, logs and writes files.
Data flows one way: global model -> each client's sub-model or mask -> local training ->
delta -> error feedback + compression -> bytes -> decode -> aggregation -> new state.

Local training runs on one of three engines (`setup.engine`): `sequential` trains the clients one
after another, each on its real sub-model; `parallel` runs whole client updates side by side, one
per core on one torch thread each (the fastest way on a multi-core CPU, and the same numbers as
`sequential` on one thread); `cohort` trains the whole cohort in one batched computation
(fl/cohort.py, for GPUs). Every other step is the same code.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..data.catalog import DatasetInfo
from ..data.loading import TensorDataset
from ..methods.aggregate.base import Aggregator
from ..methods.compress.base import Compressor
from ..methods.extract.base import Extractor
from ..methods.ratio.base import RatioPolicy
from ..models.net import ParamLayout
from . import wire
from .client import ClientResult, finish, local_update, prepare
from .cohort import train_prepared
from .plan import full_plan
from .state import ClientState, ServerState
from .systems import ClientProfile
from .training import DivergenceError, LocalTraining, torch_threads


ENGINES = ("sequential", "parallel", "cohort")


@dataclass(frozen=True)
class RoundSetup:
    """What stays the same from round to round: the model layout and the methods."""

    layout: ParamLayout
    info: DatasetInfo
    training: LocalTraining
    extractor: Extractor
    compressor: Compressor
    aggregator: Aggregator
    ratio_policy: RatioPolicy
    error_feedback: bool
    seed: int
    deadline: float  # simulated seconds, for the ratio policy
    engine: str = "sequential"  # local training: one of ENGINES

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r}; one of {', '.join(ENGINES)}")


@dataclass(frozen=True)
class ClientSlot:
    client_id: int
    data: TensorDataset
    profile: ClientProfile


@dataclass(frozen=True)
class Cohort:
    round: int  # 1-based
    clients: tuple[ClientSlot, ...]


def run_round(state: ServerState, cohort: Cohort, setup: RoundSetup
              ) -> tuple[ServerState, list[dict]]:
    """The next state and one diagnostics row per client of the cohort."""
    # the parallel engine: as many client workers as torch has threads, and the whole round on
    # one torch thread in every thread, so its numbers are the sequential engine's on one
    # thread, whatever the core count
    workers = torch.get_num_threads()
    with torch_threads(1 if setup.engine == "parallel" else 0):
        return _run_round(state, cohort, setup, workers)


def _run_round(state: ServerState, cohort: Cohort, setup: RoundSetup, workers: int
               ) -> tuple[ServerState, list[dict]]:
    r, layout = cohort.round, setup.layout
    planner = setup.extractor.for_round(layout, state.params, r)
    changed, messages, rows = {}, [], []
    for slot, down, result, client in client_updates(state, cohort, setup, planner, workers):
        simulated = slot.profile.time(result.train_flops, down, len(result.message))
        rows.append(_client_row(r, slot, client.ratio, result, down, simulated, layout))
        changed[slot.client_id] = ClientState(
            setup.ratio_policy.next(client.ratio, simulated, setup.deadline), client.residual)
        messages.append(result.message)
    # decoded one at a time as the aggregator reads them: a decoded update carries its plan's
    # coordinates (up to 8 bytes a parameter), too much to hold for 200 clients at once
    updates = (wire.decode(m, planner, state.params.device, setup.compressor) for m in messages)
    params, aggregator, trained = setup.aggregator.aggregate(state.params, updates,
                                                             state.aggregator)
    if not torch.isfinite(params).all():
        raise DivergenceError(f"round {r}: the global model has NaN/inf weights")
    return ServerState(r, params, state.clients.replace(changed), aggregator,
                       state.trained | trained), rows


_Update = tuple[ClientSlot, int, ClientResult, ClientState]  # slot, downlink bytes, result, state


def client_updates(state: ServerState, cohort: Cohort, setup: RoundSetup,
                   planner, workers: int = 1) -> Iterator[_Update]:
    """Each client's broadcast, local update and new state, in cohort order, on the engine
    `setup.engine` names (they differ only in how local training runs)."""
    if setup.engine == "parallel":
        return _parallel(state, cohort, setup, planner, workers)
    engine = _sequential if setup.engine == "sequential" else _cohort
    return engine(state, cohort, setup, planner)


def _broadcaster(state: ServerState, setup: RoundSetup, planner) -> Callable[[float], bytes]:
    """The global model as sent to a client of a given ratio: its structured sub-model, or
    all of it."""
    dense = full_plan(setup.layout, state.params.device)

    def broadcast(ratio: float) -> bytes:
        plan = planner.plan(ratio) if setup.extractor.kind == "structured" else dense
        return wire.encode(plan, 0, 0, state.params[plan.coords])
    return broadcast


def _sequential(state: ServerState, cohort: Cohort, setup: RoundSetup,
                planner) -> Iterator[_Update]:
    """One client after another: each client's update is done before the next one starts."""
    broadcast = _broadcaster(state, setup, planner)
    for slot in cohort.clients:
        client = state.clients[slot.client_id]
        down = broadcast(client.ratio)
        result, client = local_update(setup, slot, cohort.round, down, planner, client)
        yield slot, len(down), result, client


def _parallel(state: ServerState, cohort: Cohort, setup: RoundSetup,
              planner, workers: int) -> Iterator[_Update]:
    """Whole local updates side by side on `workers` threads (torch releases the GIL inside
    its kernels), yielded in cohort order. Each update is a pure function of its client's
    state, so the results do not depend on which worker ran it or when; at most two updates a
    worker are in flight (a large cohort's broadcasts are not all held at once)."""
    broadcast = _broadcaster(state, setup, planner)
    window: deque = deque()
    pool = ThreadPoolExecutor(min(workers, len(cohort.clients)) or 1,
                              initializer=torch.set_num_threads, initargs=(1,))
    try:
        for slot in cohort.clients:
            client = state.clients[slot.client_id]  # the store is read from this thread only
            down = broadcast(client.ratio)
            window.append((slot, len(down), pool.submit(local_update, setup, slot, cohort.round,
                                                        down, planner, client)))
            if len(window) >= 2 * workers:
                yield _done(window.popleft())
        while window:
            yield _done(window.popleft())
    finally:  # an error or Ctrl-C: drop what has not started, wait for what has
        pool.shutdown(wait=True, cancel_futures=True)


def _done(pending) -> _Update:
    slot, down, future = pending
    return (slot, down, *future.result())


def _cohort(state: ServerState, cohort: Cohort, setup: RoundSetup,
            planner) -> Iterator[_Update]:
    """Every client prepared, the cohort trained in one batched computation, then every
    client finished (the cohort's start values and old residuals are in memory at once)."""
    broadcast = _broadcaster(state, setup, planner)
    prepared, down_bytes = [], []
    for slot in cohort.clients:
        client = state.clients[slot.client_id]
        down = broadcast(client.ratio)
        down_bytes.append(len(down))
        prepared.append(prepare(setup, slot, cohort.round, down, planner, client))
    for p, down, trained in zip(prepared, down_bytes, train_prepared(setup, prepared)):
        result, client = finish(setup, p, trained)
        yield p.slot, down, result, client


def _client_row(r: int, slot: ClientSlot, ratio: float, result, down_bytes: int,
                simulated: float, layout: ParamLayout) -> dict:
    profile = slot.profile
    return {
        "round": r, "client_id": slot.client_id, "num_samples": result.num_samples,
        "pruning_ratio": ratio, "trained_params": len(result.plan.coords),
        "sent_params": result.sent, "transmitted_ratio": result.sent / layout.size,
        "uplink_bytes": len(result.message), "downlink_bytes": down_bytes,
        "train_flops": result.train_flops, "dense_train_flops": result.dense_train_flops,
        "train_loss": result.train_loss, "update_time_sec": result.update_time_sec,
        "train_time_sec": result.train_time_sec, "simulated_time_sec": simulated,
        "compute_gflops": profile.compute_gflops,
        "uplink_mbps": profile.uplink_mbps, "downlink_mbps": profile.downlink_mbps}
