"""Batches of runs: params files x seeds x overrides, each run through the experiment notebook.

The unit of work is one run. `batch run` expands the grid into `results/<batch>/grid.jsonl` (a
JSON line per unit: index, run_name, params file, seed, the resolved config or the ConfigError
that makes it invalid), validating every config before anything runs. Each unit is then executed
by `python -m fedprune_core batch run-one --grid GRID --index N`, in its own process, on one of
three back ends:

- `local`: JOBS units at once on this machine (a thread per slot only waits on a `run-one`
  process: papermill itself is not safe to drive from threads);
- `dask`: units submitted to a Dask cluster, `$DASK_SCHEDULER` (tcp://host:port) if set, else a
  LocalCluster of JOBS one-thread worker processes. To grow past one machine, start the
  scheduler and workers elsewhere, e.g. with dask-jobqueue on a batch system:
  `SLURMCluster(cores=2, memory="8GB", walltime="04:00:00").scale(jobs=20)` (or PBSCluster),
  then point `$DASK_SCHEDULER` at its scheduler address. Workers need this package installed and
  the same filesystem path to the grid and results folder;
- `slurm`: a job array, one task per unit, written to `results/<batch>/slurm/array.sbatch`
  (`batch status` follows it, `batch resubmit-missing` reruns what did not finish).

A unit is idempotent: a finished run is skipped (`--force` redoes it), a half-written one is
resumed from its checkpoint. A failed unit is retried once on every back end, except when the
failure is a ConfigError (a retry cannot fix a parameter). Per-unit output goes to
`results/<batch>/logs/<run_name>.log`, the unit's result to `results/<batch>/units/<index>.json`,
and the batch summary to `results/<batch>/batch.json`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

import yaml

from ..run.artifacts import write_atomic
from ..config import ConfigError, ExperimentConfig, coerce_value, load_params_file

# notebook.REPO_ROOT, not imported from there: that would load torch for every CLI command.
REPO_ROOT = Path(__file__).resolve().parents[2]

GRID, SUMMARY = "grid.jsonl", "batch.json"
# Test hook: a unit whose run_name names a file in this folder fails as many tries as the file
# says (empty: one), so tests can check that failures are retried, and resubmitted.
FAIL_ENV = "FEDPRUNE_BATCH_FAIL"
PARENT_ENV = "FEDPRUNE_BATCH_PARENT"


class UnitFailed(RuntimeError):
    """A unit failed in a way a retry may fix (raised on Dask workers so Dask retries it)."""


# --- the grid ---------------------------------------------------------------------------------

def parse_sets(items: list[str]) -> dict:
    """`--set key=value` pairs; values are YAML, so `5` is an int and `false` a bool."""
    names = {f.name for f in ExperimentConfig.field_specs()}
    overrides = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key not in names:
            raise ConfigError(f"--set {key}: unknown parameter; allowed: "
                              f"{', '.join(sorted(names))}")
        try:
            overrides[key] = coerce_value(key, yaml.safe_load(text))
        except ConfigError as err:
            raise ConfigError(f"--set {err}") from None
    return overrides


def expand_grid(params: list[str], seeds: Optional[list[int]], overrides: dict,
                results_dir: Path, threads: int) -> list[dict]:
    """One unit per params file and seed. A file that does not give a valid config becomes a
    unit carrying its error, so it is reported without stopping the others."""
    units = []
    for path in params:
        if Path(path).name.startswith("_"):
            print(f"note: {path} holds shared settings, not a run; skipped")
            continue
        for seed in seeds or [None]:
            units.append(_unit(len(units), path, seed, overrides, results_dir, threads))
    if not units:
        raise ConfigError("no params files to run (files starting with '_' are not runs)")
    _check_unique(units)
    return units


def _unit(index, path, seed, overrides, results_dir, threads) -> dict:
    unit = {"index": index, "params": str(path), "seed": seed, "config": None, "error": None}
    try:
        values = {**load_params_file(path), **overrides}
        seed = values["seed"] = values.get("seed", 0) if seed is None else seed
        unit["seed"] = seed
        unit["run_name"] = f"{Path(path).stem}_s{seed}"
        # The batch owns where runs go and how they restart. One thread per unit on every back
        # end: oneDNN's convolution sums depend on the thread count, so a fixed count makes a
        # unit's numbers the same whatever JOBS or the back end (run --num_threads 1 to match).
        values.update(run_name=unit["run_name"], results_dir=str(results_dir), resume=True,
                      overwrite=False)
        values.setdefault("num_threads", threads)
        unit["config"] = ExperimentConfig.from_dict(values).to_dict()
    except ConfigError as err:
        unit["seed"] = 0 if seed is None else seed
        unit["run_name"] = f"{Path(path).stem}_s{unit['seed']}"
        unit["error"] = f"ConfigError: {err}"
    return unit


def _check_unique(units: list[dict]) -> None:
    """Two units writing one run folder would corrupt it: refuse the grid instead."""
    seen: dict[str, str] = {}
    for unit in units:
        if unit["run_name"] in seen:
            raise ConfigError(f"run {unit['run_name']} would be written by both "
                              f"{seen[unit['run_name']]} and {unit['params']}")
        seen[unit["run_name"]] = unit["params"]


def write_grid(units: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(u) + "\n" for u in units))


def read_grid(path: Path) -> list[dict]:
    if not Path(path).is_file():
        raise ConfigError(f"grid {path} does not exist (batch run writes it)")
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _run_dir(unit: dict) -> Path:
    return Path(unit["config"]["results_dir"]) / unit["run_name"]


def _log_path(grid: Path, unit: dict) -> Path:
    return Path(grid).parent / "logs" / f"{unit['run_name']}.log"


def _record_path(grid: Path, index: int) -> Path:
    return Path(grid).parent / "units" / f"{index}.json"


def load_record(grid: Path, index: int) -> Optional[dict]:
    path = _record_path(grid, index)
    return json.loads(path.read_text()) if path.is_file() else None


def save_record(grid: Path, record: dict) -> dict:
    path = _record_path(grid, record["unit"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1))
    return record


def _record(grid, unit, status, seconds=0.0, error=None, retry=False, attempt=0) -> dict:
    return {"unit": unit["index"], "run_name": unit["run_name"], "status": status,
            "seconds": round(seconds, 1), "error": error, "log": str(_log_path(grid, unit)),
            "retry": retry, "attempt": attempt}


# --- one unit ---------------------------------------------------------------------------------

def settled(grid: Path, unit: dict, force: bool) -> Optional[dict]:
    """The unit's record if it needs no run (invalid, or already finished), else None."""
    from ..run.artifacts import run_state

    if unit["error"]:
        _note(grid, unit, f"not run, invalid: {unit['error']}")
        return _record(grid, unit, "failed", error=unit["error"])
    if force or run_state(_run_dir(unit)) != "finished":
        return None
    error = other_parameters(unit)
    if error:
        _note(grid, unit, error)
        return _record(grid, unit, "failed", error=error)
    _note(grid, unit, f"skipped: {_run_dir(unit)} already holds this finished run")
    return _record(grid, unit, "skipped")


