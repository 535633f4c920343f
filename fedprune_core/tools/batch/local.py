"""The local back end: JOBS `run-one` processes at once on this machine, with a live status
(status.py).

A thread per slot only waits on its `run-one` process: papermill itself is not safe to drive
from threads. The main thread polls the status between settled units.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from .unit import launch_unit


def run_local(grid: Path, units: list[dict], jobs: int, force: bool, progress) -> list[dict]:
    """JOBS `run-one` processes at once; a failed unit is retried once, as on Dask."""
    stop = threading.Event()  # after Ctrl-C: no retries, no new units

    def one(unit):
        record = launch_unit(grid, unit["index"], force)
        if record["status"] == "failed" and record["retry"] and not stop.is_set():
            record = launch_unit(grid, unit["index"], force)
        return record

    # The pool takes units in order, the next as soon as one settles: the status follows it
    # here, in the main thread, so every line counts the same units running as the pool does.
    queue = iter(units)
    for unit in itertools.islice(queue, jobs):
        progress.start(unit["index"])
    records = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending = {pool.submit(one, unit) for unit in units}
        try:
            while pending:
                done, pending = wait(pending, timeout=progress.interval,
                                     return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: f.result()["unit"]):
                    following = next(queue, None)
                    if following is not None:
                        progress.start(following["index"])
                    records.append(progress.settle(future.result()))
                progress.poll()
            return records
        except KeyboardInterrupt:  # the units got the same SIGINT from the terminal
            stop.set()
            pool.shutdown(cancel_futures=True)
            raise
