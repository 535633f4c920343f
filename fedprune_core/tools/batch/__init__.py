"""Batches of runs: params files x seeds x overrides, each run through the experiment notebook.

The unit of work is one run. `batch run` expands the grid into `results/<batch>/grid.jsonl` (a
JSON line per unit: index, run_name, params file, seed, the resolved config or the ConfigError
that makes it invalid), validating every config before anything runs (grid.py). Each unit is
then executed by `python -m fedprune_core batch run-one --grid GRID --index N`, in its own
process (unit.py), on one of three back ends:

- `local` (local.py): JOBS units at once on this machine;
- `dask` (dask_backend.py): units submitted to a Dask cluster, `$DASK_SCHEDULER` if set, else a
  LocalCluster of JOBS one-thread worker processes;
- `slurm` (slurm.py): a job array, one task per unit, written to
  `results/<batch>/slurm/array.sbatch` (`batch status` follows it, `batch resubmit-missing`
  reruns what did not finish).

A unit is idempotent: a finished run is skipped (`--force` redoes it), a half-written one is
resumed from its checkpoint, and a finished run with other parameters (config.py's one
definition of the same experiment) is reported, never passed off as this unit's. A failed unit
is retried once on every back end, except when the failure is a ConfigError (a retry cannot fix
a parameter). Per-unit output goes to `results/<batch>/logs/<run_name>.log`, the unit's result
to `results/<batch>/units/<index>.json`, and the batch summary to `results/<batch>/batch.json`
(summary.py). cli.py wires the commands.
"""

from .cli import add_batch_commands
from .grid import (GRID, expand_grid, load_record, other_parameters, parse_sets, read_grid,
                   save_record, settled, write_grid)
from .slurm import SLURM_DEFAULTS, array_spec, submit, write_sbatch
from .summary import SUMMARY, finish, format_table, unit_state, write_summary
from .unit import FAIL_ENV, PARENT_ENV, REPO_ROOT, UnitFailed, launch_unit, run_one

__all__ = ["FAIL_ENV", "GRID", "PARENT_ENV", "REPO_ROOT", "SLURM_DEFAULTS", "SUMMARY",
           "UnitFailed", "add_batch_commands", "array_spec", "expand_grid", "finish",
           "format_table", "launch_unit", "load_record", "other_parameters", "parse_sets",
           "read_grid", "run_one", "save_record", "settled", "submit", "unit_state",
           "write_grid", "write_sbatch"]