def other_parameters(unit: dict) -> Optional[str]:
    """Why the finished run in the unit's folder is not this unit's run (None if it is): it
    must not be skipped as done, nor silently replaced."""
    cfg = ExperimentConfig.from_dict(unit["config"])
    saved = json.loads((_run_dir(unit) / "config.json").read_text())
    ours = {**cfg.science_dict(), "label": cfg.method_label}
    changed = [f"{k}={saved.get(k)!r} (now {v!r})" for k, v in ours.items() if saved.get(k) != v]
    if not changed:
        return None
    return (f"{_run_dir(unit)} holds a finished run with other parameters: "
            f"{', '.join(changed)}; --force (FORCE=1) redoes it")


def _note(grid: Path, unit: dict, text: str) -> None:
    log = _log_path(grid, unit)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"=== {dt.datetime.now():%Y-%m-%d %H:%M:%S} unit {unit['index']} "
                  f"{unit['run_name']}: {text}\n")


def run_one(grid: Path, index: int, force: bool = False) -> int:
    """Run one unit (the `run-one` command). Exit 0: finished or skipped; 1: failed, a retry
    may help; 2: a ConfigError, a retry cannot help. The outcome is saved as the unit record."""
    _die_with_launcher()
    units = read_grid(grid)
    if not 0 <= index < len(units):
        raise ConfigError(f"--index {index}: the grid {grid} has units 0..{len(units) - 1}")
    unit = units[index]
    previous = load_record(grid, index) or {}
    attempt = previous.get("attempt", 0) + 1
    done = settled(grid, unit, force)
    if done is not None:
        save_record(grid, {**done, "attempt": attempt})
        print(f"unit {index} {unit['run_name']}: {done['status']} {done['error'] or ''}")
        return 0 if done["status"] != "failed" else 2
    save_record(grid, _record(grid, unit, "running", attempt=attempt))
    log = _log_path(grid, unit)
    print(f"unit {index} {unit['run_name']}: running (attempt {attempt}), log {log}", flush=True)
    start = time.monotonic()
    with _output_to(log):
        print(f"=== {dt.datetime.now():%Y-%m-%d %H:%M:%S} unit {index} {unit['run_name']} "
              f"attempt {attempt} on {os.uname().nodename} ===", flush=True)
        status, error, code = _execute(unit, force)
    record = _record(grid, unit, status, time.monotonic() - start, error, code == 1, attempt)
    save_record(grid, record)
    print(f"unit {index} {unit['run_name']}: {status} in {record['seconds']} s {error or ''}")
    return code


