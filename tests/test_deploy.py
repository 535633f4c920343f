"""A Flower deployment (fedprune_core/deploy; Beutel et al. 2020) gives the simulation's numbers.

Each deployment is `python -m fedprune_core deploy` with a real SuperLink and 3 real SuperNodes
on 127.0.0.1, each in its own process: with process isolation (the default) the nodes'
long-lived executors run every message; the secure deployment runs Flower's subprocess
isolation instead (a ClientApp process a message, handing it to the node's worker), so both
paths are run for real. Tens of seconds of CPU each: each deployment is used by exactly one
test (pytest-xdist never starts one twice), and each test asserts all it can on it. Nothing
waits on a clock: the processes are waited for, and a killed SuperNode is declared gone by the
SuperLink's own heartbeat check (its patience is 2 x 30 s).
"""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("flwr", reason="the flower extra: pip install -e '.[flower]'")

from fedprune_core.config import ExperimentConfig  # noqa: E402
from fedprune_core.fl.round import _client_row, _missing_row, client_updates  # noqa: E402
from fedprune_core.fl.state import ClientState  # noqa: E402
from fedprune_core.fl.systems import ClientProfile  # noqa: E402
from fedprune_core.fl.types import ClientResult, ClientSlot, Missing, Update  # noqa: E402
from fedprune_core.run.federation import sample_clients  # noqa: E402
from fedprune_core.run.loop import run_experiment  # noqa: E402
from fedprune_core.run.summary import TIMING_COLUMNS  # noqa: E402

NODES = 3
# The default method (structured adaptive sub-models + cost-weighted top-k with error feedback,
# so every client's residual and ratio matter), small: 2 rounds of 3 of 6 clients.
TINY = dict(rounds=2, num_clients=6, clients_per_round=3, local_epochs=1, data_fraction=0.02,
            eval_every=2, test_samples=500, num_threads=1)
SAFETY_LIMIT_SEC = 1800  # a hung deployment fails the test instead of hanging it


def deploy(results: Path, run_name: str, *extra: str) -> subprocess.CompletedProcess:
    params = [f"--{k}={v}" for k, v in TINY.items()]
    return subprocess.run(
        [sys.executable, "-m", "fedprune_core", "deploy", "--nodes", str(NODES), *params,
         "--results_dir", str(results), "--run_name", run_name, *extra],
        capture_output=True, text=True, timeout=SAFETY_LIMIT_SEC,
        cwd=Path(__file__).resolve().parents[1])


def simulate(results: Path, run_name: str, updates=None):
    cfg = ExperimentConfig(**TINY, results_dir=str(results), run_name=run_name, progress="off")
    return run_experiment(cfg, updates=updates)


def _frame(run_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / f"{name}.csv").drop(columns=list(TIMING_COLUMNS.get(name, ())))


def assert_same_numbers(deployed: Path, simulated: Path) -> None:
    for name in ("metrics", "clients", "diagnostics"):
        pd.testing.assert_frame_equal(_frame(deployed, name), _frame(simulated, name),
                                      check_exact=True)
    a, b = (torch.load(d / "final_model.pt", weights_only=True)["state_dict"]
            for d in (deployed, simulated))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def processes_of(work: Path) -> list[int]:
    """Live processes of a deployment (every one has its FLWR_HOME)."""
    marker = f"FLWR_HOME={work / 'flwr-home'}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0") and \
                    "Z" not in (entry / "stat").read_text().rsplit(")", 1)[1].split()[:1]:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_missing_row_has_the_columns_of_a_client_row():
    slot = ClientSlot(3, [], ClientProfile(1.0, 1.0, 1.0))
    result = ClientResult(client_id=3, message=b"xy", num_samples=5, ratio=0.4, next_ratio=0.4,
                          trained_params=2, sent=1, train_loss=0.5, train_flops=1,
                          dense_train_flops=2, simulated_time_sec=0.2, update_time_sec=0.1,
                          train_time_sec=0.1)
    ok = _client_row(2, Update(slot, 10, result, ClientState(0.4)), 4)
    missing = _missing_row(2, slot, 10)
    assert list(missing) == list(ok)  # the same columns in the same order
    assert (ok["status"], missing["status"]) == ("ok", "missing")
    assert math.isnan(ok["node_time_sec"])  # a simulated client has no node
    assert missing["downlink_bytes"] == 10 and missing["uplink_bytes"] == 0
    assert math.isnan(missing["train_loss"])


