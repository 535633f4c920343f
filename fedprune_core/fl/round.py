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
import struct
from collections import deque
from typing import Callable, Iterator, Optional

import torch

from ..methods.extract.base import Planner
from ..models.plan import full_plan
from . import wire
from .client import finish, local_update, prepare
from .cohort import train_prepared
from .state import ServerState
from .threads import one_thread_pool, torch_threads
from .training import DivergenceError
from .types import ClientSlot, Cohort, Missing, RoundSetup, Update, UpdateSource


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
    planner, training = round_plan(state, cohort, setup)
    sits_out = {s.client_id for s in cohort.clients} - {s.client_id for s in training.clients}
    changed, rows = {}, []

    def arrived() -> Iterator[wire.Decoded]:
        """Each update decoded once, as the aggregator reads it (a decoded update carries its
        plan's coordinates, up to 8 bytes a parameter: too much to hold for 200 clients at
        once); one that did not arrive or does not decode is a 'missing' row."""
        stream = iter(updates(state, training, setup, planner))
        for slot in cohort.clients:
            if slot.client_id in sits_out:
                rows.append(_missing_row(r, slot, 0, status="sat_out"))
                on_client(rows[-1])
                continue
            update = next(stream)
            decoded = None if isinstance(update, Missing) else _decode(update, planner, state,
                                                                      setup)
            if decoded is None:
                rows.append(_missing_row(r, update.slot, update.downlink_bytes))
            else:
                rows.append(_client_row(r, update, layout.size))
                changed[update.slot.client_id] = update.state
            on_client(rows[-1])
            if decoded is not None:
                yield decoded

    stream = arrived()
    params, aggregator, trained = setup.aggregator.aggregate(state.params, stream,
                                                             state.aggregator)
    if next(stream, None) is not None or len(rows) != len(cohort.clients):
        raise RuntimeError(f"the aggregator {type(setup.aggregator).__name__} must read every "
                           f"update of the round")
    if not torch.isfinite(params).all():
        raise DivergenceError(f"round {r}: the global model has NaN/inf weights")
    return ServerState(r, params, state.clients.replace(changed), aggregator,
                       state.trained | trained), rows


def round_plan(state: ServerState, cohort: Cohort, setup: RoundSetup) -> tuple[Planner, Cohort]:
    """The round's planner (the clients' sub-models or masks, cut from the global model) and
    the cohort's clients that train: one whose ratio keeps nothing (1) sits the round out
    (selective participation). What an update source is called with."""
    planner = setup.extractor.for_round(setup.layout, state.params, cohort.round)
    return planner, Cohort(cohort.round, tuple(
        s for s in cohort.clients if state.clients.ratios[s.client_id] < 1.0))


def _decode(update: Update, planner: Planner, state: ServerState,
            setup: RoundSetup) -> Optional[wire.Decoded]:
    """The update's message, decoded; None where it does not decode or is not the client's
    (a deployment's node can send anything; the simulation's updates always decode)."""
    try:
        decoded = wire.decode(update.result.message, planner, state.params.device,
                              setup.compressor)
    except (ValueError, IndexError, struct.error):  # WireError is a ValueError
        return None
    if (decoded.client_id, decoded.num_samples) != (update.slot.client_id,
                                                   len(update.slot.data)):
        return None
    return decoded


def client_updates(state: ServerState, cohort: Cohort, setup: RoundSetup,
                   planner: Planner) -> Iterator[Update]:
    """Each client's broadcast, local update and new state, in cohort order, on the engine
    `setup.engine` names (they differ only in how local training runs)."""
    engine = {"sequential": _sequential, "parallel": _parallel, "cohort": _cohort}[setup.engine]
    return engine(state, cohort, setup, planner)


def broadcaster(state: ServerState, setup: RoundSetup,
                planner: Planner) -> Callable[[int, float], bytes]:
    """The global model as sent to a client (id, ratio): its structured sub-model, or all of
    it."""
    dense = full_plan(setup.layout, state.params.device)

    def broadcast(client_id: int, ratio: float) -> bytes:
        plan = planner.plan(ratio, client_id) if setup.extractor.kind == "structured" else dense
        return wire.encode(plan, 0, 0, state.params[plan.coords])
    return broadcast


