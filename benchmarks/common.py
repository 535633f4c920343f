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


def timed(argv: list[str], cwd: Path, env: dict) -> dict:
    """Wall, CPU and peak RSS of one command run to its end in a fresh process (os.wait4: the
    child's own rusage; CPU includes the descendants it waited for, the peak RSS is the
    child's alone)."""
    import subprocess

    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): "
                           f"{err.decode(errors='replace')[-2000:]}")
    return {"wall_sec": wall, "cpu_sec": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024.0}


def alternate(commands, pairs: int, env: dict) -> dict:
    """Two commands side by side: `commands()` gives {side: (argv, cwd)} afresh for each run
    (a new run name each time); `pairs` alternated pairs, A then B, then B then A, so a drift
    of the machine's speed falls on both. Per side the median of each measure, and its runs."""
    import statistics

    runs: dict[str, list[dict]] = {}
    for k in range(pairs):
        sides = list(commands())
        for side in (sides if k % 2 == 0 else sides[::-1]):
            argv, cwd = commands()[side]
            runs.setdefault(side, []).append(timed(argv, cwd, env))
    row = {side: {m: statistics.median(r[m] for r in rs) for m in rs[0]}
           for side, rs in runs.items()}
    row["runs"] = runs
    return row
