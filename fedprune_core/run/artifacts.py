"""A run's folder: what is written there, when, and the rules that keep it safe.

`summary.json` is written last and atomically: a folder with it holds a finished run, which is
never replaced without `overwrite`; it records the sha256 of the config.json it was run with, so
an edit to config.json afterwards is seen. A folder with `checkpoint.pt` holds an interrupted
run, continued with `resume`. A folder with neither is taken over by a plain rerun only if it
holds nothing of value (no metrics rows, no final model, no clients.csv).

No run file is written through a symbolic link: one planted in the folder would make the run
overwrite or append to the file it points to. A link where a run file goes is an error naming
it; temporary files are created exclusively (O_EXCL | O_NOFOLLOW), and the rename onto the final
name replaces a link there rather than following it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ..config import ExperimentConfig, experiment_differences
from ..errors import RunExistsError

SUMMARY, CHECKPOINT, CONFIG = "summary.json", "checkpoint.pt", "config.json"
CLIENT_STATES = "client_states.f32"  # residuals of an unfinished run (fl/store.py)
FIGURES = ("accuracy_curve.png", "compression_pruning_curve.png", "round_time_curve.png",
           "experiment_dashboard.png", "partition.png", "class_recall.png", "width_accuracy.png",
           "clients.png")
ARTIFACTS = (CONFIG, "metrics.csv", "clients.csv", "diagnostics.csv", "widths.csv",
             "partition.csv", "run.log", SUMMARY,
             "final_model.pt", CHECKPOINT, CLIENT_STATES, *FIGURES)


class UnsafePathError(RunExistsError):
    """A symbolic link where a run file goes: writing would change the file it points to."""


# What makes a folder without summary.json or checkpoint.pt worth keeping (module doc).
VALUABLE = ("metrics.csv", "final_model.pt", "clients.csv")
NOTEBOOK = "experiment.ipynb"  # the executed notebook (tools/notebook.py)


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


def prepare_run_dir(cfg: ExperimentConfig) -> tuple[Path, bool]:
    """Create or reopen the run folder; returns it and whether to resume from its checkpoint
    (run/checkpoint.py reads and checks it).

    The caller holds the folder's lock (run.guard), so nothing here races another process. A
    folder with files but no checkpoint (a run stopped before its first round ended) holds
    nothing to keep and a plain rerun takes it over, unless it holds something of value
    (VALUABLE: a finished run whose summary.json was deleted), which only `overwrite` replaces.
    """
    run_dir = Path(cfg.results_dir) / cfg.run_name
    refuse_links(run_dir)
    state = run_state(run_dir)
    resume = False
    if state != "new" and cfg.overwrite:
        _remove_artifacts(run_dir)
    elif state == "finished":
        finished_same(cfg)  # other parameters: the error names them
        raise RunExistsError(f"{run_dir} already holds this finished run (the same "
                             f"parameters); pass --overwrite to redo it, or choose another "
                             f"--run_name")
    elif state == "interrupted" and cfg.resume:
        resume = True
    elif state == "interrupted":
        raise RunExistsError(f"{run_dir} holds an interrupted run; pass --resume to continue "
                             f"it or --overwrite to start again")
    elif state == "partial":
        refuse_valuable(run_dir)
        _remove_artifacts(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, resume


def _remove_artifacts(run_dir: Path) -> None:
    for name in ARTIFACTS:
        (run_dir / name).unlink(missing_ok=True)
        (run_dir / f"{name}.tmp").unlink(missing_ok=True)


def valuable_files(run_dir: Path) -> list[str]:
    """The VALUABLE files in `run_dir`: metrics.csv counts only with a row under its header."""
    found = []
    for name in VALUABLE:
        path = run_dir / name
        if not path.exists():
            continue
        if name == "metrics.csv":
            try:
                with open(path, "rb") as f:
                    lines = [line for line in f.read().splitlines() if line.strip()]
            except OSError:
                lines = [b"", b""]  # unreadable: assume it holds rows
            if len(lines) < 2:
                continue
        found.append(name)
    return found


def refuse_valuable(run_dir: Path) -> None:
    """RunExistsError if a folder with neither summary.json nor checkpoint.pt holds something
    of value: it is not a stub to take over silently."""
    kept = valuable_files(run_dir)
    if kept:
        raise RunExistsError(
            f"{run_dir} holds {', '.join(kept)} of a run without {SUMMARY} or {CHECKPOINT} "
            f"(its summary was removed, or it stopped while saving); allowed: --overwrite "
            f"(FORCE=1) to replace them, or another --run_name")


def refuse_links(run_dir: Path, names: tuple[str, ...] = ()) -> None:
    """UnsafePathError naming the first run file of `run_dir` that is a symbolic link."""
    for name in (*ARTIFACTS, *(f"{n}.tmp" for n in ARTIFACTS), NOTEBOOK, *names):
        path = run_dir / name
        if path.is_symlink():
            raise _link_error(path)


def _link_error(path: Path) -> UnsafePathError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return UnsafePathError(f"{path}: a symbolic link{target} where a run writes its file; "
                           f"allowed: a plain file (a run never writes through a link: remove "
                           f"it)")


def remove_stub(run_dir: Path) -> bool:
    """After a run that failed before it wrote its config (setup failed: no data, a bad path,
    Ctrl-C while loading): remove what it left, so the folder holds nothing a rerun must be
    told about. True if it did; a run that got further keeps its files and log, and so does a
    folder holding something of value (VALUABLE)."""
    if ((run_dir / CONFIG).exists() or run_state(run_dir) in ("finished", "interrupted")
            or valuable_files(run_dir)):
        return False
    _remove_artifacts(run_dir)
    return True


def finished_same(cfg: ExperimentConfig) -> Optional[Path]:
    """The run folder of `cfg` if it holds this very run, finished (every route then skips
    it: nothing to do); None if the run is still to be done (or `overwrite` redoes it). A
    finished run with other parameters is a RunExistsError naming them: skipping it would pass
    off its numbers as these parameters'."""
    if cfg.run_name is None or cfg.overwrite:
        return None
    run_dir = Path(cfg.results_dir) / cfg.run_name
    if run_state(run_dir) != "finished":
        return None
    changed = saved_differences(cfg, run_dir)
    if changed:
        raise RunExistsError(f"run_name: {run_dir} holds a finished run with other parameters: "
                             f"{', '.join(changed)}; allowed: the same parameters, --overwrite "
                             f"(make run FORCE=1) to replace it, or another --run_name")
    return run_dir