def _execute(unit: dict, force: bool) -> tuple[str, Optional[str], int]:
    """Execute the notebook; (status, error, exit code). Tracebacks go to the unit's log."""
    import logging

    import papermill

    from .notebook import execute_experiment

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        _injected_failure(unit["run_name"])
        cfg = ExperimentConfig.from_dict(unit["config"])
        if force:
            cfg = cfg.replace(overwrite=True, resume=False)
        execute_experiment(cfg, cwd=REPO_ROOT, log_output=True)
        return "finished", None, 0
    except ConfigError as err:
        traceback.print_exc()
        return "failed", f"ConfigError: {err}", 2
    except papermill.PapermillExecutionError as err:
        traceback.print_exc()
        return "failed", f"{err.ename}: {err.evalue}", 2 if err.ename == "ConfigError" else 1
    except Exception as err:  # any other failure is this unit's, not the batch's
        traceback.print_exc()
        return "failed", f"{type(err).__name__}: {err}", 1


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
    log = _log_path(grid, unit)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(proc.stdout + proc.stderr + f"\n{how}\n")
    attempt = (record or {}).get("attempt", 1)
    return save_record(grid, _record(grid, unit, "failed", (record or {}).get("seconds", 0.0),
                                     how + (f": {tail[0]}" if tail else ""), True, attempt))


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


# --- back ends: local and Dask run the units and report; SLURM submits an array ---------------

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
        error = f": {_first_line(record['error'])}" if record["error"] else ""
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


def run_dask(grid: Path, units: list[dict], jobs: int, force: bool, progress) -> list[dict]:
    """Units as Dask tasks (retries=1), on $DASK_SCHEDULER or a LocalCluster of JOBS workers."""
    try:
        from distributed import Client, KilledWorker, LocalCluster
        from distributed import as_completed as dask_completed
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
        print(f"dask: {client.scheduler.address}, dashboard {client.dashboard_link}",
              file=sys.stderr)
        futures = {client.submit(dask_unit, str(grid), unit["index"], force, retries=1,
                                 pure=False): unit for unit in units}
        records = []
        for future in dask_completed(futures):
            unit = futures[future]
            try:
                record = future.result()
            except KilledWorker as err:  # its worker died (e.g. out of memory) too often
                record = save_record(grid, _record(grid, unit, "failed",
                                                   error=f"KilledWorker: {err}"))
            except Exception as err:  # UnitFailed after the retry: its record says why
                record = load_record(grid, unit["index"])
                if record is None or record["status"] != "failed":
                    record = save_record(grid, _record(grid, unit, "failed",
                                                       error=f"{type(err).__name__}: {err}"))
            records.append(progress.update(record))
        return records


# Per array task; --jobs is the array's %limit (how many units run at once).
SLURM_DEFAULTS = {"jobs": 1, "time": "04:00:00", "partition": None, "cpus": 1}


