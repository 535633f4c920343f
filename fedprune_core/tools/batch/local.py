"""The local back end: JOBS `run-one` processes at once on this machine, with a progress bar.

A thread per slot only waits on its `run-one` process: papermill itself is not safe to drive
from threads.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .summary import first_line
from .unit import launch_unit


class Progress:
    """A tqdm bar over units (postfix done/failed/running) and a line per settled unit."""

    def __init__(self, total: int, pending: int, slots: int, desc: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True)
        self.pending, self.slots, self.done, self.failed = pending, slots, 0, 0

    def update(self, record: dict, ran: bool = True) -> dict:
        self.pending -= ran
        self.failed += record["status"] == "failed"
        self.done += record["status"] != "failed"
        error = f": {first_line(record['error'])}" if record["error"] else ""
        self.bar.write(f"  {record['run_name']}: {record['status']} ({record['seconds']} s)"
                       f"{error}", file=sys.stderr)
        self.bar.set_postfix(done=self.done, failed=self.failed,
                             running=min(self.slots, self.pending), refresh=False)
        self.bar.update(1)
        return record


def run_local(grid: Path, units: list[dict], jobs: int, force: bool, progress) -> list[dict]:
    """JOBS `run-one` processes at once; a failed unit is retried once, as on Dask."""
    stop = threading.Event()  # after Ctrl-C: no retries, no new units

    def one(unit):
        record = launch_unit(grid, unit["index"], force)
        if record["status"] == "failed" and record["retry"] and not stop.is_set():
            record = launch_unit(grid, unit["index"], force)
        return record

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, unit) for unit in units]
        try:
            return [progress.update(future.result()) for future in as_completed(futures)]
        except KeyboardInterrupt:  # the units got the same SIGINT from the terminal
            stop.set()
            pool.shutdown(cancel_futures=True)
            raise