def _sequential(state: ServerState, cohort: Cohort, setup: RoundSetup,
                planner: Planner) -> Iterator[Update]:
    """One client after another: each client's update is done before the next one starts."""
    broadcast = broadcaster(state, setup, planner)
    for slot in cohort.clients:
        client = state.clients[slot.client_id]
        down = broadcast(slot.client_id, client.ratio)
        yield Update(slot, len(down), *local_update(setup, slot, cohort.round, down, planner,
                                                    client))


def _parallel(state: ServerState, cohort: Cohort, setup: RoundSetup,
              planner: Planner) -> Iterator[Update]:
    """Whole local updates side by side on `setup.workers` threads (torch releases the GIL
    inside its kernels), yielded in cohort order. Each update is a pure function of its client's
    state, so the results do not depend on which worker ran it or when; at most two updates a
    worker are in flight (a large cohort's broadcasts are not all held at once)."""
    broadcast = broadcaster(state, setup, planner)
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


def _done(pending) -> Update:
    slot, down, future = pending
    return Update(slot, down, *future.result())


def _cohort(state: ServerState, cohort: Cohort, setup: RoundSetup,
            planner: Planner) -> Iterator[Update]:
    """Every client prepared, the cohort trained in one batched computation, then every
    client finished (the cohort's start values and old residuals are in memory at once)."""
    broadcast = broadcaster(state, setup, planner)
    prepared, down_bytes = [], []
    for slot in cohort.clients:
        client = state.clients[slot.client_id]
        down = broadcast(slot.client_id, client.ratio)
        down_bytes.append(len(down))
        prepared.append(prepare(setup, slot, cohort.round, down, planner, client))
    for p, down, trained in zip(prepared, down_bytes, train_prepared(setup, prepared)):
        yield Update(p.slot, down, *finish(setup, p, trained))


def _client_row(r: int, update: Update, model_size: int) -> dict:
    slot, result, profile = update.slot, update.result, update.slot.profile
    return {
        "round": r, "client_id": slot.client_id, "status": "ok",
        "num_samples": result.num_samples,
        "pruning_ratio": result.ratio, "trained_params": result.trained_params,
        "sent_params": result.sent, "transmitted_ratio": result.sent / model_size,
        "uplink_bytes": len(result.message), "downlink_bytes": update.downlink_bytes,
        "train_flops": result.train_flops, "dense_train_flops": result.dense_train_flops,
        "train_loss": result.train_loss, "update_time_sec": result.update_time_sec,
        "train_time_sec": result.train_time_sec,
        "simulated_time_sec": result.simulated_time_sec,
        # wall seconds on the client's own machine (a deployment's node; NaN in a simulation)
        "node_time_sec": result.node_time_sec,
        "compute_gflops": profile.compute_gflops,
        "uplink_mbps": profile.uplink_mbps, "downlink_mbps": profile.downlink_mbps}


def _missing_row(r: int, slot: ClientSlot, downlink_bytes: int, status: str = "missing") -> dict:
    """_client_row's columns, in its order, for an update that never arrived (status
    'missing') or a client that sat the round out ('sat_out'): only what was sent is known."""
    nan, profile = math.nan, slot.profile
    return {
        "round": r, "client_id": slot.client_id, "status": status,
        "num_samples": nan, "pruning_ratio": nan, "trained_params": nan, "sent_params": 0,
        "transmitted_ratio": 0.0, "uplink_bytes": 0, "downlink_bytes": downlink_bytes,
        "train_flops": 0, "dense_train_flops": 0, "train_loss": nan, "update_time_sec": nan,
        "train_time_sec": nan, "simulated_time_sec": nan, "node_time_sec": nan,
        "compute_gflops": profile.compute_gflops,
        "uplink_mbps": profile.uplink_mbps, "downlink_mbps": profile.downlink_mbps}