def test_a_node_keeps_the_state_of_the_round_the_server_continues_from(tmp_path):
    from fedprune_core.deploy.node_state import NodeStateError, NodeStore
    from fedprune_core.fl.state import ClientState

    store = NodeStore(tmp_path, "run", "key")
    assert store.load(3, 0, 0.25) == ClientState(0.25)  # never trained: its first state
    store.save(3, 1, ClientState(0.4, torch.arange(4.0)), base_round=0)
    store.save(3, 2, ClientState(0.45, torch.ones(4)), base_round=1)  # the server lost round 2
    store.save(3, 4, ClientState(0.5, torch.zeros(4)), base_round=1)  # ...so 4 starts from 1
    assert sorted(p.name for p in store.folder(3).iterdir()) == ["round-1.pt", "round-4.pt"]
    back = store.load(3, 1, 0.25)
    assert back.ratio == 0.4 and torch.equal(back.residual, torch.arange(4.0))
    with pytest.raises(NodeStateError, match="does not exist"):
        store.load(3, 2, 0.25)
    with pytest.raises(NodeStateError, match="not this run"):
        NodeStore(tmp_path, "run", "another experiment").load(3, 4, 0.25)


def test_an_unreachable_superlink_is_one_line_and_status_2(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = tmp_path / "results"
    out = deploy(results, "nowhere", "--superlink", f"127.0.0.1:{port}")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert not (results / "nowhere").exists()


def test_a_crashed_server_resumes_and_a_killed_node_is_a_missing_update(tmp_path):
    """Round 2's clients train, then the ServerApp dies before saving round 2: the nodes hold
    round-2 states the server never kept. The resumed deployment must roll them back to round 1
    (else their residuals, hence the model, differ), while SuperNode `victim` is SIGKILLed in
    the middle of round 2: its client is missing, the round completes with the others. The
    reference is the simulation with that client's update dropped in round 2."""
    results = tmp_path / "results"
    cfg = ExperimentConfig(**TINY)
    first, second = set(sample_clients(cfg, 1)), set(sample_clients(cfg, 2))
    # a node whose round-2 clients are all new, leaving clients that trained in round 1 (with
    # residuals to roll back) on the other nodes
    victim = next(n for n in range(NODES)
                  if all(c not in first for c in second if c % NODES == n)
                  and any(c in first for c in second if c % NODES != n)
                  and any(c % NODES == n for c in second))
    dropped = {c for c in second if c % NODES == victim}

    out = deploy(results, "crash", "--crash_after_round", "2")
    assert out.returncode == 1 and "--resume" in out.stderr, out.stderr + out.stdout[-3000:]
    run_dir, work = results / "crash", results / ".deploy" / "crash"
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "summary.json").exists()
    # process isolation: the nodes' executors ran every message, no ClientApp process did
    assert (work / "logs" / "executors.log").exists()
    assert "flwr-clientapp" not in (work / "logs" / "supernode-0.log").read_text()
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 1
    ahead = {int(p.parent.name.split("-")[1])
             for p in work.glob("node-*/crash/client-*/round-2.pt")}
    assert ahead == second  # the nodes trained round 2: the server did not keep it
    assert processes_of(work) == []

    out = deploy(results, "crash", "--resume", "--kill_node", f"{victim}:2")
    assert out.returncode == 0, out.stderr + out.stdout[-3000:]
    assert f"SuperNode {victim} killed" in out.stdout
    clients = pd.read_csv(run_dir / "clients.csv")
    round2 = clients[clients["round"] == 2].set_index("client_id")
    assert set(round2.index) == second
    assert set(round2.index[round2.status == "missing"]) == dropped
    assert (round2.loc[sorted(dropped), "downlink_bytes"] > 0).all()  # it was sent, not received
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 2  # the round completed
    assert "missing" in (run_dir / "run.log").read_text()
    assert "Round   2/2" in out.stdout  # the ServerApp's log, streamed here
    assert (clients[clients.status == "ok"].node_time_sec > 0).all()  # measured on the nodes
    # what clients.csv counts is what the replies carried; Flower's framing is beside it
    metrics = pd.read_csv(run_dir / "metrics.csv")
    flower = pd.read_csv(run_dir / "deployment.csv")
    assert flower["round"].tolist() == [1, 2]
    assert flower.clients_missing.tolist() == [0, len(dropped)]
    assert flower.uplink_payload_bytes.tolist() == metrics.uplink_bytes.tolist()
    assert flower.downlink_payload_bytes.tolist() == metrics.downlink_bytes.tolist()
    assert (flower.flower_uplink_overhead_bytes
            == flower.uplink_message_bytes - flower.uplink_payload_bytes).all()
    assert (flower.flower_uplink_overhead_bytes > 0).all()
    assert (flower.flower_uplink_overhead_bytes < 3 * 4096).all()  # a few kB a round, not MB
    deployment = json.loads((run_dir / "summary.json").read_text())["deployment"]
    assert deployment["nodes"] == NODES and deployment["missing_updates"] == len(dropped)
    assert deployment["flower_uplink_overhead_bytes"] == int(
        flower.flower_uplink_overhead_bytes.sum())
    assert not any(work.glob("node-*")), "a finished run's node state is removed"
    assert processes_of(work) == []

    def without_dropped(state, cohort, setup, planner):
        for update in client_updates(state, cohort, setup, planner):
            slot, down = update[0], update[1]
            dropping = cohort.round == 2 and slot.client_id in dropped
            yield Missing(slot, down) if dropping else update

    simulate(results, "reference", without_dropped)
    assert_same_numbers(run_dir, results / "reference")  # the simulation's numbers, exactly
    assert pd.read_csv(results / "reference" / "clients.csv").node_time_sec.isna().all()


