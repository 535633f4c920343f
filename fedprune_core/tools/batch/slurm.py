"""The SLURM back end: a job array, one task per unit, written to
`results/<batch>/slurm/array.sbatch` and submitted with sbatch when this machine has it
(`batch status` follows it, `batch resubmit-missing` reruns what did not finish).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ...run.artifacts import write_atomic
from .summary import COLUMNS, format_table
from .unit import REPO_ROOT


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


def run_slurm(grid: Path, records: list[dict], todo: list[dict], args) -> int:
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


