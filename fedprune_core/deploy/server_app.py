"""The ServerApp: the simulation's loop, with the clients on SuperNodes.

`main` runs `run.loop.run_experiment` (same sampling, aggregation, evaluation, metrics,
checkpoints and run folder as `python -m fedprune_core run`) with `FlowerUpdates` as the
round's update source: for each sampled client it sends the broadcast the simulation would hand
it to the node hosting it, waits for the replies, decodes each update with the round's planner
(the plan, the client, its samples and its ratio are in the update's own header) and yields
what `fl.round.run_round` needs, in cohort order (run_round decodes each update, once). A client
whose reply does not come (its node died, its ClientApp failed, the round's timeout passed) is
yielded as `Missing`: a row with status 'missing', no change to the model or its state. The
server holds no residual: those and the clients' ratios live on the nodes (node_state.py); the
ratios it keeps are the next ratios the nodes' results said, used to cut the next sub-model.

Flower's framing is measured on every message (protocol.serialized_size) and written to
`deployment.csv` in the run folder, one row a round, and to summary.json's `deployment`.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd
from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from ..config import ExperimentConfig
from ..errors import DeploymentError, DivergenceError, exit_status
from ..fl import wire
from ..fl.round import broadcaster, round_plan
from ..fl.store import ClientState
from ..fl.types import ClientResult, Missing, Update
from ..run.artifacts import run_logger, write_csv, write_summary
from ..run.loop import run_experiment
from . import protocol

app = ServerApp()

RESULT_MARKER = "FEDPRUNE-DEPLOY-RESULT "  # the last line the ServerApp prints (launch.py reads it)
DEPLOYMENT_CSV = "deployment.csv"
POLL_SEC = 0.2  # between pulls of pending replies (Flower's own send_and_receive waits 3 s)


@dataclass(frozen=True)
class ServerSettings:
    """The run config `python -m fedprune_core deploy` passes (`flwr run --run-config`)."""

    experiment: dict
    num_nodes: int
    round_timeout: float = 3600.0  # 0: wait for every reply (or Flower's word that a node died)
    node_wait: float = 600.0  # for every node to connect before round 1
    crash_round: int = 0  # fault injection (tests): die after this round's replies arrive
    status_file: str = ""  # where to write the outcome too (a launcher on this machine)

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> "ServerSettings":
        return cls(json.loads(config["experiment"]), int(config["num-nodes"]),
                   float(config.get("round-timeout", 3600.0)),
                   float(config.get("node-wait", 600.0)), int(config.get("crash-round", 0)),
                   str(config.get("status-file", "")))


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = ServerSettings.from_run_config(dict(context.run_config))
    outcome = serve(grid, settings)
    if settings.status_file:  # written whole: the launcher tells a finished app from a dead one
        path = Path(settings.status_file)
        path.with_suffix(".tmp").write_text(json.dumps(outcome))
        os.replace(path.with_suffix(".tmp"), path)
    print(RESULT_MARKER + json.dumps(outcome), flush=True)
    if outcome["exit"] != 0:  # Flower records the run as failed
        raise RuntimeError(outcome["error"])


def serve(grid: Grid, settings: ServerSettings) -> dict:
    """Run the experiment; {"exit": status as `python -m fedprune_core run` gives it, "error":
    its one line, "run_dir": ...}."""
    run_dir = None
    try:
        cfg = ExperimentConfig.from_dict({**settings.experiment, "progress": "text"})
        run_dir = Path(cfg.results_dir) / cfg.run_name
        nodes = Nodes(grid, settings.num_nodes, cfg.to_dict(), settings.node_wait)
        nodes.wait_for_all(settings.node_wait)
        source = FlowerUpdates(grid, cfg, nodes, settings)
        result = run_experiment(cfg, on_round_end=source.round_end, updates=source)
        source.add_to_summary(result)
        return {"exit": 0, "error": None, "run_dir": str(run_dir)}
    except BaseException as err:  # noqa: BLE001 - every outcome goes back as one line
        known = exit_status(err, run_dir)
        if known is None:  # a bug: its traceback in the log, one line back
            traceback.print_exc()
            known = 1, f"error: the ServerApp failed: {type(err).__name__}: {err}"
        status, line = known
        return {"exit": status, "error": line.split(": ", 1)[1] if line.startswith("error: ")
                else line, "run_dir": None if run_dir is None else str(run_dir)}


def _say(text: str) -> None:
    print(text, flush=True)


class Nodes:
    """Which SuperNode hosts which clients: node-index -> node id, learned by asking each node
    (a `query` message) the first time it shows up. A node that restarts comes back under a new
    node id and is asked again; the node asked last wins its index."""

    def __init__(self, grid: Grid, num_nodes: int, experiment: dict, ask_limit: float = 600.0):
        self.grid, self.num_nodes, self.ask_limit = grid, num_nodes, ask_limit
        self.experiment = experiment
        self.index_of: dict[int, int] = {}  # node id -> node-index
        self.asked: dict[int, int] = {}  # node id -> when asked (0, 1, ...)
        self.failures: list[str] = []

    def online(self) -> dict[int, int]:
        """node-index -> node id of the nodes online now."""
        ids = set(self.grid.get_node_ids())
        new = sorted(ids - set(self.asked))
        if new:
            self._ask(new)
        hosts: dict[int, int] = {}
        for node_id in sorted(ids & set(self.index_of), key=self.asked.get):
            hosts[self.index_of[node_id]] = node_id
        return hosts

    def _ask(self, node_ids: list[int]) -> None:
        for node_id in node_ids:
            self.asked[node_id] = len(self.asked)
        sent = self.grid.push_messages([protocol.query_message(n, self.experiment)
                                         for n in node_ids])
        pending = {m: n for m, n in zip(sent, node_ids) if m}
        deadline = time.monotonic() + self.ask_limit
        while pending and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(sorted(pending)):
                node_id = pending.pop(reply.metadata.reply_to_message_id, None)
                if node_id is not None:
                    self._learn(node_id, reply)
            if pending:
                time.sleep(POLL_SEC)

    def _learn(self, node_id: int, reply: Message) -> None:
        if reply.has_error():
            kind, text = protocol.parse_error(reply.error.reason)
            if kind == protocol.SETUP:
                raise DeploymentError(f"SuperNode {node_id}: {text}")
            self.failures.append(f"SuperNode {node_id}: {text.strip()}")
            _say(f"SuperNode {node_id} did not say which clients it hosts ({text.strip()}); "
                 f"it is left out")
            return
        info = reply.content[protocol.NODE]
        if info["fingerprint"] != protocol.fingerprint():
            raise DeploymentError(f"SuperNode {node_id} ({info['host']}) runs "
                                  f"{info['fingerprint']!r}, the server "
                                  f"{protocol.fingerprint()!r}: install the same release "
                                  f"everywhere")
        if int(info["num-nodes"]) != self.num_nodes:
            raise DeploymentError(f"SuperNode {node_id} ({info['host']}) was started with "
                                  f"num-nodes={info['num-nodes']}, this deployment has "
                                  f"{self.num_nodes}: restart it with the same num-nodes")
        index = int(info["node-index"])
        others = [n for n, i in self.index_of.items() if i == index]
        if others:
            _say(f"SuperNode {node_id} says it is node {index} too (as {others}): the newest "
                 f"one serves its clients")
        self.index_of[node_id] = index
        _say(f"SuperNode {node_id} on {info['host']} is node {info['node-index']} of "
             f"{self.num_nodes}")

    def wait_for_all(self, limit: float) -> None:
        """Until every node-index is online (round 1 then has every client), or fail."""
        deadline = time.monotonic() + limit
        while True:
            hosts = self.online()
            if len(hosts) == self.num_nodes:
                return
            if time.monotonic() > deadline:
                missing = sorted(set(range(self.num_nodes)) - set(hosts))
                failed = f" ({'; '.join(self.failures)})" if self.failures else ""
                raise DeploymentError(
                    f"only {len(hosts)} of {self.num_nodes} SuperNodes connected within "
                    f"node_wait={limit:g} s; missing node-index {missing}{failed}")
            time.sleep(POLL_SEC)


@dataclass
class _Sent:
    slot: Any
    down: int  # bytes of the broadcast (sent if node is not None)
    node: Optional[int] = None
    message_id: Optional[str] = None


@dataclass
class _Round:
    """A round's messages as sent: each client's _Sent, the round's deployment.csv row so far,
    and when the messages went out."""

    round: int
    sends: list[_Sent]
    stats: dict
    start: float


@dataclass
class FlowerUpdates:
    """The round's UpdateSource (fl.round): the clients' updates from their SuperNodes."""

    grid: Grid
    cfg: Any
    nodes: Nodes
    settings: ServerSettings
    base: Optional[dict[int, int]] = None  # client -> last round whose update the server kept
    rounds: list[dict] = field(default_factory=list)  # deployment.csv
    sent: Optional[_Round] = None  # the next round, sent before this one was evaluated (start)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.results_dir) / self.cfg.run_name

    @property
    def log(self):
        return run_logger(self.cfg.run_name)  # run.log (run/artifacts)

    def start(self, state, cohort, setup) -> None:
        """Send the next round now, before the server evaluates this one (run/loop.py): the
        nodes train meanwhile. The same state, cohort and planner as the round will pass."""
        planner, training = round_plan(state, cohort, setup)
        self.sent = self._send(state, training, setup, planner)

    def __call__(self, state, cohort, setup, planner) -> Iterator[Update | Missing]:
        r = cohort.round
        early, self.sent = self.sent, None
        if early is None or early.round != r:  # not started early (round 1, a resumed run)
            early = self._send(state, cohort, setup, planner)
        if [s.slot.client_id for s in early.sends] != [s.client_id for s in cohort.clients]:
            raise RuntimeError(f"round {r}: the round started early was another cohort")
        sends, stats, start = early.sends, early.stats, early.start
        replies = self._collect(sorted({s.message_id for s in sends if s.message_id}), r)
        stats["reply_wait_sec"] = time.perf_counter() - start
        if self.settings.crash_round == r:
            _say(f"fault injection: the ServerApp dies after round {r}'s replies arrived")
            os._exit(70)
        updates = []
        for sent in sends:
            update = self._update(sent, replies.get(sent.message_id), r)
            if isinstance(update, Missing):
                stats["clients_missing"] += 1
            else:
                stats["clients_ok"] += 1
                stats["uplink_payload_bytes"] += len(update.result.message)
            updates.append(update)
        stats["uplink_message_bytes"] = sum(protocol.serialized_size(reply)
                                            for reply in replies.values()
                                            if not reply.has_error())
        if cohort.clients and not stats["clients_ok"]:  # (all sitting out is a round)
            raise self._fail(
                f"round {r}: no client update arrived ({stats['clients_missing']} missing, "
                f"{stats['nodes_online']} of {self.settings.num_nodes} nodes connected); the run "
                f"stops at round {r - 1}'s checkpoint: continue with --resume once the nodes "
                f"are up")
        stats["flower_downlink_overhead_bytes"] = (stats["downlink_message_bytes"]
                                                   - stats["downlink_payload_bytes"])
        stats["flower_uplink_overhead_bytes"] = (stats["uplink_message_bytes"]
                                                 - stats["uplink_payload_bytes"])
        self.rounds = [row for row in self.rounds if row["round"] < r] + [stats]
        for update in updates:
            if not isinstance(update, Missing):
                self.base[update.slot.client_id] = r
            yield update

    def _send(self, state, cohort, setup, planner) -> "_Round":
        """Each client's broadcast (the simulation's), one message a node, pushed all at once:
        the nodes train side by side."""
        r, log = cohort.round, self.log
        if self.base is None:
            self._resume(state.round)
        hosts = self.nodes.online()
        broadcast = broadcaster(state, setup, planner)
        stats = {"round": r, "nodes_online": len(hosts), "clients_ok": 0, "clients_missing": 0,
                 "downlink_payload_bytes": 0, "downlink_message_bytes": 0,
                 "uplink_payload_bytes": 0, "uplink_message_bytes": 0}
        sends, tasks, experiment = [], {}, self.cfg.to_dict()
        for slot in cohort.clients:
            cid = slot.client_id
            node = hosts.get(cid % self.settings.num_nodes)
            if node is None:
                log.warning(f"  round {r:3d} client {cid:3d} | node {cid % self.settings.num_nodes}"
                            f" is not connected: nothing sent")
                sends.append(_Sent(slot, 0))
                continue
            down = broadcast(cid, state.clients[cid].ratio)
            tasks.setdefault(node, []).append(protocol.Task(
                experiment, r, cid, self.base.get(cid, 0), down, protocol.fingerprint()))
            sends.append(_Sent(slot, len(down), node))
            stats["downlink_payload_bytes"] += len(down)
        start, ids = time.perf_counter(), {}
        # the node with the most clients first; one push a message: Flower's push_messages
        # announces every message before uploading any content, and a node that asks for its
        # content too early backs off a second
        for node, node_tasks in sorted(tasks.items(), key=lambda kv: -len(kv[1])):
            message = protocol.train_message(node_tasks, node)
            stats["downlink_message_bytes"] += protocol.serialized_size(message)
            ids[node] = next(iter(self.grid.push_messages([message])), None)
        del tasks
        for sent in sends:
            sent.message_id = ids.get(sent.node) or None
        return _Round(r, sends, stats, start)

    def _fail(self, message: str) -> DeploymentError:
        self.log.error(f"Run stopped: {message}")  # run.log, then the error to the launcher
        return DeploymentError(message)

    def _collect(self, message_ids: list[str], r: int) -> dict[str, Message]:
        """Replies by instruction id: every one, or those in by round_timeout."""
        pending, replies = set(message_ids), {}
        timeout = self.settings.round_timeout
        deadline = time.monotonic() + timeout if timeout > 0 else math.inf
        while pending:
            for reply in self.grid.pull_messages(sorted(pending)):
                key = reply.metadata.reply_to_message_id
                if key in pending:
                    pending.discard(key)
                    replies[key] = reply
            if not pending:
                break
            if time.monotonic() > deadline:
                self.log.warning(f"round {r}: {len(pending)} repl(ies) not in within "
                                 f"round_timeout={timeout:g} s: counted missing")
                break
            time.sleep(POLL_SEC)
        return replies

    def _update(self, sent: _Sent, reply: Optional[Message], r: int) -> Update | Missing:
        """The client's Update from its reply (decoded, once, by the round), or Missing."""
        slot, log = sent.slot, self.log
        cid, down = slot.client_id, sent.down
        missing = Missing(slot, down)
        if sent.node is None:
            return missing
        if reply is None:
            log.warning(f"  round {r:3d} client {cid:3d} | no reply from node "
                        f"{cid % self.settings.num_nodes}")
            return missing
        outcome = protocol.outcome_of(reply, cid)
        if outcome is None:
            log.warning(f"  round {r:3d} client {cid:3d} | node {cid % self.settings.num_nodes}"
                        f"'s reply holds no update of it")
            return missing
        if isinstance(outcome, protocol.NodeFailure):
            kind, text = outcome.kind, str(outcome)
            if kind == protocol.DIVERGENCE:
                raise DivergenceError(text)
            if kind == protocol.SETUP:
                raise self._fail(f"round {r}, client {cid} on node "
                                 f"{cid % self.settings.num_nodes}: {text}")
            log.warning(f"  round {r:3d} client {cid:3d} | node "
                        f"{cid % self.settings.num_nodes} failed: {text.strip()}")
            return missing
        payload, record = outcome
        try:
            client, samples, _ = wire.header(payload)
            if (client, samples) != (cid, len(slot.data)):
                raise wire.WireError(f"the update is client {client}'s with {samples} samples")
            result = ClientResult.from_record(payload, record)
        except (ValueError, KeyError, TypeError, struct.error) as err:  # WireError: ValueError
            log.warning(f"  round {r:3d} client {cid:3d} | its update is not this client's "
                        f"({err})")
            return missing
        # the server keeps the ratio the client's own update step gave it
        return Update(slot, down, result, ClientState(result.next_ratio))

    def _resume(self, completed: int) -> None:
        """The base rounds and deployment rows of the rounds the checkpoint holds (clients.csv
        is written before the checkpoint, so its rows up to `completed` are the kept ones)."""
        self.base = {}
        if completed == 0:
            return
        clients = pd.read_csv(self.run_dir / "clients.csv")
        clients = clients[clients["round"] <= completed]
        if "status" in clients:
            clients = clients[clients.status == "ok"]
        self.base = {int(c): int(r) for c, r in
                     clients.groupby("client_id")["round"].max().items()}
        path = self.run_dir / DEPLOYMENT_CSV
        if path.exists():
            rows = pd.read_csv(path).to_dict("records")
            self.rounds = [row for row in rows if row["round"] <= completed]

    def round_end(self, r: int, row: dict) -> None:
        """After the round's checkpoint: its Flower numbers into deployment.csv and run.log."""
        write_csv(self.rounds, self.run_dir / DEPLOYMENT_CSV)
        s = self.rounds[-1]
        self.log.info(f"  Flower round {r}: uplink {s['uplink_payload_bytes']:,} B of updates in "
                      f"{s['uplink_message_bytes']:,} B of messages (overhead "
                      f"{s['flower_uplink_overhead_bytes']:,} B); downlink overhead "
                      f"{s['flower_downlink_overhead_bytes']:,} B; {s['clients_missing']} "
                      f"missing; replies in {s['reply_wait_sec']:.1f} s",
                      extra={"client": True})

    def add_to_summary(self, result) -> None:
        """summary.json's `deployment`: the Flower totals beside the run's own numbers."""
        rounds = self.rounds
        ok = result.clients[result.clients.status == "ok"]
        deployment = {
            "runtime": "flower", "nodes": self.settings.num_nodes,
            "flower_uplink_overhead_bytes": int(sum(r["flower_uplink_overhead_bytes"]
                                                    for r in rounds)),
            "flower_uplink_overhead_bytes_per_round": float(
                sum(r["flower_uplink_overhead_bytes"] for r in rounds) / max(len(rounds), 1)),
            "flower_downlink_overhead_bytes": int(sum(r["flower_downlink_overhead_bytes"]
                                                      for r in rounds)),
            "missing_updates": int((result.clients.status == "missing").sum()),
            "node_time_sec_mean": float(ok.node_time_sec.mean()),
            "update_time_sec_mean": float(ok.update_time_sec.mean()),
            "simulated_time_sec_mean": float(ok.simulated_time_sec.mean())}
        result.summary["deployment"] = deployment
        write_summary(result.summary, self.run_dir)
