"""One synchronous round as a function: `run_round(state, cohort, setup) -> (state, rows)`.

No I/O: the loop around it (run/loop.py) samples the cohort, evaluates, logs and writes files.
Data flows one way: global model -> each client's sub-model or mask -> local training ->
delta -> error feedback + compression -> bytes -> decode -> aggregation -> new state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.catalog import DatasetInfo
from ..data.loading import TensorDataset
from ..methods.aggregate.base import Aggregator
from ..methods.compress.base import Compressor
from ..methods.extract.base import Extractor
from ..methods.ratio.base import RatioPolicy
from ..models.net import ParamLayout
from . import wire
from .client import local_update
from .plan import full_plan
from .state import ClientState, ServerState
from .systems import ClientProfile
from .training import DivergenceError, LocalTraining


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
    r, layout = cohort.round, setup.layout
    planner = setup.extractor.for_round(layout, state.params, r)
    dense = full_plan(layout, state.params.device)
    changed, messages, rows = {}, [], []
    for slot in cohort.clients:
        client = state.clients[slot.client_id]
        down_plan = planner.plan(client.ratio) if setup.extractor.kind == "structured" else dense
        down = wire.encode(down_plan, 0, 0, state.params[down_plan.coords])
        result, client = local_update(setup, slot, r, down, planner, client)
        simulated = slot.profile.time(result.train_flops, len(down), len(result.message))
        rows.append(_client_row(r, slot, client.ratio, result, len(down), simulated, layout))
        changed[slot.client_id] = ClientState(
            setup.ratio_policy.next(client.ratio, simulated, setup.deadline), client.residual)
        messages.append(result.message)
    updates = [wire.decode(m, planner, state.params.device, setup.compressor) for m in messages]
    params, aggregator, trained = setup.aggregator.aggregate(state.params, updates,
                                                             state.aggregator)
    if not torch.isfinite(params).all():
        raise DivergenceError(f"round {r}: the global model has NaN/inf weights")
    return ServerState(r, params, state.clients.replace(changed), aggregator,
                       state.trained | trained), rows


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
        "simulated_time_sec": simulated, "compute_gflops": profile.compute_gflops,
        "uplink_mbps": profile.uplink_mbps, "downlink_mbps": profile.downlink_mbps}
