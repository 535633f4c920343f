"""A busy machine: the default run beside CPU-bound processes, against its fair share.

Linux's scheduler shares the cores between runnable threads: beside `hogs` single-thread
CPU-bound processes, a run of T threads on C cores gets about C * T / (T + hogs) cores (at most
the min(T, C) it uses alone), so its fair time is its quiet time scaled by what it lost. A run
whose threads wait for each other at every operation (OpenMP's barriers: the sequential engine
on 2 intra-op threads) loses far more than that when one of its threads is descheduled; the
parallel engine's one-thread workers never wait for each other.
"""

from __future__ import annotations

import subprocess
import sys

import scale
from common import available_cores

HOG = "while True: pass"


def fair_share_sec(quiet_sec: float, threads: int, cores: int, hogs: int) -> float:
    """The run's quiet time at its fair share of the busy machine (module doc)."""
    alone = min(threads, cores)
    busy = min(alone, cores * threads / (threads + hogs))
    return quiet_sec * alone / busy


def run(changes: dict, threads: int, hogs: int = 2) -> dict:
    """Each engine's run (`changes` to the default configuration) alone, then beside `hogs`
    CPU-bound processes: wall seconds and the busy time over the fair share."""
    from fedprune_core.config import ExperimentConfig

    cores, runs = available_cores(), {}
    for engine in ("parallel", "sequential"):
        cfg = ExperimentConfig(**changes, engine=engine, num_threads=threads,
                               run_name=f"busy_{engine}")
        quiet = scale.run_experiment(cfg, threads)["wall_sec"]
        procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
        try:
            busy = scale.run_experiment(cfg.replace(run_name=f"busy_{engine}_beside_hogs"),
                                        threads)["wall_sec"]
        finally:
            for p in procs:
                p.kill()
                p.wait()
        fair = fair_share_sec(quiet, threads, cores, hogs)
        runs[engine] = {"quiet_sec": quiet, "busy_sec": busy, "fair_share_sec": fair,
                        "over_fair_share_x": busy / fair}
    return {"hogs": hogs, "threads": threads, "cores": cores, "runs": runs}
