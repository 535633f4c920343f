"""The Dask back end: units as Dask tasks on `$DASK_SCHEDULER` (tcp://host:port) if set, else
a LocalCluster of JOBS one-thread worker processes.

To grow past one machine, start the scheduler and workers elsewhere, e.g. with dask-jobqueue on
a batch system: `SLURMCluster(cores=2, memory="8GB", walltime="04:00:00").scale(jobs=20)` (or
PBSCluster), then point `$DASK_SCHEDULER` at its scheduler address. Workers need this package
installed and the same filesystem path to the grid and results folder.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ...config import ConfigError
from .grid import load_record, new_record, save_record
from .unit import UnitFailed, launch_unit


def dask_unit(grid: str, index: int, force: bool) -> dict:
    """The Dask task: raising lets Dask retry the unit (retries=1) on any worker."""
    import dask

    # The nanny's settings for its workers are not the unit's: its MALLOC_TRIM_THRESHOLD_
    # made torch's allocations spend 4x the system time (measured), and num_threads sets threads.
    unset = dask.config.get("distributed.nanny.pre-spawn-environ", {})
    record = launch_unit(Path(grid), index, force, unset=tuple(unset))
    if record["status"] == "failed" and record["retry"]:
        raise UnitFailed(record["error"])
    return record


def run_dask(grid: Path, units: list[dict], jobs: int, force: bool, progress) -> list[dict]:
    """Units as Dask tasks (retries=1), on $DASK_SCHEDULER or a LocalCluster of JOBS workers.
    Which units run is seen from their records (progress.watch_records): a worker's task is
    not visible from here."""
    try:
        from distributed import Client, LocalCluster, wait
    except ImportError as err:
        raise ConfigError(f"--backend dask needs the [dask] extra (pip install -e '.[dask]'): "
                          f"{err}") from None

    with contextlib.ExitStack() as stack:
        address = os.environ.get("DASK_SCHEDULER")
        if address:
            client = stack.enter_context(Client(address))
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=jobs, threads_per_worker=1,
                                                       processes=True))
            client = stack.enter_context(Client(cluster))
        progress.slots = max(1, sum(client.nthreads().values()))
        progress.watch_records()
        progress.write(f"dask: {client.scheduler.address}, dashboard {client.dashboard_link}")
        futures = {client.submit(dask_unit, str(grid), unit["index"], force, retries=1,
                                 pure=False): unit for unit in units}
        records, pending = [], set(futures)
        while pending:
            with contextlib.suppress(TimeoutError):  # none settled: poll the status
                wait(list(pending), timeout=progress.interval, return_when="FIRST_COMPLETED")
            done = sorted((f for f in pending if f.done()), key=lambda f: futures[f]["index"])
            for future in done:
                pending.discard(future)
                records.append(progress.settle(_outcome(grid, futures[future], future)))
            progress.poll()
        return records


def _outcome(grid: Path, unit: dict, future) -> dict:
    """The unit's record from its settled task, also when the task itself failed."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as err:  # its worker died (e.g. out of memory) too often
        return save_record(grid, new_record(grid, unit, "failed", error=f"KilledWorker: {err}"))
    except Exception as err:  # UnitFailed after the retry: its record says why
        record = load_record(grid, unit["index"])
        if record is None or record["status"] != "failed":
            error = f"{type(err).__name__}: {err}"
            record = save_record(grid, new_record(grid, unit, "failed", error=error))
        return record
