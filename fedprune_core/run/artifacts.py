"""A run's folder: what is written there, when, and the rules that keep it safe.

`summary.json` is written last and atomically: a folder with it holds a finished run, which is
never replaced without `overwrite`. A folder with `checkpoint.pt` holds an interrupted run,
continued with `resume`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import torch

from ..config import ConfigError, ExperimentConfig, experiment_differences

SUMMARY, CHECKPOINT, CONFIG = "summary.json", "checkpoint.pt", "config.json"
CLIENT_STATES = "client_states.f32"  # residuals of an unfinished run (fl/store.py)
FIGURES = ("accuracy_curve.png", "compression_pruning_curve.png", "round_time_curve.png",
           "experiment_dashboard.png", "partition.png", "class_recall.png", "width_accuracy.png")
ARTIFACTS = (CONFIG, "metrics.csv", "clients.csv", "diagnostics.csv", "partition.csv", "run.log", SUMMARY,
             "final_model.pt", CHECKPOINT, CLIENT_STATES, *FIGURES)


class RunExistsError(FileExistsError):
    """The run folder already holds a run that the user did not ask to replace or resume."""


def default_run_name() -> str:
    return dt.datetime.now().strftime("run_%Y%m%d_%H%M%S")


def run_state(run_dir: Path) -> str:
    """'new', 'finished', 'interrupted' (has a checkpoint) or 'partial' (files, no checkpoint)."""
    if (run_dir / SUMMARY).exists():
        return "finished"
    if (run_dir / CHECKPOINT).exists():
        return "interrupted"
    if any((run_dir / name).exists() for name in ARTIFACTS):
        return "partial"
    return "new"


def prepare_run_dir(cfg: ExperimentConfig) -> tuple[Path, Optional[dict]]:
    """Create or reopen the run folder; returns it and the checkpoint to resume from, if any.

    The caller holds the folder's lock (run.guard), so nothing here races another process. A
    folder with files but no checkpoint (a run stopped before its first round ended) holds
    nothing to keep: a plain rerun takes it over.
    """
    run_dir = Path(cfg.results_dir) / cfg.run_name
    state = run_state(run_dir)
    checkpoint = None
    if state != "new" and cfg.overwrite:
        _remove_artifacts(run_dir)
    elif state == "finished":
        raise RunExistsError(f"{run_dir} already holds a finished run; pass --overwrite to "
                             f"replace it, or choose another --run_name")
    elif state == "interrupted" and cfg.resume:
        checkpoint = torch.load(run_dir / CHECKPOINT, weights_only=False)
        _check_same_experiment(cfg, checkpoint["config"], run_dir)
    elif state == "interrupted":
        raise RunExistsError(f"{run_dir} holds an interrupted run; pass --resume to continue "
                             f"it or --overwrite to start again")
    elif state == "partial":
        _remove_artifacts(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, checkpoint


def _remove_artifacts(run_dir: Path) -> None:
    for name in ARTIFACTS:
        (run_dir / name).unlink(missing_ok=True)
        (run_dir / f"{name}.tmp").unlink(missing_ok=True)


def remove_stub(run_dir: Path) -> bool:
    """After a run that failed before it wrote its config (setup failed: no data, a bad path,
    Ctrl-C while loading): remove what it left, so the folder holds nothing a rerun must be
    told about. True if it did; a run that got further keeps its files and log."""
    if (run_dir / CONFIG).exists() or run_state(run_dir) in ("finished", "interrupted"):
        return False
    _remove_artifacts(run_dir)
    return True


def saved_differences(cfg: ExperimentConfig, run_dir: Path) -> list[str]:
    """How `cfg` differs from the run saved in `run_dir` (its config.json), as
    experiment_differences: empty when the folder holds this very run (same seed too)."""
    try:
        saved = json.loads((run_dir / CONFIG).read_text())
    except (OSError, ValueError) as err:
        return [f"{CONFIG} unreadable ({err})"]
    return experiment_differences(saved, cfg)


def _check_same_experiment(cfg: ExperimentConfig, saved: dict, run_dir: Path) -> None:
    changed = experiment_differences(saved, cfg)
    if changed:
        raise ConfigError(f"resume: {run_dir} was started with other parameters: "
                          f"{', '.join(changed)}; resume with the same parameters, or use "
                          f"--overwrite")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to `<path>.tmp`, then rename: a reader never sees half a file. A failed write (a
    full disk) removes the temporary file instead of leaving it to fill the disk further."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through `<path>.tmp`, as write_atomic. Into a file object, so that a full disk
    is an OSError (ENOSPC), not torch's RuntimeError."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as out:
            torch.save(obj, out)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_csv(rows: list[dict], path: Path, columns=None) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    write_atomic(path, frame.to_csv(index=False))
    return frame


def run_metadata() -> dict[str, Any]:
    import torchvision

    from .. import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {"created": dt.datetime.now().isoformat(timespec="seconds"),
            "fedprune_core": __version__, "git_commit": commit,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform(),
            # the numbers depend on it (oneDNN's sum order), so it is recorded
            "torch_threads": torch.get_num_threads(),
            "command": " ".join(sys.argv)}


def write_config(cfg: ExperimentConfig, run_dir: Path, **meta) -> None:
    write_atomic(run_dir / CONFIG, cfg.to_json(label=cfg.method_label,
                                               _meta={**run_metadata(), **meta}))


def open_log(run_dir: Path, run_name: str, console: bool = True,
             bar: bool = True) -> logging.Logger:
    """run.log gets every line; the console gets the round lines (client lines carry
    extra={'client': True}), written around the progress bar when there is a live one."""
    logger = logging.getLogger(f"fedprune.{run_name}")
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    file_handler = _QuietFileHandler(run_dir / "run.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(message)s"))
    logger.addHandler(file_handler)
    if console:
        console_handler = _TqdmHandler() if bar else logging.StreamHandler(sys.stdout)
        console_handler.addFilter(lambda record: not getattr(record, "client", False))
        console_handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console_handler)
    return logger


def close_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


class _QuietFileHandler(logging.FileHandler):
    """A log line that cannot be written (a full disk) is dropped, not printed to stderr as a
    traceback: the run's next file write fails with a clear error instead."""

    def handleError(self, record):
        pass


class _TqdmHandler(logging.Handler):
    """Console lines that do not break a progress bar."""

    def emit(self, record):
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stdout)


def write_summary(summary: dict, run_dir: Path) -> None:
    write_atomic(run_dir / SUMMARY, json.dumps(summary, indent=2))
