"""A deployment on this machine or at a SuperLink (Beutel et al. 2020, Flower).

By default everything runs on this machine, each part its own process as on real machines: a
SuperLink on 127.0.0.1, `--nodes` SuperNodes (node i hosts the clients {cid : cid % N == i}),
then `flwr run` submits the app (server_app.py / client_app.py, package.py writes it) with the
experiment's parameters and streams the ServerApp's log here. Ports are picked free at start.
Whatever happens (a finished run, an error, Ctrl-C, SIGTERM), every process started here is
stopped before the command returns (supervisor.py).

With `--superlink HOST:PORT` nothing is started here: the app is submitted to that SuperLink,
whose SuperNodes run elsewhere (README: "On real machines"). This module needs no torch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from ..errors import CommandError
from ..run.guard import OWNER_ENV, lock_run_dir
from . import package, tls
from .command import Options, parse_address
from .supervisor import AppWatch, Supervisor, plain

RESULT_MARKER = "FEDPRUNE-DEPLOY-RESULT "  # server_app.RESULT_MARKER (not imported: flwr)
STREAM_GRACE_SEC = 60.0  # for the log of a ServerApp that ended cleanly to arrive
START_LIMIT_SEC = 300.0  # for the SuperLink to listen (a safety limit, not a timing)
REVIVE_LIMIT = 3  # the nodes' executors started again at most this often in one deployment


class DeployFailed(CommandError):
    """A one-line error (`error: ...`) and the exit status the command returns."""


class Deployment:
    def __init__(self, cfg, opts: Options):
        self.cfg, self.opts = cfg, opts
        self.local = opts.superlink is None
        self.run_dir = Path(cfg.results_dir) / cfg.run_name
        self.work: Optional[Path] = None
        self.supervisor: Optional[Supervisor] = None
        self.keys: Optional[dict] = None  # deploy --tls: tls.local_keys
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self.owner_env: dict[str, str] = {}
        self.run_id: Optional[str] = None  # Flower's, once `flwr run` has started it
        self.runtimes: list[str] = []  # the local SuperNodes' Runtime API addresses
        self.executors: list[str] = []  # the argv of their executors' process
        self.revived = 0  # times that process was started again

    # --- the whole command ------------------------------------------------------------------
    def run(self) -> int:
        lock, created = None, not self.run_dir.exists()
        if self.local:
            # the run folder's lock, held for the ServerApp (our descendant: run.guard), so a
            # second deploy of this run cannot wipe the node state of the first
            lock = lock_run_dir(self.run_dir)  # RunLockedError: exit 2, nothing touched
            self.owner_env = {OWNER_ENV: str(os.getpid())}
        try:
            return self._run()
        finally:
            if lock is not None:
                lock.release()
                if created:
                    with contextlib.suppress(OSError):
                        self.run_dir.rmdir()  # only if the run left nothing in it

    def _run(self) -> int:
        if self.local:
            fresh = self._check_run_folder()
            self.work = Path(self.cfg.results_dir) / ".deploy" / self.cfg.run_name
            (self.work / "logs").mkdir(parents=True, exist_ok=True)
            if fresh:  # a new run: no node holds anything of it yet
                self._forget_node_state()
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="fedprune-deploy-")
            self.work = Path(self._tmp.name)
            (self.work / "logs").mkdir()
        self.supervisor = Supervisor(self.work / "logs", self._env)
        if self.opts.tls:  # fresh keys for every deployment
            self.keys = tls.local_keys(self.work / "tls", self.opts.nodes)
        try:
            address = self.opts.superlink or self._start_superlink()
            check_reachable(address)
            if self.local:
                for i in range(self.opts.nodes):
                    self._start_node(i, address)
                self._start_executors()
            status = self._run_app(address)
            if status == 0 and self.local:  # a finished run's node state is not needed again
                self._forget_node_state()
            return status
        finally:
            self.supervisor.stop()
            if self._tmp is not None:
                self._tmp.cleanup()

    def _check_run_folder(self) -> bool:
        """The run folder's obvious conflicts, before anything starts (the ServerApp checks
        again, as `run` does); True for a fresh start."""
        has = {name: (self.run_dir / name).exists() for name in ("summary.json", "checkpoint.pt")}
        if has["summary.json"] and not self.cfg.overwrite:
            raise DeployFailed(f"{self.run_dir} already holds a finished run; pass --overwrite "
                               f"to replace it, or choose another --run_name", 2)
        if has["checkpoint.pt"] and not (self.cfg.resume or self.cfg.overwrite):
            raise DeployFailed(f"{self.run_dir} holds an interrupted run; pass --resume to "
                               f"continue it or --overwrite to start again", 2)
        return self.cfg.overwrite or not has["checkpoint.pt"]

    def _forget_node_state(self) -> None:
        for i in range(self.opts.nodes):
            shutil.rmtree(self.node_dir(i) / self.cfg.run_name, ignore_errors=True)
            for name in ("worker.log", "worker.lock"):  # the node's worker (worker_link.py)
                (self.node_dir(i) / name).unlink(missing_ok=True)
            try:
                self.node_dir(i).rmdir()  # only if nothing else is kept there
            except OSError:
                pass

    def node_dir(self, index: int) -> Path:
        base = Path(self.opts.state_dir).expanduser().resolve() if self.opts.state_dir else (
            self.work)
        return base / f"node-{index}"

    # --- processes ----------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        bin_dir = str(Path(sys.executable).parent)  # flower-superexec is found on PATH
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env["FLWR_HOME"] = str(self.work / "flwr-home")
        env["PYTHONUNBUFFERED"] = "1"
        # Flower's SuperExec (the SuperLink's, starting the ServerApp; a subprocess-isolated
        # SuperNode's, starting each ClientApp) looks for tasks every 1 s by default
        env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2")
        env.update(self.owner_env)
        return env

    def _start_superlink(self) -> str:
        port = free_port()
        security = ["--insecure"]
        if self.keys:  # TLS, and only registered SuperNodes admitted
            security = ["--ssl-ca-certfile", str(self.keys["ca"]), "--ssl-certfile",
                        str(self.keys["cert"]), "--ssl-keyfile", str(self.keys["key"]),
                        "--enable-supernode-auth"]
        proc = self.supervisor.spawn("superlink", [
            tool("flower-superlink"), *security, "--host", "127.0.0.1", "--port", str(port),
            "--disable-runtime-dependency-installation"])
        deadline = time.monotonic() + START_LIMIT_SEC
        while not listening("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DeployFailed(f"the SuperLink did not start (exit status {proc.poll()}); "
                                   f"its log: {self.work / 'logs' / 'superlink.log'}"
                                   f"{tail(self.work / 'logs' / 'superlink.log')}", 2)
            time.sleep(0.1)
        return f"127.0.0.1:{port}"

    def _start_node(self, index: int, address: str) -> None:
        state = self.node_dir(index)
        state.mkdir(parents=True, exist_ok=True)
        config = {"node-index": index, "num-nodes": self.opts.nodes, "state-dir": str(state),
                  "data-root": self.cfg.data_root}
        if self.opts.kill_node and self.opts.kill_node[0] == index:
            config["pause-round"] = self.opts.kill_node[1]
        for key, value in config.items():
            if isinstance(value, str) and "'" in value:
                raise DeployFailed(f"{key}: {value!r} holds a ' (Flower's --node-config cannot "
                                   f"carry it); allowed: a path without '", 2)
        text = " ".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={v}"
                        for k, v in config.items())
        security = ["--insecure"]
        if self.keys:
            private, public = self.keys["nodes"][index]
            self._register(public, address)
            security = ["--root-certificates", str(self.keys["ca"]),
                        "--auth-supernode-private-key", str(private)]
        runtime = f"127.0.0.1:{free_port()}"  # the SuperNode's Runtime API
        self.supervisor.spawn(f"supernode-{index}", [
            tool("flower-supernode"), *security, "--superlink", address, "--isolation",
            self.opts.isolation, "--host", "127.0.0.1", "--port", runtime.split(":")[1],
            "--node-config", text])
        self.runtimes.append(runtime)

    def _start_executors(self) -> None:
        """With process isolation, the nodes' executors (executor.py): one process that imports
        torch and the suite once and forks an executor per SuperNode."""
        if self.opts.isolation == "process":
            self.executors = [sys.executable, "-m", "fedprune_core.deploy.executor"]
            for runtime in self.runtimes:
                self.executors += ["--runtime-api-address", runtime]
            self.supervisor.spawn("executors", self.executors)

    def _revive_executors(self) -> None:
        """The executors' process restarts a node's executor that died; if it died itself, it is
        started again: the clients' state is in the nodes' files, so their next tasks go on."""
        proc = self.supervisor.procs.get("executors")
        if proc is None or proc.poll() is None or not self.executors:
            return
        self.revived += 1
        if self.revived > REVIVE_LIMIT:  # it cannot start (a broken install): say so, stop
            raise DeployFailed(f"the nodes' executors keep exiting (status {proc.returncode}); "
                               f"their log: {self.work / 'logs' / 'executors.log'}"
                               f"{tail(self.work / 'logs' / 'executors.log')}")
        print(f"the nodes' executors exited (status {proc.returncode}); starting them "
              f"again", flush=True)
        self.supervisor.spawn("executors", self.executors)

    def _register(self, public_key: Path, address: str) -> None:
        """`flwr supernode register`: the SuperLink admits this key's SuperNode."""
        package.write_flower_config(self.work / "flwr-home", address, str(self.keys["ca"]))
        done = subprocess.run([tool("flwr"), "supernode", "register", str(public_key),
                               package.CONNECTION], env=self._env(), capture_output=True,
                              text=True, timeout=START_LIMIT_SEC)
        if done.returncode != 0 or "registered successfully" not in done.stdout:
            raise DeployFailed(f"the SuperLink did not register {public_key.name}: "
                               + " | ".join(plain(done.stdout + done.stderr).split("\n")[-4:]))

    @property
    def status_file(self) -> Path:
        return self.work / "outcome.json"

    def _run_app(self, address: str) -> int:
        """`flwr run --stream`: its output shown here (and in logs/flwr-run.log); the
        ServerApp's last line (and, here, its outcome file) says how the run ended."""
        package.write_flower_config(self.work / "flwr-home", address,
                                    str(self.keys["ca"]) if self.keys
                                    else self.opts.root_certificates)
        self.status_file.unlink(missing_ok=True)
        run_config = package.write_run_config(
            self.work / "run_config.toml", self.cfg.to_dict(), self.opts.nodes,
            self.opts.round_timeout, self.opts.node_wait, self.opts.crash_after_round,
            str(self.status_file) if self.local else "")
        argv = [tool("flwr"), "run", str(package.write_app(self.work)), package.CONNECTION,
                "--run-config", str(run_config), "--stream"]
        proc = self.supervisor.spawn("flwr-run", argv, piped=True)
        lines: queue.Queue = queue.Queue()

        def read() -> None:
            for raw in proc.stdout:
                lines.put(plain(raw.decode("utf-8", "replace").rstrip("\n")))
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        outcome, started, tail, killed = None, False, [], False
        watch = AppWatch(self.supervisor.procs.get("superlink"))
        with open(self.work / "logs" / "flwr-run.log", "a", encoding="utf-8") as copy:
            while True:
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line:
                    copy.write(line + "\n")
                    tail = (tail + [line])[-20:]
                    if line.startswith(RESULT_MARKER):
                        outcome = json.loads(line[len(RESULT_MARKER):])
                    elif outcome is None:  # after it: Flower's report of a failed ServerApp
                        print(line, flush=True)
                    if line.startswith("Successfully started run"):
                        started, self.run_id = True, line.split()[3]
                if not killed:
                    killed = self._fault_kill()
                self._revive_executors()
                link = self.supervisor.procs.get("superlink")
                if link is not None and link.poll() is not None:
                    raise DeployFailed(f"the SuperLink exited (status {link.returncode}) during "
                                       f"the run; its log: {self.work / 'logs' / 'superlink.log'}")
                if watch.ended() and (outcome is not None or not self.status_file.exists()
                                      or watch.ended_for() > STREAM_GRACE_SEC):
                    break  # the ServerApp is gone: dead (no outcome), or its log is all here
        if outcome is None and self.status_file.exists():
            outcome = json.loads(self.status_file.read_text())
        if outcome is not None:
            if outcome["exit"]:
                raise DeployFailed(outcome["error"], outcome["exit"])
            print(f"Run folder: {outcome['run_dir']}", flush=True)
            return 0
        if not started:
            hint = ("; a SuperLink with TLS needs its CA: --root_certificates CA.pem"
                    if self.opts.superlink and not self.opts.root_certificates else "")
            raise DeployFailed("flwr run could not start the app: " + " | ".join(tail[-5:])
                               + hint, 2)
        raise DeployFailed("the ServerApp stopped before the run finished; the last finished "
                           "round's checkpoint is kept: continue with --resume"
                           + (f" (logs: {self.work / 'logs'})" if self.local else ""))

    def _fault_kill(self) -> bool:
        """--kill_node: SIGKILL the node's processes once its client is paused mid-round."""
        if not self.opts.kill_node:
            return False
        index, round_idx = self.opts.kill_node
        paused = self.node_dir(index) / self.cfg.run_name
        if not any(paused.glob(f"paused-round-{round_idx}-client-*")):
            return False
        self.supervisor.kill_tree(f"supernode-{index}")  # its executor has no node now
        print(f"fault injection: SuperNode {index} killed (SIGKILL) in round {round_idx}",
              flush=True)
        return True


# --- helpers -----------------------------------------------------------------------------
def check_flower() -> None:
    if importlib.util.find_spec("flwr") is None or not Path(tool("flwr")).exists():
        raise DeployFailed("Flower is not installed in this environment; allowed: pip install "
                           "-e '.[flower]' (make deploy does it)", 2)


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def check_reachable(address: str) -> None:
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=10):
            pass
    except OSError as err:
        raise DeployFailed(f"superlink: cannot reach the SuperLink at {address} "
                           f"({err.strerror or err}); allowed: the HOST:PORT of a running "
                           f"SuperLink (flower-superlink --port), or leave --superlink out to "
                           f"start one here", 2) from None


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(text)) if text else ""
