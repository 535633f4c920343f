"""`batch run | run-one | status | resubmit-missing` under the main command line."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from ...checks import check_folder_name, check_results_dir
from ...config import ConfigError, experiment_differences
from .grid import GRID, expand_grid, parse_sets, read_grid, run_dir, save_record, settled, \
    write_grid
from .slurm import array_spec, check_script_path, check_settings, run_slurm, saved_settings, \
    settings_from_args, submit, write_sbatch, SLURM_DEFAULTS
from .summary import finish, format_table, unit_state, write_summary
from .unit import run_one


def cmd_run(args) -> int:
    """Expand and validate the grid, settle what needs no run, run the rest on the back end.

    A local or Dask batch holds a lock on its folder while it runs (a second batch of the same
    --name stops at once, naming this one's pid); a SLURM batch, queued after this process
    ends, is protected by the rule that a different grid under the same name needs --force."""
    started = time.monotonic()
    grid, units, lock = _prepare(args)
    try:
        return _run(args, grid, units, started)
    finally:
        if lock is not None:
            lock.release()


def _run(args, grid: Path, units: list[dict], started: float) -> int:
    records, todo = [], []
    for unit in units:
        record = settled(grid, unit, args.force)
        if record:
            records.append(save_record(grid, record))
        else:
            todo.append(unit)
    if args.backend == "slurm":
        return run_slurm(grid, records, todo, args)
    from .local import run_local
    from .status import BatchStatus

    progress = BatchStatus(grid, units, args.jobs, args.name, force=args.force)
    progress.settle_all(records)
    if args.backend == "local":
        runner = run_local
    else:
        from .dask_backend import run_dask as runner
    try:
        records += runner(grid, todo, args.jobs, args.force, progress) if todo else []
    except KeyboardInterrupt:
        progress.close()  # the live line ends before the note
        print("interrupted: run the same command again; finished runs are skipped and "
              "interrupted ones resume from their checkpoints", file=sys.stderr)
        return 130
    finally:
        progress.close()
    return finish(grid, records, args.backend, time.monotonic() - started)


def _prepare(args):
    """Every argument checked (ConfigError, exit 2) before the grid is written; returns the
    grid, its units and the batch folder's lock (None for SLURM)."""
    from ...run.guard import lock_run_dir

    if args.jobs < 1:
        raise ConfigError(f"--jobs: {args.jobs} is not allowed; allowed: an integer >= 1")
    settings_from_args(args)  # every SLURM value, whatever the back end: the Makefile passes them
    check_folder_name(args.name, "--name")
    overrides = parse_sets(args.set)
    if "seed" in overrides and args.seeds:
        raise ConfigError("--set seed: given with --seeds, which would override it; allowed: "
                          "one of them")
    # Where runs go; the folder itself is created (check_results_dir) once all else is good.
    results_dir = Path(args.results_dir).expanduser().resolve()
    if args.backend == "slurm":
        check_script_path(results_dir / args.name, "--results_dir")
    # Parallelism comes from JOBS units at once, each on one thread (unless num_threads is set).
    # A batch's runs live in its own folder, beside its grid and logs: one comparison a batch
    units = expand_grid(args.params, args.seeds, overrides, results_dir / args.name, threads=1)
    if all(u["error"] for u in units):  # nothing would run: the arguments are wrong
        first = units[0]["error"].removeprefix("ConfigError: ")
        raise ConfigError(f"--params: no run of the grid is valid; the first, "
                          f"{units[0]['run_name']}: {first}")
    check_results_dir(args.results_dir)
    grid = results_dir / args.name / GRID
    lock = None if args.backend == "slurm" else lock_run_dir(grid.parent, "--name")
    try:
        old = read_grid_or_none(grid)
        extended = _extension(old, units)
        if extended is not None:  # more seeds or files: the old units keep their indices
            units = extended
        else:
            _check_same_grid(grid, old, units, args.force)
            if old != _as_saved(units):
                shutil.rmtree(grid.parent / "units", ignore_errors=True)  # an older grid's
        write_grid(units, grid)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    print(f"grid: {grid} ({len(units)} units, backend {args.backend})")
    return grid, units, lock


def _extension(old, units: list[dict]):
    """`units` ordered so that an existing grid's units keep their indices (each the same run in
    the new grid: found by run name, the same experiment and seed by config.experiment_params,
    so a parameter added to the suite since does not count as a change) and the new ones
    follow, re-indexed: a grid that only adds seeds or params files extends the batch (its
    records, a queued SLURM array and `batch status` still mean what they meant). None if `old`
    is not such a part of `units`."""
    if not isinstance(old, list) or not old:
        return None
    new = {u["run_name"]: u for u in _as_saved(units)}
    for unit in old:
        mine = new.get(unit.get("run_name"))
        if mine is None or bool(mine["error"]) != bool(unit.get("error")):
            return None
        if not mine["error"] and (experiment_differences(unit["config"], mine["config"]) or
                                  unit["config"].get("results_dir")
                                  != mine["config"]["results_dir"]):
            return None
    kept = {u["run_name"] for u in old}
    ordered = old + [u for u in _as_saved(units) if u["run_name"] not in kept]
    return [{**u, "index": i} for i, u in enumerate(ordered)]


def _as_saved(units: list[dict]) -> list[dict]:
    return [json.loads(json.dumps(u)) for u in units]


def read_grid_or_none(grid: Path):
    """The units of an existing grid.jsonl, None if there is none; "unreadable" if it cannot be
    read as a grid."""
    if not grid.exists():
        return None
    try:
        return read_grid(grid)
    except ConfigError:
        return "unreadable"


def _check_same_grid(grid: Path, old, units: list[dict], force: bool) -> None:
    """A batch name holds one grid: another grid under it is refused without --force, since its
    units would be taken for the old grid's by whatever still runs or follows the old one (a
    queued SLURM array, `batch status`). The same grid is reused: a rerun resumes it."""
    if old is None or force or old == _as_saved(units):
        return
    if old == "unreadable":
        what = "a grid.jsonl that cannot be read"
    else:
        names = [u.get("run_name") for u in old]
        new = [u["run_name"] for u in units]
        what = (f"another grid ({len(old)} units: {', '.join(map(str, names[:4]))}"
                f"{', ...' if len(names) > 4 else ''})" if names != new else
                "the same runs with other parameters")
    raise ConfigError(f"--name: {grid} holds {what}; allowed: the same grid (a rerun resumes "
                      f"it), --force to replace it (and redo finished runs), or another --name")


def cmd_run_one(args) -> int:
    return run_one(Path(args.grid).resolve(), args.index, args.force)


def cmd_status(args) -> int:
    """The units' table and counts, then the status line a batch shows (rounds, ETA); with
    --follow, first the batch's live status until no unit is pending (how a SLURM array is
    followed: its units leave only records and run folders)."""
    from .status import BatchStatus, follow

    grid = Path(args.grid).resolve()
    units = read_grid(grid)
    # A SLURM batch's slots are its array's %limit; another batch's, the units seen running.
    backend = "slurm" if (grid.parent / "slurm").is_dir() else None
    status = BatchStatus(grid, units, _slurm_jobs(grid) if backend else 1, grid.parent.name)
    if args.follow:
        with contextlib.suppress(KeyboardInterrupt):  # stops following, never the batch
            follow(grid, units, status)
    rows = [unit_state(grid, unit) for unit in units]
    status.sync(rows, report=False)
    rows = [{**row, "rounds": status.rounds_of(row["unit"])} for row in rows]
    print(format_table(rows, ("unit", "run_name", "state", "rounds", "last_try", "seconds",
                              "error", "log")))
    counts = Counter(row["state"] for row in rows)
    print(f"{len(rows)} units: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    print(f"{status.name}: {status.text()}")
    # The same batch.json as local and Dask write: how a SLURM batch gets its summary.
    try:
        write_summary(grid, rows, backend)
    except OSError as err:  # a read-only batch folder: the table above is the status
        print(f"note: {grid.parent / 'batch.json'} not written ({err.strerror})",
              file=sys.stderr)
    return 1 if any(row["status"] == "failed" for row in rows) else 0


def _slurm_jobs(grid: Path) -> int:
    try:
        return saved_settings(grid)["jobs"]
    except ConfigError:  # damaged settings: the units seen running are the slots
        return 1


def cmd_resubmit_missing(args) -> int:
    from ...run.artifacts import run_state

    grid = Path(args.grid).resolve()
    units = read_grid(grid)
    settings = saved_settings(grid)
    flags = {"jobs": args.jobs, "time": args.slurm_time, "partition": args.slurm_partition,
             "cpus": args.slurm_cpus}
    settings = check_settings({**settings, **{k: v for k, v in flags.items() if v is not None},
                               "force": False})
    invalid = [u["run_name"] for u in units if u["error"]]
    if invalid:
        print(f"not resubmitted, invalid (fix the params file, then batch run again): "
              f"{', '.join(invalid)}")
    missing = [u["index"] for u in units
               if not u["error"] and run_state(run_dir(u)) != "finished"]
    if not missing:
        print("nothing to resubmit: every valid unit is finished")
        return 0
    print(f"resubmitting {len(missing)} unfinished unit(s): "
          f"{array_spec(missing, settings['jobs'])}")
    return submit(grid, write_sbatch(grid, missing, settings, "resubmit.sbatch"))


def _count(text: str) -> int:
    """An integer >= 1 (--jobs), with the one-line error the other flags give."""
    import argparse

    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: an integer >= 1")
    return int(text)


def _slurm_flags(parser, defaults: dict) -> None:
    group = parser.add_argument_group("SLURM job array (--backend slurm)")
    group.add_argument("--slurm-time", dest="slurm_time", default=defaults["time"],
                       help="Time limit of each array task (HH:MM:SS).")
    group.add_argument("--slurm-partition", dest="slurm_partition",
                       default=defaults["partition"], help="Partition (default: the cluster's).")
    group.add_argument("--slurm-cpus", dest="slurm_cpus", default=defaults["cpus"],
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
    run.add_argument("--jobs", type=_count, default=1,
                     help="Runs at once (SLURM: array %%limit).")
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
    status.add_argument("--follow", action="store_true",
                        help="Show the batch's live status (a line per settled unit when not "
                             "on a terminal) until no unit is pending; Ctrl-C stops following, "
                             "not the batch.")
    status.set_defaults(handler=cmd_status)
    again = cmds.add_parser("resubmit-missing", help="Submit a SLURM array of the units "
                            "without a finished run (settings of the first submission).")
    again.add_argument("--grid", required=True)
    again.add_argument("--jobs", type=_count, help="Array %%limit.")
    _slurm_flags(again, {"time": None, "partition": None, "cpus": None})
    again.set_defaults(handler=cmd_resubmit_missing)
