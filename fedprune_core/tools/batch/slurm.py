"""The SLURM back end: a job array, one task per unit, written to
`results/<batch>/slurm/array.sbatch` and submitted with sbatch when this machine has it
(`batch status --follow` shows its live status from the units' records and run folders, as a
local batch does; `batch resubmit-missing` reruns what did not finish).

Every value in the script is checked before anything is written (check_settings,
check_script_path): shell lines quote theirs (shlex.quote), but #SBATCH lines cannot be quoted,
so what goes there must be in SLURM's own syntax, where a newline (a shell command in the job)
or a space cannot occur.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ...config import ConfigError
from ...run.artifacts import write_atomic
from .summary import COLUMNS, format_table
from .unit import REPO_ROOT


# Per array task; --jobs is the array's %limit (how many units run at once).
SLURM_DEFAULTS = {"jobs": 1, "time": "04:00:00", "partition": None, "cpus": 1}


# SLURM's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (ASCII digits only).
TIME = re.compile(r"[0-9]+(:[0-9]{1,2}){0,2}|[0-9]+-[0-9]{1,2}(:[0-9]{1,2}){0,2}")
# Partition names (a comma-separated list lets SLURM pick the first free one).
PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
FLAGS = {"jobs": "--jobs", "time": "--slurm-time", "partition": "--slurm-partition",
         "cpus": "--slurm-cpus"}


def check_settings(settings: dict) -> dict:
    """The settings (SLURM_DEFAULTS' keys, and force), each value checked: a ConfigError naming
    its flag, or the settings with cpus and jobs as ints."""
    checked = dict(settings)
    for key in ("jobs", "cpus"):
        value = settings.get(key)
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.isascii() and value.isdigit():
            number = int(value)
        if number is None or number < 1:
            raise ConfigError(f"{FLAGS[key]}: {value!r} is not allowed; allowed: an integer "
                              f">= 1")
        checked[key] = number
    time = settings.get("time")
    if not (isinstance(time, str) and TIME.fullmatch(time)):
        raise ConfigError(f"--slurm-time: {time!r} is not allowed; allowed: SLURM's MM, MM:SS, "
                          f"HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS")
    partition = settings.get("partition")
    if partition is not None and not (isinstance(partition, str)
                                      and PARTITION.fullmatch(partition)):
        raise ConfigError(f"--slurm-partition: {partition!r} is not allowed; allowed: a "
                          f"partition name of letters, digits, _ . - (several: a,b)")
    if not isinstance(settings.get("force", False), bool):
        raise ConfigError(f"--force: {settings['force']!r} is not allowed; allowed: true or "
                          f"false")
    return checked


def check_script_path(path: Path, flag: str) -> None:
    """A path for a #SBATCH line: no space, quote, backslash or control character, none of
    which such a line can hold."""
    text = str(path)
    if any(c.isspace() or c in "'\"\\$`" or not c.isprintable() for c in text):
        raise ConfigError(f"{flag}: {text!r} holds a space, a quote or a control character, "
                          f"which a #SBATCH line cannot quote; allowed with --backend slurm: a "
                          f"path without them")


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

    settings = check_settings(settings)
    check_script_path(grid.parent, "--results_dir")
    check_script_path(REPO_ROOT, "the repository path")
    slurm = grid.parent / "slurm"
    (slurm / "logs").mkdir(parents=True, exist_ok=True)  # SLURM does not create it
    command = (f"{shlex.quote(sys.executable)} -m fedprune_core batch run-one --grid "
               f"{shlex.quote(str(grid))} --index \"$SLURM_ARRAY_TASK_ID\""
               + (" --force" if settings.get("force") else ""))
    lines = [
        "#!/bin/bash",
        f"# FedPrune-Sparse batch {grid.parent.name}: array task N runs grid unit N.",
        f"# Follow it: {shlex.quote(sys.executable)} -m fedprune_core batch status --grid "
        f"{shlex.quote(str(grid))} --follow",
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
          f"  python -m fedprune_core batch status --grid {grid} --follow")
    return 0


def settings_from_args(args) -> dict:
    """The SLURM settings of `batch run`'s flags, checked (ConfigError naming the flag)."""
    return check_settings({"jobs": args.jobs, "time": args.slurm_time,
                           "partition": args.slurm_partition, "cpus": args.slurm_cpus,
                           "force": args.force})


def saved_settings(grid: Path) -> dict:
    """The settings of the first submission (slurm/settings.json), checked like flags."""
    saved = grid.parent / "slurm" / "settings.json"
    if not saved.is_file():
        return dict(SLURM_DEFAULTS)
    try:
        settings = json.loads(saved.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"--grid: {saved} is unreadable ({err}); expected the settings "
                          f"batch run wrote (remove it to use the defaults)") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"--grid: {saved} is not a JSON object; expected the settings batch "
                          f"run wrote (remove it to use the defaults)")
    try:
        return check_settings({**SLURM_DEFAULTS, **settings})
    except ConfigError as err:
        raise ConfigError(f"--grid: {saved}: {err}") from None


def run_slurm(grid: Path, records: list[dict], todo: list[dict], args) -> int:
    settings = settings_from_args(args)
    (grid.parent / "slurm").mkdir(exist_ok=True)
    write_atomic(grid.parent / "slurm" / "settings.json", json.dumps(settings, indent=1))
    if records:
        print(format_table(records, COLUMNS))
    code = submit(grid, write_sbatch(grid, [u["index"] for u in todo], settings,
                                     "array.sbatch")) if todo else 0
    if not todo:
        print("nothing to submit: every valid unit is finished")
    return 1 if any(r["status"] == "failed" for r in records) else code


