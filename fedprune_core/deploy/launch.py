"""`python -m fedprune_core deploy`: one experiment on a Flower deployment (Beutel et al. 2020).

By default everything runs on this machine, each part its own process as on real machines: a
SuperLink on 127.0.0.1, `--nodes` SuperNodes (node i hosts the clients {cid : cid % N == i}),
then `flwr run` submits the app (server_app.py / client_app.py) with the experiment's parameters
and streams the ServerApp's log here. Ports are picked free at start. Whatever happens (a
finished run, an error, Ctrl-C, SIGTERM), every process started here is stopped before the
command returns: the Flower processes start their own helpers (SuperExec, one ClientApp per
message), so this process becomes their subreaper and stops the whole tree by pid.

With `--superlink HOST:PORT` nothing is started here: the app is submitted to that SuperLink,
whose SuperNodes run elsewhere (README: "On real machines").

This module needs neither flwr nor torch to be imported (the CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import ConfigError

DEFAULT_NODES = 4
APP_NAME = "fedprune-sparse"
CONNECTION = "fedprune"  # the SuperLink connection's name in the Flower config this writes
RESULT_MARKER = "FEDPRUNE-DEPLOY-RESULT "  # server_app.RESULT_MARKER (not imported: flwr)
STOP_GRACE_SEC = 15.0  # SIGTERM, then SIGKILL for what is left
STREAM_GRACE_SEC = 60.0  # for the log of a ServerApp that ended cleanly to arrive
START_LIMIT_SEC = 300.0  # for the SuperLink to listen (a safety limit, not a timing)
DATA_ROOT_ENV = "FEDPRUNE_DATA_ROOT"  # data.loading.resolve_data_root (not imported: torch)


class DeployFailed(Exception):
    """A one-line error (`error: ...`) and the exit status the command returns."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def add_deploy_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("deployment (Flower SuperLink and SuperNodes)")
    group.add_argument("--nodes", type=int, default=DEFAULT_NODES, metavar="N",
                       help="SuperNodes; node i hosts the clients whose id %% N == i.")
    group.add_argument("--superlink", metavar="HOST:PORT",
                       help="Submit to this running SuperLink (its SuperNodes run elsewhere, "
                            "started with node-index/num-nodes) instead of starting one and the "
                            "nodes here.")
    group.add_argument("--root_certificates", metavar="CA.pem",
                       help="With --superlink: the CA certificate of its TLS (without it the "
                            "connection is insecure).")
    group.add_argument("--state_dir", metavar="DIR",
                       help="Where the local SuperNodes keep their clients' residuals and "
                            "ratios (DIR/node-i); default: RESULTS_DIR/.deploy/RUN_NAME.")
    group.add_argument("--round_timeout", type=float, default=3600.0, metavar="SEC",
                       help="Replies not in this many seconds after a round's broadcast count as "
                            "missing (a round with none fails); 0 = wait for every reply or for "
                            "Flower to declare its node gone.")
    group.add_argument("--node_wait", type=float, default=600.0, metavar="SEC",
                       help="How long the server waits for every SuperNode before round 1.")
    group.add_argument("--kill_node", metavar="INDEX:ROUND",
                       help="Fault injection: SIGKILL SuperNode INDEX while its first client of "
                            "round ROUND trains.")
    group.add_argument("--crash_after_round", type=int, default=0, metavar="ROUND",
                       help="Fault injection: the ServerApp dies once round ROUND's replies are "
                            "in, before aggregating or saving it (then rerun with --resume).")