def array_spec(indices: list[int], jobs: int) -> str:
    """SLURM's --array value: consecutive indices as ranges, at most JOBS at once."""
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return f"{','.join(parts)}%{jobs}"


def write_sbatch(grid: Path, indices: list[int], settings: dict, name: str) -> Path:
    """A job array whose task N runs unit N, from the repo root with this interpreter."""
    import shlex

    slurm = grid.parent / "slurm"
    (slurm / "logs").mkdir(parents=True, exist_ok=True)  # SLURM does not create it
    command = (f"{shlex.quote(sys.executable)} -m fedprune_core batch run-one --grid "
               f"{shlex.quote(str(grid))} --index \"$SLURM_ARRAY_TASK_ID\""
               + (" --force" if settings.get("force") else ""))
    lines = [
        "#!/bin/bash",
        f"# FedPrune-Sparse batch {grid.parent.name}: array task N runs grid unit N.",
        f"# Follow it: {sys.executable} -m fedprune_core batch status --grid {grid}",
        f"#SBATCH --job-name=fedprune-{grid.parent.name}",
        f"#SBATCH --array={array_spec(indices, settings['jobs'])}",
        f"#SBATCH --output={slurm}/logs/unit_%a.out",
        f"#SBATCH --cpus-per-task={settings['cpus']}",
        f"#SBATCH --time={settings['time']}",
        *([f"#SBATCH --partition={settings['partition']}"] if settings.get("partition") else []),
        f"#SBATCH --chdir={REPO_ROOT}",
        "set -uo pipefail",
        f"cd {shlex.quote(str(REPO_ROOT))}",
        f"unit() {{ {command}; }}",
        "# One retry, as on the local and Dask back ends; status 2 (a ConfigError) is final.",
        'unit || { status=$?; [ "$status" -eq 1 ] || exit "$status"; unit; }', ""]
    path = slurm / name
    write_atomic(path, "\n".join(lines))
    return path