def saved_differences(cfg: ExperimentConfig, run_dir: Path) -> list[str]:
    """How `cfg` differs from the run saved in `run_dir` (its config.json), as
    experiment_differences: empty when the folder holds this very run (same seed too)."""
    try:
        saved = json.loads((run_dir / CONFIG).read_text())
    except (OSError, ValueError) as err:
        return [f"{CONFIG} unreadable ({err})"]
    if not isinstance(saved, dict):
        return [f"{CONFIG} does not hold a JSON object"]
    if config_edited(run_dir):
        return [f"{CONFIG} was changed after the run (its sha256 is not the one in {SUMMARY})"]
    return experiment_differences(saved, cfg)


def config_sha256(run_dir: Path) -> Optional[str]:
    try:
        return hashlib.sha256((run_dir / CONFIG).read_bytes()).hexdigest()
    except OSError:
        return None


def config_edited(run_dir: Path, summary: Optional[dict] = None) -> bool:
    """Whether config.json is no longer the file the finished run wrote (write_summary); False
    for a run from before summary.json recorded it."""
    if summary is None:
        try:
            summary = json.loads((run_dir / SUMMARY).read_text())
        except (OSError, ValueError):
            return False
    recorded = summary.get("config_sha256") if isinstance(summary, dict) else None
    return recorded is not None and recorded != config_sha256(run_dir)