@dataclass(frozen=True)
class Options:
    nodes: int
    superlink: Optional[str]
    root_certificates: Optional[str]
    state_dir: Optional[str]
    round_timeout: float
    node_wait: float
    kill_node: Optional[tuple[int, int]]
    crash_after_round: int

    @classmethod
    def from_args(cls, args) -> "Options":
        def bad(name: str, value, allowed: str) -> ConfigError:
            return ConfigError(f"{name}: {value!r} is not allowed; allowed: {allowed}")

        if args.nodes < 1:
            raise bad("nodes", args.nodes, "an int >= 1")
        for name in ("round_timeout", "node_wait"):
            value = getattr(args, name)
            if not (value >= 0 and value < float("inf")):
                raise bad(name, value, "seconds >= 0")
        if args.superlink is not None and not _parse_address(args.superlink):
            raise bad("superlink", args.superlink, "HOST:PORT")
        kill = None
        if args.kill_node:
            match = re.fullmatch(r"(\d+):(\d+)", args.kill_node)
            if not match or int(match[1]) >= args.nodes or int(match[2]) < 1:
                raise bad("kill_node", args.kill_node, f"INDEX:ROUND with INDEX < {args.nodes}")
            kill = (int(match[1]), int(match[2]))
        if args.superlink and (kill or args.state_dir):
            raise ConfigError("kill_node, state_dir: only for the nodes this command starts "
                              "(not with --superlink)")
        if args.root_certificates and not args.superlink:
            raise ConfigError("root_certificates: only with --superlink (the local SuperLink "
                              "runs on 127.0.0.1 without TLS)")
        if args.crash_after_round < 0:
            raise bad("crash_after_round", args.crash_after_round, "a round >= 1 (0: off)")
        return cls(args.nodes, args.superlink, args.root_certificates, args.state_dir,
                   args.round_timeout, args.node_wait, kill, args.crash_after_round)


