"""The grid: params files x seeds x `--set` overrides expanded into units, validated before
anything runs, written to `grid.jsonl`; and each unit's record (`units/<index>.json`).

A unit is one run. A params file that does not give a valid config (a bad value, an unknown
key, a file that is not YAML at all) becomes a unit carrying its error: reported, never run,
without stopping the other units.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Optional

from ...config import ConfigError, ExperimentConfig, check_names, closest, value_from_text
from ...params_files import load_params_file
from ...run.artifacts import write_atomic

GRID = "grid.jsonl"
# Set by the batch for every unit (_unit): `--set` cannot change them, so it may not name them.
OWNED = {"run_name": "<params file stem>_s<seed>", "results_dir": "--results_dir",
         "resume": "always true (an interrupted unit resumes)", "overwrite": "--force"}
UNIT_KEYS = ("index", "params", "seed", "config", "error", "run_name")
RECORD_KEYS = ("unit", "run_name", "status", "seconds", "error", "log", "retry", "attempt")


# --- expansion and validation -----------------------------------------------------------------

def parse_sets(items: list[str]) -> dict:
    """`--set key=value` pairs; values are YAML, so `5` is an int and `false` a bool."""
    names = {f.name for f in ExperimentConfig.field_specs()}
    overrides = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key not in names:
            guess = closest(key, names)
            raise ConfigError(f"--set {key}: unknown parameter; " + (
                f"did you mean {guess}?" if guess else f"allowed: {', '.join(sorted(names))}"))
        if key in OWNED:
            raise ConfigError(f"--set {key}: set by the batch for each run ({OWNED[key]}); "
                              f"allowed: the other parameters")
        try:
            overrides[key] = value_from_text(key, text)
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
        raise ConfigError("--params: no params files to run (files starting with '_' are not "
                          "runs)")
    _check_unique(units)
    return units


def _unit(index, path, seed, overrides, results_dir, threads) -> dict:
    unit = {"index": index, "params": str(path), "seed": seed, "config": None, "error": None}
    try:
        values = {**load_params_file(path, check_names), **overrides}
        seed = values["seed"] = values.get("seed", 0) if seed is None else seed
        unit["seed"] = seed
        unit["run_name"] = f"{Path(path).stem}_s{seed}"
        # The batch owns where runs go (its own folder) and how they restart. One thread per
        # unit: JOBS units then use JOBS cores; the default engine's numbers do not depend on
        # the thread count anyway (fl/threads.py), so a unit matches a plain `run`.
        values.update(run_name=unit["run_name"], results_dir=str(results_dir), resume=True,
                      overwrite=False)
        values.setdefault("num_threads", threads)
        unit["config"] = ExperimentConfig.from_dict(values).to_dict()
    except ConfigError as err:
        unit["seed"] = seed if isinstance(seed, int) else 0
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
        raise ConfigError(f"--grid: {path} does not exist; expected the grid.jsonl batch run "
                          f"writes")
    try:
        units = [json.loads(line) for line in Path(path).read_text().splitlines()
                 if line.strip()]
    except (ValueError, OSError) as err:
        raise ConfigError(f"--grid: {path} is not a grid written by batch run ({err}); "
                          f"expected the grid.jsonl batch run writes") from None
    for i, unit in enumerate(units):
        if not _is_unit(unit, i):
            raise ConfigError(f"--grid: {path} line {i + 1} is not a unit written by batch run; "
                              f"expected the grid.jsonl batch run writes")
    return units


def _is_unit(unit, index: int) -> bool:
    """A unit as _unit writes it: a config (with its results_dir) or an error, never both."""
    if not (isinstance(unit, dict) and all(k in unit for k in UNIT_KEYS)
            and unit["index"] == index and isinstance(unit["run_name"], str)):
        return False
    if unit["config"] is None:
        return isinstance(unit["error"], str)
    return (unit["error"] is None and isinstance(unit["config"], dict)
            and isinstance(unit["config"].get("results_dir"), str))


# --- where a unit's files go ------------------------------------------------------------------

def run_dir(unit: dict) -> Path:
    return Path(unit["config"]["results_dir"]) / unit["run_name"]


def log_path(grid: Path, unit: dict) -> Path:
    return Path(grid).parent / "logs" / f"{unit['run_name']}.log"


def record_path(grid: Path, index: int) -> Path:
    return Path(grid).parent / "units" / f"{index}.json"


# --- records: the outcome of a unit's last try ------------------------------------------------

def load_record(grid: Path, index: int) -> Optional[dict]:
    """The unit's last record; None if it has none, or one that cannot be read (a note says
    so: the record only reports, the run folder is what counts)."""
    path = record_path(grid, index)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        record = err
    if (isinstance(record, dict) and set(RECORD_KEYS) <= set(record)
            and isinstance(record["status"], str) and isinstance(record["attempt"], int)
            and isinstance(record["seconds"], (int, float))):
        return record
    why = f" ({record})" if isinstance(record, Exception) else ""
    print(f"note: {path} is not a unit record{why}; ignored", file=sys.stderr)
    return None


def save_record(grid: Path, record: dict) -> dict:
    path = record_path(grid, record["unit"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1))
    return record


def new_record(grid, unit, status, seconds=0.0, error=None, retry=False, attempt=0) -> dict:
    return {"unit": unit["index"], "run_name": unit["run_name"], "status": status,
            "seconds": round(seconds, 1), "error": error, "log": str(log_path(grid, unit)),
            "retry": retry, "attempt": attempt}


def note(grid: Path, unit: dict, text: str) -> None:
    """A line in the unit's log, for what happened without running it."""
    log = log_path(grid, unit)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"=== {dt.datetime.now():%Y-%m-%d %H:%M:%S} unit {unit['index']} "
                  f"{unit['run_name']}: {text}\n")


# --- is there anything to run -----------------------------------------------------------------

def settled(grid: Path, unit: dict, force: bool) -> Optional[dict]:
    """The unit's record if it needs no run (invalid, or already finished), else None."""
    from ...run.artifacts import run_state

    if unit["error"]:
        note(grid, unit, f"not run, invalid: {unit['error']}")
        return new_record(grid, unit, "failed", error=unit["error"])
    if force or run_state(run_dir(unit)) != "finished":
        return None
    error = other_parameters(unit)
    if error:
        note(grid, unit, error)
        return new_record(grid, unit, "failed", error=error)
    note(grid, unit, f"skipped: {run_dir(unit)} already holds this finished run")
    return new_record(grid, unit, "skipped")


def other_parameters(unit: dict) -> Optional[str]:
    """Why the finished run in the unit's folder is not this unit's run (None if it is), by
    config.experiment_differences: it must not be skipped as done, nor silently replaced."""
    from ...run.artifacts import saved_differences

    changed = saved_differences(ExperimentConfig.from_dict(unit["config"]), run_dir(unit))
    if not changed:
        return None
    return (f"{run_dir(unit)} holds a finished run with other parameters: "
            f"{', '.join(changed)}; --force (FORCE=1) redoes it")
