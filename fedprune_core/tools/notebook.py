"""Running the experiment notebook through papermill, and keeping its parameters in step.

The `parameters` cell of notebooks/experiment.ipynb is generated from ExperimentConfig
(`make notebooks`), and a test checks they are equal, so the
notebook can never offer a parameter the core does not know, or miss one it does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError, ExperimentConfig
from ..run.artifacts import RunExistsError, default_run_name, run_state, saved_differences

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
EXPERIMENT_NOTEBOOK = NOTEBOOKS / "experiment.ipynb"
KERNEL = "python3"  # inside the venv this kernel is the venv's own interpreter
OUTPUT_NAME = "experiment.ipynb"


def parameters_source() -> str:
    """The experiment notebook's `parameters` cell: every field, its default, its help."""
    lines = ["# Parameters: generated from fedprune_core.config.ExperimentConfig",
             "# (make notebooks). papermill overrides them."]
    for f in dataclasses.fields(ExperimentConfig):
        help_text = f.metadata["help"]
        if f.metadata["choices"]:
            help_text += f" One of: {', '.join(f.metadata['choices'])}."
        # help above the line: papermill's parser rejects some trailing comments
        lines += [f"# {help_text}", f"{f.name} = {f.default!r}"]
    return "\n".join(lines)


def config_from_namespace(namespace: dict[str, Any]) -> ExperimentConfig:
    """The notebook's config from its variables (after papermill injected its own)."""
    names = [f.name for f in dataclasses.fields(ExperimentConfig)]
    return ExperimentConfig.from_dict({name: namespace[name] for name in names})


def notebook_parameters_cell(path: Path = EXPERIMENT_NOTEBOOK) -> str:
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def use_project_root() -> None:
    """In JupyterLab a kernel starts in notebooks/: move to the project root so relative
    paths (results/, data/) mean what they mean on the command line and under papermill."""
    if Path.cwd().resolve() == NOTEBOOKS.resolve():
        os.chdir(REPO_ROOT)


def output_path(cfg: ExperimentConfig) -> Path:
    return Path(cfg.results_dir) / cfg.run_name / OUTPUT_NAME


def finished_run(cfg: ExperimentConfig) -> Optional[Path]:
    """The executed notebook of `cfg`'s finished run, if its folder already holds exactly this
    run (nothing to do); None if the run is to be done. A finished run with other parameters
    is an error naming them: skipping it would pass off its numbers as these parameters'."""
    if cfg.run_name is None or cfg.overwrite:
        return None
    run_dir = Path(cfg.results_dir) / cfg.run_name
    if run_state(run_dir) != "finished":
        return None
    changed = saved_differences(cfg, run_dir)
    if changed:
        raise ConfigError(f"run_name: {run_dir} holds a finished run with other parameters: "
                          f"{', '.join(changed)}; allowed: the same parameters, --overwrite "
                          f"(make run FORCE=1) to replace it, or another --run_name")
    return output_path(cfg)


def execute_experiment(cfg: ExperimentConfig, *, notebook: Path = EXPERIMENT_NOTEBOOK,
                       kernel: str = KERNEL, cwd: Optional[Path] = None,
                       log_output: bool = False) -> Path:
    """Execute the experiment notebook for `cfg`; the executed copy lands in the run folder.

    The run folder is locked (run.guard) for the whole execution and checked before papermill
    starts: papermill writes its output notebook first, and must not replace the notebook of a
    finished run, nor of a run another process is working on (a CLI run on the same folder is
    refused, as this runner is while one works there). The kernel's own run_experiment works
    under this lock: the runner names itself in guard.OWNER_ENV, which the kernel inherits. A
    run that never started (its setup failed) leaves no folder behind.
    """
    import papermill

    from ..checks import check_results_dir
    from ..run.artifacts import refuse_links, refuse_valuable
    from ..run.guard import OWNER_ENV, lock_run_dir

    check_results_dir(cfg.results_dir)
    if cfg.run_name is None:
        cfg = cfg.replace(run_name=default_run_name())
    run_dir = Path(cfg.results_dir) / cfg.run_name
    created = not run_dir.exists()
    lock = lock_run_dir(run_dir)
    try:
        state = run_state(run_dir)
        if state == "finished" and not cfg.overwrite:
            raise RunExistsError(f"{run_dir} already holds a finished run; pass overwrite "
                                 f"(--overwrite, FORCE=1) to replace it")
        if state == "interrupted" and not (cfg.resume or cfg.overwrite):
            raise RunExistsError(f"{run_dir} holds an interrupted run; pass resume or overwrite")
        if state == "partial" and not cfg.overwrite:
            refuse_valuable(run_dir)
        refuse_links(run_dir)  # experiment.ipynb among them
        # Under papermill a widget bar would be saved frozen at 0%: use the text bar.
        parameters = {**cfg.to_dict(), "progress": "off" if cfg.progress == "off" else "text"}
        out = output_path(cfg)
        saved_owner = os.environ.get(OWNER_ENV)
        os.environ[OWNER_ENV] = str(os.getpid())  # the kernel papermill starts inherits it
        try:
            papermill.execute_notebook(
                str(notebook), str(out), parameters=parameters, kernel_name=kernel,
                cwd=str(cwd or os.getcwd()), progress_bar=False, log_output=log_output)
        finally:
            if saved_owner is None:
                os.environ.pop(OWNER_ENV, None)
            else:
                os.environ[OWNER_ENV] = saved_owner
    except BaseException:
        if created and run_state(run_dir) == "new":  # the kernel's run never got going
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        lock.release()
    return out