def cmd_deploy(args) -> int:
    from ..cli import config_from_args, interrupted

    cfg = config_from_args(args)  # validated before anything starts
    opts = Options.from_args(args)
    try:
        _check_flower()
    except DeployFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    if cfg.run_name is None:
        import datetime as dt

        cfg = cfg.replace(run_name=dt.datetime.now().strftime("run_%Y%m%d_%H%M%S"))
    if opts.superlink is None:  # the ServerApp runs here: paths as this shell means them
        from ..checks import check_results_dir

        root = cfg.data_root or os.environ.get(DATA_ROOT_ENV) or "./data"
        cfg = cfg.replace(results_dir=str(Path(cfg.results_dir).expanduser().resolve()),
                          data_root=str(Path(root).expanduser().resolve()))
        check_results_dir(cfg.results_dir)
    previous = signal.signal(signal.SIGTERM, _terminate)
    deployment = Deployment(cfg, opts)
    try:
        return deployment.run()
    except DeployFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt as err:  # every process started here is stopped by now
        if opts.superlink is None:
            return interrupted(err, Path(cfg.results_dir) / cfg.run_name)
        print(f"interrupted: no longer following run {deployment.run_id or '(not started)'}, "
              f"which goes on at the SuperLink {opts.superlink} (`flwr stop` stops it)",
              file=sys.stderr)
        return 128 + (err.signum if isinstance(err, Terminated) else 2)
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, stopped like Ctrl-C (cli.interrupted reads its name and signum)."""

    signum = signal.SIGTERM


def _terminate(signum, frame):
    raise Terminated


class Deployment:
    def __init__(self, cfg, opts: Options):
        self.cfg, self.opts = cfg, opts
        self.local = opts.superlink is None
        self.run_dir = Path(cfg.results_dir) / cfg.run_name
        self.procs: dict[str, subprocess.Popen] = {}
        self.others = set(_descendants([os.getpid()]))  # children not started here
        self.work: Optional[Path] = None
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self.owner_env: dict[str, str] = {}
        self.run_id: Optional[str] = None  # Flower's, once `flwr run` has started it

    # --- the whole command ------------------------------------------------------------------
    def run(self) -> int:
        lock, created = None, not self.run_dir.exists()
        if self.local:
            # the run folder's lock, held for the ServerApp (our descendant: run.guard), so a
            # second deploy of this run cannot wipe the node state of the first
            from ..run.guard import OWNER_ENV, lock_run_dir

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
        _become_subreaper()
        try:
            address = self.opts.superlink or self._start_superlink()
            _check_reachable(address)
            if self.local:
                for i in range(self.opts.nodes):
                    self._start_node(i, address)
            status = self._run_app(address)
            if status == 0 and self.local:  # a finished run's node state is not needed again
                self._forget_node_state()
            return status
        finally:
            self.stop()
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
        env.update(self.owner_env)
        return env

    def _spawn(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        log = open(self.work / "logs" / f"{name}.log", "ab")
        try:
            proc = subprocess.Popen(argv, env=self._env(), stdin=subprocess.DEVNULL,
                                    stdout=kwargs.pop("stdout", log), stderr=subprocess.STDOUT,
                                    start_new_session=True, **kwargs)
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def _start_superlink(self) -> str:
        port = _free_port()
        proc = self._spawn("superlink", [_tool("flower-superlink"), "--insecure", "--host",
                                         "127.0.0.1", "--port", str(port),
                                         "--disable-runtime-dependency-installation"])
        deadline = time.monotonic() + START_LIMIT_SEC
        while not _listening("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DeployFailed(f"the SuperLink did not start (exit status {proc.poll()}); "
                                   f"its log: {self.work / 'logs' / 'superlink.log'}"
                                   f"{_tail(self.work / 'logs' / 'superlink.log')}", 2)
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
        self._spawn(f"supernode-{index}", [
            _tool("flower-supernode"), "--insecure", "--superlink", address, "--host",
            "127.0.0.1", "--port", str(_free_port()), "--node-config", text])

    def _write_flower_config(self, address: str) -> None:
        """FLWR_HOME/config.toml naming the SuperLink connection `flwr run` uses."""
        import tomli_w

        home = self.work / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        connection = {"address": address}
        if self.opts.root_certificates:
            connection["root-certificates"] = str(Path(self.opts.root_certificates).resolve())
        else:
            connection["insecure"] = True
        (home / "config.toml").write_text(tomli_w.dumps(
            {"superlink": {"default": CONNECTION, CONNECTION: connection}}))

    def _write_app(self) -> Path:
        """The Flower app: its pyproject names the components (installed with this package,
        so server and nodes run the same code) and the run config's keys."""
        from .. import __version__

        app = self.work / "app"
        app.mkdir(parents=True, exist_ok=True)
        (app / "pyproject.toml").write_text(APP_PYPROJECT.format(name=APP_NAME,
                                                                 version=__version__))
        return app

    def _write_run_config(self) -> Path:
        import tomli_w

        path = self.work / "run_config.toml"
        path.write_text(tomli_w.dumps({
            "experiment": json.dumps(self.cfg.to_dict()), "num-nodes": self.opts.nodes,
            "round-timeout": float(self.opts.round_timeout),
            "node-wait": float(self.opts.node_wait),
            "crash-round": int(self.opts.crash_after_round),
            "status-file": str(self.status_file) if self.local else ""}))
        return path

    @property
    def status_file(self) -> Path:
        return self.work / "outcome.json"

    def _run_app(self, address: str) -> int:
        """`flwr run --stream`: its output shown here (and in logs/flwr-run.log); the
        ServerApp's last line (and, here, its outcome file) says how the run ended."""
        self._write_flower_config(address)
        self.status_file.unlink(missing_ok=True)
        argv = [_tool("flwr"), "run", str(self._write_app()), CONNECTION, "--run-config",
                str(self._write_run_config()), "--stream"]
        proc = self._spawn("flwr-run", argv, stdout=subprocess.PIPE)
        lines: queue.Queue = queue.Queue()

        def read() -> None:
            for raw in proc.stdout:
                lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        outcome, started, tail, killed = None, False, [], False
        watch = _AppWatch(self.procs.get("superlink"))
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
                link = self.procs.get("superlink")
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
            raise DeployFailed("flwr run could not start the app: " + " | ".join(tail[-5:]), 2)
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
        proc = self.procs[f"supernode-{index}"]
        for pid in _descendants([proc.pid]) + [proc.pid]:
            _signal(pid, signal.SIGKILL)
        proc.wait()
        print(f"fault injection: SuperNode {index} killed (SIGKILL) in round {round_idx}",
              flush=True)
        return True

    def stop(self) -> None:
        """SIGTERM to every process started here and to their descendants (by pid); SIGKILL to
        what is left after STOP_GRACE_SEC; every child reaped. A second Ctrl-C cannot cut it
        short (it would leave processes behind)."""
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self) -> None:
        roots = [p.pid for p in self.procs.values() if p.poll() is None]
        tree = set(_descendants(roots) + roots)
        for pid in tree:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SEC
        while tree and time.monotonic() < deadline:
            time.sleep(0.1)
            _reap()
            live = _parents()  # adopted orphans are this process's children now
            tree = {pid for pid in tree if pid in live} | (
                set(_descendants([os.getpid()])) - self.others)
        # what is left, and every zombie: orphans come to this process as their parents die
        deadline = time.monotonic() + STOP_GRACE_SEC
        while True:
            for pid in tree:
                _signal(pid, signal.SIGKILL)
            _reap()
            tree = set(_descendants([os.getpid()], zombies=True)) - self.others
            if not tree or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for proc in self.procs.values():
            proc.wait()