def submit(grid: Path, script: Path) -> int:
    """sbatch the script if this machine has SLURM; else say the command to run where it does."""
    if shutil.which("sbatch") is None:
        print(f"sbatch is not on this machine; the array is written. Submit it with:\n"
              f"  sbatch {script}")
        return 0
    out = subprocess.run(["sbatch", "--parsable", str(script)], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    if out.returncode:
        print(f"error: sbatch {script} failed: {out.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"submitted SLURM job array {out.stdout.strip()} ({script}); follow it with:\n"
          f"  python -m fedprune_core batch status --grid {grid}")
    return 0


def _run_slurm(grid: Path, records: list[dict], todo: list[dict], args) -> int:
    settings = {"jobs": args.jobs, "time": args.slurm_time, "partition": args.slurm_partition,
                "cpus": args.slurm_cpus, "force": args.force}
    (grid.parent / "slurm").mkdir(exist_ok=True)
    write_atomic(grid.parent / "slurm" / "settings.json", json.dumps(settings, indent=1))
    if records:
        print(format_table(records, COLUMNS))
    code = submit(grid, write_sbatch(grid, [u["index"] for u in todo], settings,
                                     "array.sbatch")) if todo else 0
    if not todo:
        print("nothing to submit: every valid unit is finished")
    return 1 if any(r["status"] == "failed" for r in records) else code


# --- the summary ------------------------------------------------------------------------------

COLUMNS = ("unit", "run_name", "status", "seconds", "error", "log")


def _first_line(text: Optional[str], width: int = 80) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[:width - 3] + "..."


def _shown(value, column: str) -> str:
    if column == "error":
        return _first_line(value)
    if column == "log" and value:
        with contextlib.suppress(ValueError):
            return str(Path(value).relative_to(Path.cwd()))
    return "" if value is None else str(value)


def format_table(rows: list[dict], columns) -> str:
    cells = [[_shown(row.get(c), c) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def finish(grid: Path, records: list[dict], backend: str, seconds: float) -> int:
    """Print the table, write batch.json; non-zero if any unit failed."""
    records = sorted(records, key=lambda r: r["unit"])
    print(format_table(records, COLUMNS))
    counts = write_summary(grid, records, backend, seconds)
    print(f"{len(records)} units: {counts['finished']} finished, {counts['skipped']} skipped, "
          f"{counts['failed']} failed in {seconds:.0f} s; summary: {grid.parent / SUMMARY}")
    return 1 if counts["failed"] else 0


def write_summary(grid: Path, records: list[dict], backend: str, seconds=None) -> Counter:
    counts = Counter(r["status"] for r in records)
    summary = {"batch": grid.parent.name, "backend": backend, "grid": str(grid),
               "written": dt.datetime.now().isoformat(timespec="seconds"),
               "wall_sec": None if seconds is None else round(seconds, 1),
               "counts": dict(counts),
               "units": [{c: r.get(c) for c in (*COLUMNS, "attempt")} for r in records]}
    write_atomic(grid.parent / SUMMARY, json.dumps(summary, indent=1))
    return counts


def unit_state(grid: Path, unit: dict) -> dict:
    """A unit as `status` shows it: its run folder's state, its last try's record, and its
    batch status (finished, skipped, failed, or pending while it may still run)."""
    from ..run.artifacts import run_state

    record = load_record(grid, unit["index"]) or {}
    state = "invalid" if unit["error"] else run_state(_run_dir(unit))
    if state == "finished" and other_parameters(unit):
        state, record = "other params", {**record, "error": other_parameters(unit)}
    last = record.get("status", "-")
    if state == "finished":
        status = last if last in ("finished", "skipped") else "finished"
    else:
        status = "failed" if state in ("invalid", "other params") or last == "failed" \
            else "pending"
    return {"unit": unit["index"], "run_name": unit["run_name"],
            "state": {"new": "not started"}.get(state, state), "last_try": last,
            "status": status, "seconds": record.get("seconds"),
            "attempt": record.get("attempt"),
            "error": unit["error"] or (record.get("error") if state != "finished" else None),
            "log": record.get("log")}


# --- command line -----------------------------------------------------------------------------

def cmd_run(args) -> int:
    if args.jobs < 1:
        raise ConfigError(f"--jobs: {args.jobs} is not allowed; allowed: an integer >= 1")
    started = time.monotonic()
    overrides = parse_sets(args.set)
    results_dir = Path(args.results_dir).resolve()
    # Parallelism comes from JOBS units at once, each on one thread (unless num_threads is set).
    units = expand_grid(args.params, args.seeds, overrides, results_dir, threads=1)
    if args.name in {u["run_name"] for u in units}:
        raise ConfigError(f"--name {args.name}: a run of the grid has that folder name")
    grid = results_dir / args.name / GRID
    write_grid(units, grid)
    shutil.rmtree(grid.parent / "units", ignore_errors=True)  # records of an older grid
    print(f"grid: {grid} ({len(units)} units, backend {args.backend})")
    records, todo = [], []
    for unit in units:
        record = settled(grid, unit, args.force)
        if record:
            records.append(save_record(grid, record))
        else:
            todo.append(unit)
    if args.backend == "slurm":
        return _run_slurm(grid, records, todo, args)
    progress = Progress(len(units), len(todo), args.jobs, args.name)
    for record in records:
        progress.update(record, ran=False)
    runner = run_local if args.backend == "local" else run_dask
    try:
        records += runner(grid, todo, args.jobs, args.force, progress) if todo else []
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again; finished runs are skipped and "
              "interrupted ones resume from their checkpoints", file=sys.stderr)
        return 130
    finally:
        progress.bar.close()
    return finish(grid, records, args.backend, time.monotonic() - started)


def cmd_run_one(args) -> int:
    return run_one(Path(args.grid).resolve(), args.index, args.force)


def cmd_status(args) -> int:
    grid = Path(args.grid).resolve()
    rows = [unit_state(grid, unit) for unit in read_grid(grid)]
    print(format_table(rows, ("unit", "run_name", "state", "last_try", "seconds", "error",
                              "log")))
    counts = Counter(row["state"] for row in rows)
    print(f"{len(rows)} units: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    # The same batch.json as local and Dask write: how a SLURM batch gets its summary.
    backend = "slurm" if (grid.parent / "slurm").is_dir() else None
    return 1 if write_summary(grid, rows, backend)["failed"] else 0


def cmd_resubmit_missing(args) -> int:
    from ..run.artifacts import run_state

    grid = Path(args.grid).resolve()
    units = read_grid(grid)
    saved = grid.parent / "slurm" / "settings.json"
    settings = json.loads(saved.read_text()) if saved.is_file() else dict(SLURM_DEFAULTS)
    flags = {"jobs": args.jobs, "time": args.slurm_time, "partition": args.slurm_partition,
             "cpus": args.slurm_cpus}
    settings.update({k: v for k, v in flags.items() if v is not None}, force=False)
    invalid = [u["run_name"] for u in units if u["error"]]
    if invalid:
        print(f"not resubmitted, invalid (fix the params file, then batch run again): "
              f"{', '.join(invalid)}")
    missing = [u["index"] for u in units
               if not u["error"] and run_state(_run_dir(u)) != "finished"]
    if not missing:
        print("nothing to resubmit: every valid unit is finished")
        return 0
    print(f"resubmitting {len(missing)} unfinished unit(s): "
          f"{array_spec(missing, settings['jobs'])}")
    return submit(grid, write_sbatch(grid, missing, settings, "resubmit.sbatch"))


def _slurm_flags(parser, defaults: dict) -> None:
    group = parser.add_argument_group("SLURM job array (--backend slurm)")
    group.add_argument("--slurm-time", dest="slurm_time", default=defaults["time"],
                       help="Time limit of each array task (HH:MM:SS).")
    group.add_argument("--slurm-partition", dest="slurm_partition",
                       default=defaults["partition"], help="Partition (default: the cluster's).")
    group.add_argument("--slurm-cpus", dest="slurm_cpus", type=int, default=defaults["cpus"],
                       help="cpus-per-task (units use one torch thread unless num_threads "
                            "is set).")


def add_batch_commands(sub) -> None:
    """`batch run | run-one | status | resubmit-missing` under the main command line."""
    import argparse

    batch = sub.add_parser("batch", help="Run a grid of experiments (params files x seeds x "
                           "--set overrides) locally, on Dask or as a SLURM job array.")
    cmds = batch.add_subparsers(dest="batch_command", required=True, parser_class=type(batch))
    fmt = argparse.ArgumentDefaultsHelpFormatter
    run = cmds.add_parser("run", formatter_class=fmt, help="Expand the grid and run it.")
    run.add_argument("--params", nargs="+", required=True, metavar="FILE.yaml",
                     help="Params files, a run each (per seed); files starting with _ are "
                          "shared settings and skipped.")
    run.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                     help="One run per seed (default: each file's own seed).")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="Override for every run, value read as YAML (repeatable).")
    run.add_argument("--jobs", type=int, default=1, help="Runs at once (SLURM: array %%limit).")
    run.add_argument("--backend", choices=("local", "dask", "slurm"), default="local")
    run.add_argument("--force", action="store_true", help="Redo finished runs.")
    run.add_argument("--name", default="batch", help="Batch folder: RESULTS_DIR/NAME/.")
    run.add_argument("--results_dir", default="./results", help="Where run folders go.")
    _slurm_flags(run, SLURM_DEFAULTS)
    run.set_defaults(handler=cmd_run)
    one = cmds.add_parser("run-one", help="Run unit N of a grid (what each back end calls).")
    one.add_argument("--grid", required=True, help="results/<batch>/grid.jsonl")
    one.add_argument("--index", type=int, required=True)
    one.add_argument("--force", action="store_true", help="Redo the run if finished.")
    one.set_defaults(handler=cmd_run_one)
    status = cmds.add_parser("status", help="Each unit's state: finished, interrupted, "
                             "partial, not started (or invalid), and counts.")
    status.add_argument("--grid", required=True)
    status.set_defaults(handler=cmd_status)
    again = cmds.add_parser("resubmit-missing", help="Submit a SLURM array of the units "
                            "without a finished run (settings of the first submission).")
    again.add_argument("--grid", required=True)
    again.add_argument("--jobs", type=int, help="Array %%limit.")
    _slurm_flags(again, {"time": None, "partition": None, "cpus": None})
    again.set_defaults(handler=cmd_resubmit_missing)
