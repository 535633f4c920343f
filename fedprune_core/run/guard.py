"""What keeps a run folder safe while a process works in it: a lock, and SIGTERM as Ctrl-C.

The lock is an OS file lock (`flock`) on `<run folder>/.lock`: the kernel drops it when the
holder exits, however it exits (kill -9 included), so a stale lock never blocks a rerun. The
file holds the holder's pid, which the error of a second process names.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Iterator, Optional

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected from each other
    fcntl = None  # type: ignore[assignment]

from .artifacts import RunExistsError

LOCK = ".lock"


class RunLockedError(RunExistsError):
    """Another live process is working in the run folder."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, Dask and `kill` send), handled like Ctrl-C: the run stops after
    logging where it stopped, and the last finished round's checkpoint is kept."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


def lock_run_dir(run_dir: Path) -> RunLock:
    """Lock `run_dir` (created if missing), or raise RunLockedError naming the holder's pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    if fcntl is None:
        return RunLock(path, None)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{run_dir} is in use by another process (pid {holder}); wait for it to end "
                f"or stop it, or choose another run_name") from None
        if _same_file(fd, path):  # not a lock file its last holder has just removed
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(path, fd)


def probe_run_dir(run_dir: Path) -> None:
    """Raise RunLockedError if a process holds `run_dir`'s lock; take nothing, create nothing."""
    path = run_dir / LOCK
    if fcntl is None or not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLockedError(f"{run_dir} is in use by another process (pid {_holder(fd)}); "
                             f"wait for it to end or stop it, or choose another run_name") \
            from None
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        if text:
            return str(int(text))
    return "unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
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
    from .artifacts import remove_stub

    created = not run_dir.exists()
    lock = lock_run_dir(run_dir)
    try:
        with sigterm_as_interrupt():
            yield
    except BaseException:
        remove_stub(run_dir)
        raise
    finally:
        lock.release()
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something to keep
                run_dir.rmdir()