APP_PYPROJECT = """\
# Written by `python -m fedprune_core deploy` (fedprune_core/deploy/launch.py).
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "FedPrune-Sparse on a Flower deployment: the suite's ServerApp and ClientApp"
license = "MIT"
dependencies = ["{name}[flower]=={version}"]

[tool.flwr.app]
publisher = "fedprune"

[tool.flwr.app.components]
serverapp = "fedprune_core.deploy.server_app:app"
clientapp = "fedprune_core.deploy.client_app:app"

[tool.flwr.app.config]
experiment = "{{}}"
num-nodes = 1
round-timeout = 3600.0
node-wait = 600.0
crash-round = 0
status-file = ""
"""


# --- helpers -------------------------------------------------------------------------------
def _check_flower() -> None:
    import importlib.util

    if importlib.util.find_spec("flwr") is None or not Path(_tool("flwr")).exists():
        raise DeployFailed("Flower is not installed in this environment; allowed: pip install "
                           "-e '.[flower]' (make deploy does it)", 2)


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _parse_address(text: str) -> Optional[tuple[str, int]]:
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", text.strip())
    if not match or not 0 < int(match[2]) < 65536:
        return None
    return match[1], int(match[2])


def _check_reachable(address: str) -> None:
    host, port = _parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=10):
            pass
    except OSError as err:
        raise DeployFailed(f"superlink: cannot reach the SuperLink at {address} "
                           f"({err.strerror or err}); allowed: the HOST:PORT of a running "
                           f"SuperLink (flower-superlink --port), or leave --superlink out to "
                           f"start one here", 2) from None


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (": " + " | ".join(text)) if text else ""


def _become_subreaper() -> None:
    """Orphaned descendants (a SuperExec whose SuperNode died) become this process's children,
    so that stop() still finds and reaps them (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _parents(zombies: bool = False) -> dict[int, int]:
    """pid -> parent pid of every process (Linux /proc; empty elsewhere); zombies (exited, not
    yet reaped) only if asked."""
    out = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields and (zombies or fields[0] != "Z"):
            out[int(entry.name)] = int(fields[1])
    return out


def _descendants(roots: list[int], zombies: bool = False) -> list[int]:
    parents = _parents(zombies)
    found, frontier = [], set(roots)
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier
                     and pid not in found and pid not in roots]
        found.extend(children)
        frontier = set(children)
    return found


class _AppWatch:
    """Whether the ServerApp process (flwr-serverapp, under the local SuperLink) has come and
    gone: a dead ServerApp's log stream only ends when Flower gives up on it."""

    def __init__(self, superlink: Optional[subprocess.Popen]):
        self.superlink, self.seen, self.gone_at, self.next_look = superlink, None, None, 0.0

    def ended(self) -> bool:
        if self.superlink is None or self.gone_at is not None:
            return self.gone_at is not None
        now = time.monotonic()
        if now < self.next_look:
            return False
        self.next_look = now + 1.0
        if self.seen is None:
            for pid in _descendants([self.superlink.pid]):
                if "flwr-serverapp" in _cmdline(pid):
                    self.seen = pid
        elif self.seen not in _parents():
            self.gone_at = now
        return self.gone_at is not None

    def ended_for(self) -> float:
        return time.monotonic() - self.gone_at


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap() -> None:
    """Collect exited children (adopted orphans included), so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
