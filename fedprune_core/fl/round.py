"""One synchronous round as a function: `run_round(state, cohort, setup) -> (state, rows)`.

No I/O: the loop around it (run/loop.py) samples the cohort, evaluates, logs and writes files.
Data flows one way: global model -> each client's sub-model or mask -> local training ->
delta -> error feedback + compression -> bytes -> decode -> aggregation -> new state.

Local training runs on one of three engines (`setup.engine`): `parallel` (the default) runs
whole client updates side by side, `setup.workers` at once on one torch thread each (the fastest
way on a multi-core CPU, and the same numbers whatever the number of cores: fl/threads.py);
`sequential` trains the clients one after another on the process's intra-op threads (the same
numbers as `parallel` on one thread); `cohort` trains the whole cohort in one batched computation
(fl/cohort.py, for GPUs). Every other step is the same code.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from ..data.catalog import DatasetInfo
from ..data.loading import TensorDataset
from ..methods.aggregate.base import Aggregator
from ..methods.compress.base import Compressor
from ..methods.extract.base import Extractor
from ..methods.ratio.base import RatioPolicy
from ..methods.train.base import LocalMethod
from ..methods.train.sgd import PlainSGD
from ..models.net import ParamLayout
from . import wire
from .client import ClientResult, finish, local_update, prepare
from .cohort import train_prepared
from .plan import full_plan
from .state import ClientState, ServerState
from .systems import ClientProfile
from .threads import one_thread_pool, torch_threads
from .training import DivergenceError, LocalTraining


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
    local_method: LocalMethod = PlainSGD()  # how a client trains its sub-model (methods/train)
    engine: str = "parallel"  # local training: one of ENGINES
    workers: int = 1  # threads of the parallel engine (and of evaluation), one torch thread each

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


# slot, downlink bytes, the update, the client's new state
_Update = tuple[ClientSlot, int, ClientResult, ClientState]


@dataclass(frozen=True)
class Missing:
    """A client whose update did not arrive (a deployment's node failed or timed out; the
    simulation never yields one). It gets a row with status 'missing' counting what was sent to
    it; the model and the client's state stay as they were."""

    slot: ClientSlot
    downlink_bytes: int


UpdateSource = Callable[[ServerState, Cohort, RoundSetup, object],
                        Iterator["_Update | Missing"]]


def run_round(state: ServerState, cohort: Cohort, setup: RoundSetup,
              updates: Optional[UpdateSource] = None,
              on_client: Optional[Callable[[dict], None]] = None
              ) -> tuple[ServerState, list[dict]]:
    """The next state and one diagnostics row per client of the cohort.

    `updates(state, cohort, setup, planner)` yields each client's update in cohort order; by
    default `client_updates` (the simulation's engines). Another runtime (a deployment whose
    clients train on their own machines) passes its own and shares every other step.
    `on_client(row)` is told of each client's row as it arrives (progress within a round)."""
    # the parallel engine: the whole round on one torch thread in every thread, so its numbers
    # are the sequential engine's on one thread, whatever the core count (fl/threads.py)
    with torch_threads(1 if setup.engine == "parallel" else 0):
        return _run_round(state, cohort, setup, updates or client_updates,
                          on_client or (lambda row: None))


def _run_round(state: ServerState, cohort: Cohort, setup: RoundSetup,
               updates: UpdateSource, on_client) -> tuple[ServerState, list[dict]]:
    r, layout = cohort.round, setup.layout
    planner = setup.extractor.for_round(layout, state.params, r)
    changed, messages, rows = {}, [], []
    for update in updates(state, cohort, setup, planner):
        if isinstance(update, Missing):
            rows.append(_missing_row(r, update))
            on_client(rows[-1])
            continue
        slot, down, result, client = update
        simulated = slot.profile.time(result.train_flops, down, len(result.message))
        rows.append(_client_row(r, slot, client.ratio, result, down, simulated, layout))
        on_client(rows[-1])
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


def client_updates(state: ServerState, cohort: Cohort, setup: RoundSetup,
                   planner) -> Iterator[_Update]:
    """Each client's broadcast, local update and new state, in cohort order, on the engine
    `setup.engine` names (they differ only in how local training runs)."""
    engine = {"sequential": _sequential, "parallel": _parallel, "cohort": _cohort}[setup.engine]
    return engine(state, cohort, setup, planner)


