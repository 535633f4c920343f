"""A node's side of a round: one client's local update, exactly the simulation's.

The node builds the federation from the experiment's parameters once (the partition, profiles
and initial ratios are deterministic from the seed, so every node and the server agree on them
without exchanging data), takes its client's slot, loads the client's state from its own disk,
and runs `fl.client.local_update` on the broadcast the server sent: sub-model or mask, local
training, delta, error feedback, compression, encoding, the next ratio. The new state stays on
the node; the result record (fl.types.ClientResult) goes back beside the update.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..config import ConfigError, ExperimentConfig
from ..errors import DataUnavailableError, DivergenceError
from ..fl import wire
from ..fl.client import local_update
from ..fl.threads import one_thread_map, resolve_threads, torch_threads
from ..fl.types import ClientSlot
from ..methods.extract.base import FullPlanner
from ..run.checkpoint import numeric_threads
from ..run.federation import Federation, build_federation
from .node_state import NodeStateError, NodeStore, run_key
from .protocol import (DIVERGENCE, FAILED, SETUP, NodeFailure, Outcome, Task, check_fingerprint,
                       timed)
from .settings import NodeSettings

# a paused ClientApp (fault injection) gives up after this long if nobody kills its node
PAUSE_LIMIT_SEC = 3600.0


def run_task(settings: NodeSettings, task: Task) -> tuple[bytes, dict]:
    """The client's encoded update and its result record (fl.types.ClientResult); its new
    state (residual and next ratio, from the same client update as the simulation's) saved."""
    check_fingerprint(task.fingerprint)
    if not settings.hosts(task.client_id):
        raise NodeFailure(SETUP, f"client {task.client_id} is not hosted here (node-index "
                                 f"{settings.node_index} of {settings.num_nodes})")
    cfg = node_config(settings, task.experiment)
    fed, cid = federation(cfg), task.client_id
    setup = fed.setup
    slot = ClientSlot(cid, fed.client_data[cid], fed.profiles[cid])
    store = NodeStore(settings.state_dir, cfg.run_name, run_key(cfg))
    initial = float(setup.initial_ratios(fed.full_round_times)[cid])
    try:
        state = store.load(cid, task.base_round, initial)
    except NodeStateError as err:
        raise NodeFailure(SETUP, str(err)) from None
    if settings.pause_round == task.round:
        _pause(settings.state_dir / cfg.run_name, task)
    device = slot.data.images.device
    with torch_threads(numeric_threads(cfg, resolve_threads(cfg.num_threads))):
        planner = client_planner(setup, task.broadcast, task.round, device)
        try:
            result, state = local_update(setup, slot, task.round, task.broadcast, planner,
                                         state.to(device))
        except DivergenceError as err:
            raise NodeFailure(DIVERGENCE, str(err)) from None
    store.save(cid, task.round, state, task.base_round)
    return result.message, result.to_record()


def run_tasks(settings: NodeSettings, tasks: list[Task]) -> dict[int, Outcome]:
    """A message's tasks (the node's clients of the round): on the parallel engine side by side
    on the experiment's `num_threads` threads (0: this node's cores), one torch thread each, as
    the simulation runs a round's clients (fl/round.py); each update is a pure function of its
    client's state, so the numbers do not depend on how many ran at once."""
    if not tasks:
        return {}
    try:
        cfg = node_config(settings, tasks[0].experiment)
        federation(cfg)  # built once, before any thread needs it
    except NodeFailure as err:
        return {t.client_id: err for t in tasks}
    workers = resolve_threads(cfg.num_threads) if cfg.engine == "parallel" else 1
    outcomes = one_thread_map(lambda t: timed(run_task, settings, t), tasks, workers)
    return {t.client_id: out for t, out in zip(tasks, outcomes)}


def node_config(settings: NodeSettings, experiment: dict) -> ExperimentConfig:
    """The server's experiment with this node's data root and device."""
    try:
        return ExperimentConfig.from_dict({
            **experiment, "data_root": settings.data_root,
            "device": settings.device or experiment.get("device", "cpu"), "progress": "off"})
    except ConfigError as err:
        raise NodeFailure(SETUP, f"the experiment's parameters: {err}") from None


def federation(cfg: ExperimentConfig) -> Federation:
    """The experiment's federation (partition, profiles, initial ratios: deterministic from
    the seed, so every node and the server agree without exchanging data), built once per node
    process and experiment, not per task."""
    key = json.dumps({**cfg.science_dict(), "data_root": cfg.data_root, "device": cfg.device},
                     sort_keys=True, default=str)
    if key not in _FEDERATIONS:
        try:
            _FEDERATIONS.clear()  # one experiment at a time: the last one's data is let go
            _FEDERATIONS[key] = build_federation(cfg)
        except DataUnavailableError as err:
            raise NodeFailure(SETUP, f"data: {err}") from None
    return _FEDERATIONS[key]


_FEDERATIONS: dict[str, Federation] = {}


def client_planner(setup, broadcast: bytes, round_idx: int, device):
    """The planner `local_update` needs, from what the client has: a structured sub-model's
    plan comes on the wire (decoding it needs only the layout); an unstructured mask is ranked
    on the global model, which for unstructured methods is the (dense) broadcast itself."""
    dense = FullPlanner(setup.layout, device)
    received = wire.decode(broadcast, dense, device)
    if setup.extractor.kind == "unstructured":
        params = torch.zeros(setup.layout.size, device=device)
        params[received.coords] = received.values
        return setup.extractor.for_round(setup.layout, params, round_idx)
    return dense


def _pause(folder: Path, task: Task) -> None:
    """Fault injection: say so in a file, then wait to be killed (a node dying mid-round)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"paused-round-{task.round}-client-{task.client_id}"
    marker.write_text("paused\n")
    limit = time.monotonic() + PAUSE_LIMIT_SEC
    while time.monotonic() < limit:
        time.sleep(1.0)
    raise NodeFailure(FAILED, f"paused in round {task.round} and never killed")