def test_a_secure_deployment_gives_the_same_numbers_and_refuses_strangers(tmp_path):
    """`deploy --tls`: a CA, the SuperLink's certificate and a key pair per SuperNode made for
    the run; the SuperLink speaks TLS and admits only the registered SuperNodes; the numbers
    are the simulation's (so the insecure deployment's). Then, against a SuperLink with TLS and
    authentication: a SuperNode whose key was never registered is refused with Flower's words,
    and a client without the CA gets one line saying what it needs."""
    import socket
    import time

    from fedprune_core.deploy import tls

    results = tmp_path / "results"
    out = deploy(results, "secure", "--tls", "--isolation", "subprocess")
    assert out.returncode == 0, out.stderr + out.stdout[-3000:]
    work = results / ".deploy" / "secure"
    assert not (work / "logs" / "executors.log").exists()  # Flower's ClientApp processes ran
    assert "Start `flwr-clientapp` process" in (work / "logs" / "supernode-0.log").read_text()
    keys = results / ".deploy" / "secure" / "tls"
    assert {p.name for p in keys.iterdir()} >= {"ca.crt", "server.pem", "server.key",
                                                *(f"node-{i}.key" for i in range(NODES))}
    assert (keys / "node-0.key").stat().st_mode & 0o077 == 0  # private keys: this user only
    log = (results / ".deploy" / "secure" / "logs" / "superlink.log").read_text()
    assert "https://127.0.0.1" in log and "\x1b[" not in log  # TLS; no colour codes
    simulate(results, "reference")
    assert_same_numbers(results / "secure", results / "reference")

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    made = tls.local_keys(tmp_path / "keys", 1)
    port = free_port()
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "home"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    bin_dir = Path(sys.executable).parent
    link = subprocess.Popen(
        [bin_dir / "flower-superlink", "--ssl-ca-certfile", made["ca"], "--ssl-certfile",
         made["cert"], "--ssl-keyfile", made["key"], "--enable-supernode-auth", "--host",
         "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while link.poll() is None:  # until it listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        # its output to a file: the helpers it starts keep a pipe open after it exits
        with open(tmp_path / "stranger.log", "w") as out:
            stranger = subprocess.Popen(
                [bin_dir / "flower-supernode", "--superlink", f"127.0.0.1:{port}",
                 "--root-certificates", made["ca"], "--auth-supernode-private-key",
                 made["nodes"][0][0], "--host", "127.0.0.1", "--port", str(free_port())],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert stranger.wait(timeout=SAFETY_LIMIT_SEC) != 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(stranger.pid, signal.SIGKILL)  # and the SuperExec it started
        assert "Failed to activate SuperNode" in (tmp_path / "stranger.log").read_text()
        client = deploy(results, "no-ca", "--superlink", f"127.0.0.1:{port}")
        assert client.returncode == 2
        lines = client.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: flwr run could not start")
        assert "--root_certificates" in lines[0]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(link.pid, signal.SIGKILL)
        link.wait()


def test_a_nodes_message_carries_each_clients_task_and_comes_back_per_client(monkeypatch):
    from flwr.app import Error, Message
    from flwr.supercore.task_identity import TaskIdentity

    from fedprune_core.deploy import protocol

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # as in a ServerApp's process
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)

    tasks = [protocol.Task({"seed": 1}, 3, cid, base, bytes([cid]) * (10 + cid),
                           protocol.fingerprint()) for cid, base in ((4, 2), (9, 0), (1, 3))]
    message = protocol.train_message(tasks, node_id=77)
    assert message.metadata.dst_node_id == 77 and message.metadata.group_id == "3"
    assert protocol.tasks_of(message) == tasks  # cohort order, every field, the exact bytes
    outcomes = {4: (b"update-4", {"loss": 0.5}), 9: protocol.NodeFailure(protocol.FAILED, "oom"),
                1: (b"update-1", {"loss": 0.25})}
    message.metadata.__dict__["_message_id"] = message.object_id
    reply = protocol.reply(message, outcomes)
    update, record = protocol.outcome_of(reply, 4)
    assert update == b"update-4" and record["loss"] == 0.5
    assert protocol.outcome_of(reply, 1)[0] == b"update-1"
    failed = protocol.outcome_of(reply, 9)
    assert isinstance(failed, protocol.NodeFailure) and (failed.kind, str(failed)) == (
        protocol.FAILED, "oom")
    assert protocol.outcome_of(reply, 5) is None  # not a client of this message
    whole = Message(Error(code=0, reason=protocol.error_reason(protocol.SETUP, "no data")),
                    reply_to=message)
    assert protocol.outcome_of(whole, 4).kind == protocol.SETUP  # the message's error: each
    other = protocol.Task({}, 3, 4, 0, b"", "fedprune-sparse 0.0 protocol 1")
    with pytest.raises(protocol.NodeFailure, match="install the same release"):
        protocol.tasks_of(protocol.train_message([other], 77))


def test_a_node_trains_its_clients_side_by_side_to_the_simulations_numbers(tmp_path):
    """node.run_tasks, as a node's executor runs a message: the node's clients on 2 threads
    (num_threads=2), through the loop's early start (each round's messages go out before the
    last round is evaluated, as the ServerApp sends them). The same numbers as the simulation,
    and each round started early exactly once, with the cohort it then ran."""
    from fedprune_core.deploy import node, protocol
    from fedprune_core.deploy.settings import NodeSettings
    from fedprune_core.fl.round import broadcaster, round_plan

    cfg = ExperimentConfig(**{**TINY, "rounds": 3, "num_threads": 2, "eval_every": 1},
                           results_dir=str(tmp_path / "results"), run_name="node",
                           progress="off")
    settings = NodeSettings(node_index=0, num_nodes=1, state_dir=tmp_path / "node")

    class ThroughTheNode:
        def __init__(self):
            self.kept, self.early, self.started = {}, None, []

        def outcomes(self, state, cohort, setup, planner):
            broadcast = broadcaster(state, setup, planner)
            tasks = [protocol.Task(cfg.to_dict(), cohort.round, s.client_id,
                                   self.kept.get(s.client_id, 0),
                                   broadcast(s.client_id, state.clients[s.client_id].ratio),
                                   protocol.fingerprint()) for s in cohort.clients]
            return cohort.round, tasks, node.run_tasks(settings, tasks)

        def start(self, state, cohort, setup):
            planner, training = round_plan(state, cohort, setup)
            self.started.append((cohort.round, [s.client_id for s in training.clients]))
            self.early = self.outcomes(state, training, setup, planner)

        def __call__(self, state, cohort, setup, planner):
            early, self.early = self.early, None
            r, tasks, outcomes = (early if early and early[0] == cohort.round
                                  else self.outcomes(state, cohort, setup, planner))
            assert [t.client_id for t in tasks] == [s.client_id for s in cohort.clients]
            for slot, task in zip(cohort.clients, tasks):
                update, record = outcomes[slot.client_id]
                assert record["node_time_sec"] > 0
                result = ClientResult.from_record(update, record)
                self.kept[slot.client_id] = r
                yield Update(slot, len(task.broadcast), result, ClientState(result.next_ratio))

    source = ThroughTheNode()
    run_experiment(cfg, updates=source)
    assert [r for r, _ in source.started] == [2, 3]  # not round 1, not after the last round
    assert [c for _, c in source.started] == [sample_clients(cfg, r) for r in (2, 3)]
    reference = run_experiment(cfg.replace(run_name="simulated"))
    assert reference.metrics.test_accuracy.notna().all()
    assert_same_numbers(tmp_path / "results" / "node", tmp_path / "results" / "simulated")


def test_the_executors_restart_a_nodes_executor_that_died(tmp_path):
    """Several local nodes: one process imports the suite once and forks an executor per
    SuperNode; one that is killed is forked again, and all go with their parent."""
    import time

    from fedprune_core.deploy.supervisor import descendants

    parent = subprocess.Popen(
        [sys.executable, "-m", "fedprune_core.deploy.executor", "--runtime-api-address",
         "127.0.0.1:9", "--runtime-api-address", "127.0.0.1:10"],  # no SuperNode there yet
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def children() -> list[int]:
        deadline = time.monotonic() + SAFETY_LIMIT_SEC
        while len(found := descendants([parent.pid])) < 2:
            assert parent.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        return sorted(found)

    try:
        first = children()
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + SAFETY_LIMIT_SEC
        while first[0] in (now := children()) or len(now) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert first[1] in now  # the other node's executor went on
    finally:
        os.killpg(parent.pid, signal.SIGTERM)
        out, _ = parent.communicate(timeout=SAFETY_LIMIT_SEC)
    assert "exited (status 9); starting it again" in out
    assert "Traceback" not in out


def test_isolation_is_for_the_nodes_this_command_starts(tmp_path):
    out = deploy(tmp_path, "elsewhere", "--superlink", "127.0.0.1:9093", "--isolation",
                 "subprocess")
    assert out.returncode == 2 and "isolation" in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2 and "Traceback" not in out.stderr


def test_executors_that_keep_dying_stop_the_deployment_with_their_log(tmp_path):
    """The launcher starts the nodes' executors' process again when it exits (a kill), but
    not forever: one that cannot start (a broken install) ends the deployment, its log named."""
    from fedprune_core.deploy import launch

    class Spawner:  # the part of supervisor.Supervisor the launcher uses here
        def __init__(self):
            self.procs, self.started = {}, 0

        def spawn(self, name, argv):
            self.started += 1
            self.procs[name] = subprocess.Popen(argv)
            self.procs[name].wait()  # it dies at once
            return self.procs[name]

    deployment = launch.Deployment.__new__(launch.Deployment)
    deployment.work, deployment.revived = tmp_path, 0
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "executors.log").write_text("ImportError: no module named torch\n")
    deployment.executors = [sys.executable, "-c", "raise SystemExit(3)"]
    deployment.supervisor = Spawner()
    deployment.supervisor.spawn("executors", deployment.executors)
    for _ in range(launch.REVIVE_LIMIT):
        deployment._revive_executors()
    assert deployment.supervisor.started == 1 + launch.REVIVE_LIMIT
    with pytest.raises(launch.DeployFailed, match="keep exiting .status 3.*executors.log.*"
                                                  "ImportError"):
        deployment._revive_executors()
