"""What can stop a run, and the one mapping from it to an exit status and one line.

Every entry point (`run`, `notebook`, `deploy`, the deployment's ServerApp, batches) reports a
failure through `exit_status`, so a missing dataset or a diverged run ends the same way
whichever route started it. This module imports nothing heavy (no torch): the command line
maps errors before and after torch is loaded.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional


class ConfigError(ValueError):
    """An invalid parameter: the message names the parameter and what is allowed."""


class DataUnavailableError(RuntimeError):
    """The dataset is neither on disk nor downloadable, or its files are malformed."""


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class RunExistsError(FileExistsError):
    """The run folder already holds a run that the user did not ask to replace or resume."""


class DeploymentError(RuntimeError):
    """The deployment cannot go on (nodes missing or mismatched, a round without any update):
    the run stops, its last finished round's checkpoint kept."""


class CommandError(Exception):
    """A one-line failure of a command with its own exit status (the deployment's launcher)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, Dask and `kill` send), handled like Ctrl-C: the run stops after
    logging where it stopped, and the last finished round's checkpoint is kept."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# (error class, exit status, what the line names before the error's own words): the input's
# fault is 2, a run that failed on its own is 1
STATUSES = ((ConfigError, 2, ""), (RunExistsError, 2, ""), (DataUnavailableError, 2, "data_root: "),
            (DivergenceError, 1, ""), (DeploymentError, 1, ""))


def exit_status(err: BaseException, run_dir: Optional[Path] = None) -> Optional[tuple[int, str]]:
    """(exit status, the one line to print) for an error a user can act on; None for a bug
    (the caller shows its traceback). `run_dir`: the run an interruption or a write failure
    left behind."""
    if isinstance(err, KeyboardInterrupt):
        return interrupted(err, run_dir)
    if isinstance(err, CommandError):
        return err.status, f"error: {err}"
    for kind, status, prefix in STATUSES:
        if isinstance(err, kind):
            return status, f"error: {prefix}{err}"
    if isinstance(err, OSError):  # a full disk, a folder removed under the run
        where = err.filename or run_dir or "the run folder"
        return 2, (f"error: results_dir: writing {where} failed: {err.strerror or err}; the "
                   f"last finished round's checkpoint is kept (free space, then rerun with "
                   f"--resume)")
    return None


def status_of_name(name: str) -> int:
    """The exit status of an error known only by its class name (a notebook kernel's: papermill
    reports `ename`), subclasses included: 2 for the input's faults, else 1."""
    inputs = {"ConfigError", "CheckpointError", "RunExistsError", "RunLockedError",
              "UnsafePathError", "UnsafeLockError", "DataUnavailableError"}
    return 2 if name in inputs else 1


def interrupted(err: KeyboardInterrupt, run_dir: Optional[Path] = None) -> tuple[int, str]:
    """Ctrl-C (130) or SIGTERM (143): one line saying what is left (the run has logged where it
    stopped). By the class name, not isinstance: Ctrl-C may have cut an import short."""
    terminated = type(err).__name__ == "Terminated"
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    status = 128 + (getattr(err, "signum", signal.SIGTERM) if terminated else signal.SIGINT)
    if run_dir is not None and (Path(run_dir) / "checkpoint.pt").exists():
        return status, f"{how}: the last finished round's checkpoint is kept; rerun with --resume"
    return status, f"{how}: stopped before a round finished; nothing to resume"
