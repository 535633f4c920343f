"""The deployment's processes on this machine: started in their own sessions, their whole
tree (Flower's processes start their own helpers: SuperExec, one ClientApp per message) stopped
by pid whatever happens, every child reaped. This process becomes the tree's subreaper, so
orphans (a SuperExec whose SuperNode died) still come back to it. Linux; elsewhere the /proc
parts are no-ops."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional

STOP_GRACE_SEC = 15.0  # SIGTERM, then SIGKILL for what is left


class Supervisor:
    """The processes started for one deployment, by name; `env()` gives each its environment
    and `logs` its log folder (one <name>.log each)."""

    def __init__(self, logs: Path, env: Callable[[], dict[str, str]]):
        self.logs, self.env = logs, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.others = set(descendants([os.getpid()]))  # children not started here
        become_subreaper()

    def spawn(self, name: str, argv: list[str], piped: bool = False) -> subprocess.Popen:
        """Start `name`; its output goes to logs/<name>.log without Flower's colour codes
        (a thread copies it line by line), or, `piped`, to the caller (proc.stdout)."""
        proc = subprocess.Popen(argv, env=self.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        if not piped:
            threading.Thread(target=_copy_plain, args=(proc.stdout, self.logs / f"{name}.log"),
                             daemon=True).start()
        self.procs[name] = proc
        return proc

    def kill_tree(self, name: str) -> None:
        """SIGKILL a process and everything under it, and wait for it (fault injection)."""
        proc = self.procs[name]
        for pid in descendants([proc.pid]) + [proc.pid]:
            send(pid, signal.SIGKILL)
        proc.wait()

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
        tree = set(descendants(roots) + roots)
        for pid in tree:
            send(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SEC
        while tree and time.monotonic() < deadline:
            time.sleep(0.1)
            reap()
            live = parents()  # adopted orphans are this process's children now
            tree = {pid for pid in tree if pid in live} | (
                set(descendants([os.getpid()])) - self.others)
        # what is left, and every zombie: orphans come to this process as their parents die
        deadline = time.monotonic() + STOP_GRACE_SEC
        while True:
            for pid in tree:
                send(pid, signal.SIGKILL)
            reap()
            tree = set(descendants([os.getpid()], zombies=True)) - self.others
            if not tree or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for proc in self.procs.values():
            proc.wait()


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour and cursor codes (Flower colours its logs)


def plain(line: str) -> str:
    return ANSI.sub("", line)


def _copy_plain(stream, path: Path) -> None:
    with open(path, "a", encoding="utf-8") as log:
        for raw in stream:
            log.write(plain(raw.decode("utf-8", "replace")))
            log.flush()


def become_subreaper() -> None:
    """Orphaned descendants (a SuperExec whose SuperNode died) become this process's children,
    so that stop() still finds and reaps them (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def parents(zombies: bool = False) -> dict[int, int]:
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


def descendants(roots: list[int], zombies: bool = False) -> list[int]:
    parent_of = parents(zombies)
    found, frontier = [], set(roots)
    while frontier:
        children = [pid for pid, ppid in parent_of.items() if ppid in frontier
                     and pid not in found and pid not in roots]
        found.extend(children)
        frontier = set(children)
    return found


class AppWatch:
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
            for pid in descendants([self.superlink.pid]):
                if "flwr-serverapp" in cmdline(pid):
                    self.seen = pid
        elif self.seen not in parents():
            self.gone_at = now
        return self.gone_at is not None

    def ended_for(self) -> float:
        return time.monotonic() - self.gone_at


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


def send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap() -> None:
    """Collect exited children (adopted orphans included), so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