def _create_tmp(path: Path):
    """`<path>.tmp`, created new (a stale one from a killed writer removed first), never through
    a link (module doc); returns it and its binary file object."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.is_symlink():
        raise _link_error(tmp)
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o666)
    except FileExistsError:  # planted between the unlink and the open
        raise _link_error(tmp) if tmp.is_symlink() else UnsafePathError(
            f"{tmp}: created by another process while this one was writing it; allowed: one "
            f"writer a run folder") from None
    return tmp, os.fdopen(fd, "wb")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to `<path>.tmp`, then rename: a reader never sees half a file. A failed write (a
    full disk) removes the temporary file instead of leaving it to fill the disk further."""
    tmp, out = _create_tmp(path)
    try:
        with out:
            out.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)  # a link at `path` is replaced, not followed
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through `<path>.tmp`, as write_atomic. Into a file object, so that a full disk
    is an OSError (ENOSPC), not torch's RuntimeError."""
    import torch  # here, not at the top: the CLI, a batch's run-one process and the notebook
    # runner import this module and only wait on a kernel; torch would cost each 2 CPU-s, 700 MB

    tmp, out = _create_tmp(path)
    try:
        with out:
            torch.save(obj, out)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        # Ctrl-C or SIGTERM (run.guard raises KeyboardInterrupt subclasses from the handler)
        # inside torch's zip writer surfaces as the writer's RuntimeError on closing: the
        # interrupt is what happened, and what the run must stop with (exit 130/143)
        interrupt = err.__context__
        if not isinstance(err, KeyboardInterrupt) and isinstance(interrupt, KeyboardInterrupt):
            raise interrupt from None
        raise


def write_csv(rows: list[dict], path: Path, columns=None) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    write_atomic(path, frame.to_csv(index=False))
    return frame


def _torchvision_version() -> str | None:
    """torchvision's __version__ (with its build label, e.g. +cu130) read from its version.py:
    importing torchvision for it would keep ~190 MB of its libraries resident all run."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""",
                      path.read_text() if path.is_file() else "", re.M)
    return found.group(1) if found else importlib.metadata.version("torchvision")


def run_metadata() -> dict[str, Any]:
    import torch

    from .. import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {"created": dt.datetime.now().isoformat(timespec="seconds"),
            "fedprune_core": __version__, "git_commit": commit,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": _torchvision_version(), "platform": platform.platform(),
            # the numbers depend on it (oneDNN's sum order), so it is recorded
            "torch_threads": torch.get_num_threads(),
            "command": " ".join(sys.argv)}


def write_config(cfg: ExperimentConfig, run_dir: Path, **meta) -> None:
    write_atomic(run_dir / CONFIG, cfg.to_json(label=cfg.method_label,
                                               _meta={**run_metadata(), **meta}))


def run_logger(run_name: str) -> logging.Logger:
    """The logger whose lines go to the run's run.log (open_log gives it its handlers)."""
    return logging.getLogger(f"fedprune.{run_name}")


def open_log(run_dir: Path, run_name: str, console: bool = True,
             bar: bool = True) -> logging.Logger:
    """run.log gets every line; the console gets the round lines (client lines carry
    extra={'client': True}), written around the progress bar when there is a live one."""
    logger = run_logger(run_name)
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if (run_dir / "run.log").is_symlink():
        raise _link_error(run_dir / "run.log")
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

    def _open(self):
        # O_NOFOLLOW: a run.log planted as a link must not make the run append to its target.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o666)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


class _TqdmHandler(logging.Handler):
    """Console lines that do not break a progress bar."""

    def emit(self, record):
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stdout)


def write_summary(summary: dict, run_dir: Path) -> None:
    """summary.json, the finished mark; it records config.json's sha256 (`summary` itself is
    left as it is) so that the analysis and the batch see a config.json edited after the run."""
    digest = config_sha256(run_dir)
    if digest is not None:
        summary = {**summary, "config_sha256": digest}
    write_atomic(run_dir / SUMMARY, json.dumps(summary, indent=2))
