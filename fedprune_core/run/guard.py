"""What keeps a run folder safe while a process works in it: a lock, and SIGTERM as Ctrl-C.

The lock is an OS file lock (`flock`) on `<run folder>/.lock`: the kernel drops it when the
holder exits, however it exits (kill -9 included), so a stale lock never blocks a rerun. The
file holds the holder's pid, which the error of a second process names. It is never opened
through a symbolic link (one planted there would make a run write its pid into another file).

A process that holds the lock for a child doing the run (the notebook runner for papermill's
kernel) sets OWNER_ENV to its pid: the child, finding the lock held by exactly that pid, and
that pid its ancestor, works under its ancestor's lock instead of taking its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
from pathlib import Path
from typing import Iterator, Optional

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected from each other
    fcntl = None  # type: ignore[assignment]

from ..errors import ConfigError, RunExistsError, Terminated
from .artifacts import remove_stub

LOCK = ".lock"
OWNER_ENV = "FEDPRUNE_RUN_LOCK_OWNER"


class RunLockedError(RunExistsError):
    """Another live process is working in the run folder."""


class UnsafeLockError(RunLockedError):
    """The lock file is not a plain file (a symbolic link, a folder, a device)."""


class RunLock:
    """An exclusive lock on a run folder; `release()` (or process exit) gives it up."""

    def __init__(self, path: Path, fd: Optional[int]):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is None:
            return
        # Unlinked while still held: a process that opened the old file re-checks the inode.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


def lock_run_dir(run_dir: Path, name_param: str = "run_name") -> RunLock:
    """Lock `run_dir` (created if missing), or raise RunLockedError naming the holder's pid
    (`name_param`: the parameter to change for another folder). Under an ancestor's lock
    (OWNER_ENV, module doc) it returns a lock that holds and releases nothing."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file (or a dangling link) where the folder would be
        raise ConfigError(f"{name_param}: {run_dir} is not a folder; allowed: a run folder "
                          f"(choose another {name_param})") from None
    path = run_dir / LOCK
    if fcntl is None:
        return RunLock(path, None)
    while True:
        fd = _open_lock(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if _held_by_ancestor(holder):
                return RunLock(path, None)
            raise RunLockedError(
                f"{run_dir} is in use by another process (pid {holder}); wait for it to end "
                f"or stop it; allowed: another {name_param}") from None
        if _same_file(fd, path):  # not a lock file its last holder has just removed
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(path, fd)


def probe_run_dir(run_dir: Path) -> None:
    """Raise RunLockedError if a process holds `run_dir`'s lock; take nothing, create nothing."""
    path = run_dir / LOCK
    if fcntl is None or not os.path.lexists(path):
        return
    fd = _open_lock(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        if not _held_by_ancestor(holder):
            raise RunLockedError(f"{run_dir} is in use by another process (pid {holder}); "
                                 f"wait for it to end or stop it; allowed: another run_name") \
                from None
    finally:
        os.close(fd)


def _open_lock(path: Path, flags: int) -> int:
    """The lock file's descriptor, never through a link (O_NOFOLLOW), and only of a plain file:
    anything else there is an error naming it, not a pid written into someone else's file."""
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the open
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        what = "a symbolic link" if os.path.islink(path) else f"not usable ({err.strerror})"
        raise UnsafeLockError(f"{path} is {what}; allowed: a plain lock file (remove it, "
                              f"after checking what it is)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeLockError(f"{path} is not a plain file; allowed: a plain lock file (remove "
                              f"it, after checking what it is)")
    return fd


def _held_by_ancestor(holder: str) -> bool:
    """Whether the lock's holder is the process that set OWNER_ENV for us, an ancestor of this
    process (not this process: a second lock in one process is a second user)."""
    owner = os.environ.get(OWNER_ENV)
    if not owner or owner != holder or not holder.isdigit():
        return False
    return int(holder) in _ancestors()


def _ancestors() -> set[int]:
    """The pids above this process, up to init (Linux /proc; else the parent alone)."""
    pids, pid = set(), os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                # pid (comm) state ppid ...; comm may hold spaces and parentheses
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        if text:
            return str(int(text))
    return "unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.lstat(path).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def claimed(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for one run: locked, SIGTERM as Ctrl-C, and no stub left on failure.

    A run that fails before it wrote its config leaves nothing behind (its run.log goes, and
    the folder too if this call created it), so a rerun under the same name is not blocked.
    """
    created = not run_dir.exists()
    lock = lock_run_dir(run_dir)
    try:
        with sigterm_as_interrupt():
            yield
    except RunExistsError:  # refused before writing anything: what is there is not ours
        raise
    except BaseException:
        remove_stub(run_dir)
        raise
    finally:
        lock.release()
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something to keep
                run_dir.rmdir()
