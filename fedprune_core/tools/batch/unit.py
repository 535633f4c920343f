"""One unit: `batch run-one` runs it in its own process (what every back end calls), and
`launch_unit` starts that process and reads back its record, also when it died.

Exit status of `run-one`: 0 finished or skipped; 1 failed, a retry may help; 2 failed for good
(a ConfigError, or a run folder another run holds).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from ...config import ConfigError, ExperimentConfig
from ...errors import exit_status, status_of_name
from .grid import load_record, log_path, new_record, read_grid, save_record, settled

# notebook.REPO_ROOT, not imported from there: papermill is only needed where a unit runs.
REPO_ROOT = Path(__file__).resolve().parents[3]
# Test hook: a unit whose run_name names a file in this folder fails as many tries as the file
# says (empty: one), so tests can check that failures are retried, and resubmitted.
FAIL_ENV = "FEDPRUNE_BATCH_FAIL"
PARENT_ENV = "FEDPRUNE_BATCH_PARENT"


class UnitFailed(RuntimeError):
    """A unit failed in a way a retry may fix (raised on Dask workers so Dask retries it)."""


def run_one(grid: Path, index: int, force: bool = False) -> int:
    """Run one unit (the `run-one` command). Exit 0: finished or skipped; 1: failed, a retry
    may help; 2: a ConfigError, a retry cannot help. The outcome is saved as the unit record."""
    _die_with_launcher()
    units = read_grid(grid)
    if not 0 <= index < len(units):
        allowed = f"0 to {len(units) - 1}" if units else "none (the grid has no units)"
        raise ConfigError(f"--index: {index} is not a unit of {grid}; allowed: {allowed}")
    unit = units[index]
    previous = load_record(grid, index) or {}
    attempt = previous.get("attempt", 0) + 1
    done = settled(grid, unit, force)
    if done is not None:
        save_record(grid, {**done, "attempt": attempt})
        print(f"unit {index} {unit['run_name']}: {done['status']} {done['error'] or ''}")
        return 0 if done["status"] != "failed" else 2
    save_record(grid, new_record(grid, unit, "running", attempt=attempt))
    log = log_path(grid, unit)
    print(f"unit {index} {unit['run_name']}: running (attempt {attempt}), log {log}", flush=True)
    start = time.monotonic()
    with _output_to(log):
        print(f"=== {dt.datetime.now():%Y-%m-%d %H:%M:%S} unit {index} {unit['run_name']} "
              f"attempt {attempt} on {os.uname().nodename} ===", flush=True)
        status, error, code = _execute(unit, force)
    record = new_record(grid, unit, status, time.monotonic() - start, error, code == 1, attempt)
    save_record(grid, record)
    print(f"unit {index} {unit['run_name']}: {status} in {record['seconds']} s {error or ''}")
    return code


def _execute(unit: dict, force: bool) -> tuple[str, Optional[str], int]:
    """Execute the notebook; (status, error, exit code). Tracebacks go to the unit's log."""
    import logging

    import papermill

    from ..notebook import execute_experiment

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        _injected_failure(unit["run_name"])
        cfg = ExperimentConfig.from_dict(unit["config"])
        if force:
            cfg = cfg.replace(overwrite=True, resume=False)
        execute_experiment(cfg, cwd=REPO_ROOT, log_output=True)
        return "finished", None, 0
    except papermill.PapermillExecutionError as err:
        traceback.print_exc()
        # the input's fault (a parameter, a folder another run holds, no data): no retry helps
        return "failed", f"{err.ename}: {err.evalue}", status_of_name(err.ename)
    except Exception as err:  # any other failure is this unit's, not the batch's
        traceback.print_exc()
        known = exit_status(err)
        return "failed", f"{type(err).__name__}: {err}", 2 if known and known[0] == 2 else 1


def _injected_failure(run_name: str) -> None:
    marker = Path(os.environ.get(FAIL_ENV, "/nonexistent")) / run_name
    if not marker.exists():
        return
    left = int(marker.read_text() or 1) - 1
    if left:
        marker.write_text(str(left))
    else:
        marker.unlink()
    raise RuntimeError(f"injected failure ({FAIL_ENV}): {run_name} fails {left} more time(s)")


@contextlib.contextmanager
def _output_to(log: Path):
    """Send this process's stdout and stderr, and so the kernel's, to the unit's log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as out:
        os.dup2(out.fileno(), 1), os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def _die_with_launcher() -> None:
    """Linux: a unit whose launcher (a batch, a Dask worker) dies goes too, so a retry elsewhere
    never finds the old process still writing the run folder. Its kernel follows in ~1 s."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the launcher died before prctl took effect
        os._exit(1)


def launch_unit(grid: Path, index: int, force: bool, unset=()) -> dict:
    """Run one unit in a `run-one` process and return its record (also when it died)."""
    cmd = [sys.executable, "-m", "fedprune_core", "batch", "run-one", "--grid", str(grid),
           "--index", str(index)] + (["--force"] if force else [])
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env[PARENT_ENV] = str(os.getpid())
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    record = load_record(grid, index)
    if record is not None and record["status"] != "running":
        return record
    # It died before saving its result (killed, out of memory, broken install): say how.
    unit = read_grid(grid)[index]
    how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
           else f"run-one exited with status {proc.returncode}")
    tail = proc.stderr.strip().splitlines()[-1:]
    log = log_path(grid, unit)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(proc.stdout + proc.stderr + f"\n{how}\n")
    attempt = (record or {}).get("attempt", 1)
    seconds = (record or {}).get("seconds", 0.0)
    return save_record(grid, new_record(grid, unit, "failed", seconds,
                                        how + (f": {tail[0]}" if tail else ""), True, attempt))