def _broadcaster(state: ServerState, setup: RoundSetup,
                 planner) -> Callable[[int, float], bytes]:
    """The global model as sent to a client (id, ratio): its structured sub-model, or all of
    it."""
    dense = full_plan(setup.layout, state.params.device)

    def broadcast(client_id: int, ratio: float) -> bytes:
        plan = planner.plan(ratio, client_id) if setup.extractor.kind == "structured" else dense
        return wire.encode(plan, 0, 0, state.params[plan.coords])
    return broadcast


def _sequential(state: ServerState, cohort: Cohort, setup: RoundSetup,
                planner) -> Iterator[_Update]:
    """One client after another: each client's update is done before the next one starts."""
    broadcast = _broadcaster(state, setup, planner)
    for slot in cohort.clients:
        client = state.clients[slot.client_id]
        down = broadcast(slot.client_id, client.ratio)
        result, client = local_update(setup, slot, cohort.round, down, planner, client)
        yield slot, len(down), result, client


def _parallel(state: ServerState, cohort: Cohort, setup: RoundSetup,
              planner) -> Iterator[_Update]:
    """Whole local updates side by side on `setup.workers` threads (torch releases the GIL
    inside its kernels), yielded in cohort order. Each update is a pure function of its client's
    state, so the results do not depend on which worker ran it or when; at most two updates a
    worker are in flight (a large cohort's broadcasts are not all held at once)."""
    broadcast = _broadcaster(state, setup, planner)
    window: deque = deque()
    workers = setup.workers
    pool = one_thread_pool(min(workers, len(cohort.clients)))
    try:
        for slot in cohort.clients:
            client = state.clients[slot.client_id]  # the store is read from this thread only
            down = broadcast(slot.client_id, client.ratio)
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
        down = broadcast(slot.client_id, client.ratio)
        down_bytes.append(len(down))
        prepared.append(prepare(setup, slot, cohort.round, down, planner, client))
    for p, down, trained in zip(prepared, down_bytes, train_prepared(setup, prepared)):
        result, client = finish(setup, p, trained)
        yield p.slot, down, result, client


def _client_row(r: int, slot: ClientSlot, ratio: float, result, down_bytes: int,
                simulated: float, layout: ParamLayout) -> dict:
    profile = slot.profile
    return {
        "round": r, "client_id": slot.client_id, "status": "ok",
        "num_samples": result.num_samples,
        "pruning_ratio": ratio, "trained_params": len(result.plan.coords),
        "sent_params": result.sent, "transmitted_ratio": result.sent / layout.size,
        "uplink_bytes": len(result.message), "downlink_bytes": down_bytes,
        "train_flops": result.train_flops, "dense_train_flops": result.dense_train_flops,
        "train_loss": result.train_loss, "update_time_sec": result.update_time_sec,
        "train_time_sec": result.train_time_sec, "simulated_time_sec": simulated,
        # wall seconds on the client's own machine (a deployment's node; NaN in a simulation)
        "node_time_sec": getattr(result, "node_time_sec", math.nan),
        "compute_gflops": profile.compute_gflops,
        "uplink_mbps": profile.uplink_mbps, "downlink_mbps": profile.downlink_mbps}


def _missing_row(r: int, missing: Missing) -> dict:
    """_client_row's columns, in its order, for an update that never arrived: only what was
    sent is known."""
    nan, profile = math.nan, missing.slot.profile
    return {
        "round": r, "client_id": missing.slot.client_id, "status": "missing",
        "num_samples": nan, "pruning_ratio": nan, "trained_params": nan, "sent_params": 0,
        "transmitted_ratio": 0.0, "uplink_bytes": 0, "downlink_bytes": missing.downlink_bytes,
        "train_flops": 0, "dense_train_flops": 0, "train_loss": nan, "update_time_sec": nan,
        "train_time_sec": nan, "simulated_time_sec": nan, "node_time_sec": nan,
        "compute_gflops": profile.compute_gflops,
        "uplink_mbps": profile.uplink_mbps, "downlink_mbps": profile.downlink_mbps}
