"""Helpers the benchmarks share: best-of timing, peak memory, the load average, and running a
function in a fresh process (so its time includes start-up and its peak memory is its own)."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path


def measure(fn, repeats: int, warmup: int = 1) -> dict:
    """The fastest of `repeats` calls: wall seconds, process CPU seconds (user + sys, all
    threads) and minor page faults of that call."""
    for _ in range(warmup):
        fn()
    best = None
    for _ in range(repeats):
        r0, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        wall, r1 = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        if best is None or wall < best["wall_sec"]:
            best = {"wall_sec": wall,
                    "cpu_sec": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime,
                    "sys_sec": r1.ru_stime - r0.ru_stime,
                    "minor_faults": r1.ru_minflt - r0.ru_minflt}
    return best


def peak_rss_mb() -> float:
    """This process's peak resident memory. /proc's VmHWM first: ru_maxrss of a spawned child
    is at least its parent's peak (Linux carries it across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    scale = 1024.0 if sys.platform != "darwin" else 1024.0 ** 2  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def load_avg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def result_of(queue, procs, what: str, timeout: float = 3600.0):
    """The next result on `queue`; fails fast when the worker processes died instead."""
    import queue as queue_mod

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=1.0)
        except queue_mod.Empty:
            if all(p.exitcode is not None for p in procs):
                break
    raise RuntimeError(f"{what}: the worker process failed (exit codes "
                       f"{[p.exitcode for p in procs]}); see its traceback above")


def in_process(target, args: tuple, what: str):
    """target(*args, queue) in a fresh (spawned) process; its one result."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    try:
        return result_of(queue, [proc], what)
    finally:
        proc.join()
