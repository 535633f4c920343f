"""Running the experiment notebook through papermill, and keeping its parameters in step.

The `parameters` cell of notebooks/experiment.ipynb is generated from ExperimentConfig
(`make notebooks`), and a test checks they are equal, so the
notebook can never offer a parameter the core does not know, or miss one it does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

from ..config import ExperimentConfig
from ..run.progress import LiveLines

# The run-folder helpers (run.artifacts) import torch: imported where used, so this module
# stays light for the Jupyter server that loads its save hook (refresh_git_index).

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
EXPERIMENT_NOTEBOOK = NOTEBOOKS / "experiment.ipynb"
KERNEL = "python3"  # inside the venv this kernel is the venv's own interpreter
OUTPUT_NAME = "experiment.ipynb"


# The parameters a study changes, in the notebook's short parameters cell (with a params file);
# every other field of ExperimentConfig can be passed as well (papermill -p NAME VALUE).
CELL_PARAMETERS = ("method", "rounds", "seed", "dataset", "model", "pruning_mode",
                   "pruning_ratio", "sparsify_method", "sparsity_ratio", "run_name", "resume")


def parameters_source() -> str:
    """The experiment notebook's `parameters` cell: a params file and the parameters a study
    changes, each None (= the params file's value, else ExperimentConfig's default)."""
    lines = ["# Parameters (papermill overrides them). None = the params file's value, else the",
             "# default. Any other parameter can be given too (python -m fedprune_core run --help",
             "# lists them all); `python -m fedprune_core notebook --params FILE` runs this.",
             'params_file = "params/default.yaml"  # a YAML file of parameters ("": none)']
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in CELL_PARAMETERS:
            lines.append(f"{f.name} = None  # default {f.default!r}")
    return "\n".join(lines)


def config_from_namespace(namespace: dict[str, Any]) -> ExperimentConfig:
    """The notebook's config from its variables (after papermill injected its own): the params
    file, then every parameter the namespace sets (None: not set)."""
    given = {f.name: namespace[f.name] for f in dataclasses.fields(ExperimentConfig)
             if namespace.get(f.name) is not None}
    files = [namespace["params_file"]] if namespace.get("params_file") else []
    return ExperimentConfig.from_yaml(*files, overrides=given)


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
    run (nothing to do); None if the run is to be done; a RunExistsError naming the parameters
    if it holds a finished run with others (run.artifacts.finished_same)."""
    from ..run.artifacts import finished_same  # torch: only when a run is at hand

    return None if finished_same(cfg) is None else output_path(cfg)


@contextlib.contextmanager
def _papermill_quiet():
    """papermill's own INFO lines (input and output paths, the kernel's name) kept from the
    terminal, and its "Passed unknown parameter" warnings: the runner passes every field of the
    config on purpose (the notebook's cell names only the few a study changes, and
    config_from_namespace reads the rest). Its other warnings still reach the terminal."""
    logger = logging.getLogger("papermill")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    logger.addFilter(_not_unknown_parameter)
    try:
        yield
    finally:
        logger.removeFilter(_not_unknown_parameter)
        logger.setLevel(level)


def _not_unknown_parameter(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Passed unknown parameter")


def execute_quietly(notebook: Path, out: Path, parameters: dict, *, kernel: str = KERNEL,
                    cwd: Optional[Path] = None, **streams) -> None:
    """papermill without its noise: no progress bar, no INFO lines, and the kernel's own log
    (its TCP warning) kept from the terminal; `streams` (stdout_file, stderr_file) passes the
    kernel's printed output on."""
    import papermill

    with _papermill_quiet():
        papermill.execute_notebook(
            str(notebook), str(out), parameters=parameters, kernel_name=kernel,
            cwd=str(cwd or os.getcwd()), progress_bar=False, log_output=False,
            extra_arguments=["--IPKernelApp.log_level=ERROR"], **streams)


def execute_experiment(cfg: ExperimentConfig, *, notebook: Path = EXPERIMENT_NOTEBOOK,
                       kernel: str = KERNEL, cwd: Optional[Path] = None,
                       log_output: bool = False) -> Path:
    """Execute the experiment notebook for `cfg`; the executed copy lands in the run folder.

    With `log_output` the kernel's printed output (the run's progress: a line per client update
    with the time left, a line per round) streams to this process's stdout and stderr as it is
    printed; nothing else papermill could log does: no cell banners, no display objects' reprs
    (a `<Markdown object>`, the whole parameter table), no kernel start-up warnings.

    The run folder is locked (run.guard) for the whole execution and checked before papermill
    starts: papermill writes its output notebook first, and must not replace the notebook of a
    finished run, nor of a run another process is working on (a CLI run on the same folder is
    refused, as this runner is while one works there). The kernel's own run_experiment works
    under this lock: the runner names itself in guard.OWNER_ENV, which the kernel inherits. A
    run that never started (its setup failed) leaves no folder behind.
    """

    from ..checks import check_results_dir
    from ..run.artifacts import (RunExistsError, default_run_name, refuse_links,
                                 refuse_valuable, run_state)
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
        parameters = {**cfg.to_dict(), "params_file": "",  # the config says everything
                      "progress": "off" if cfg.progress == "off" else "text"}
        out = output_path(cfg)
        saved_owner = os.environ.get(OWNER_ENV)
        os.environ[OWNER_ENV] = str(os.getpid())  # the kernel papermill starts inherits it
        try:
            # on a terminal the kernel's client-update lines become one live bar per round
            live = LiveLines(sys.stdout) if log_output else None
            streams = {"stdout_file": live, "stderr_file": sys.stderr} if live else {}
            try:
                execute_quietly(notebook, out, parameters, kernel=kernel, cwd=cwd, **streams)
            finally:
                if live is not None:
                    live.close()
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


# ---------------------------------------------------------------- what the run report shows
# The experiment notebook's cells call these, so the notebook stays thin and the report reads
# the same in JupyterLab, in its HTML and in its PDF: the headline first, tables that fit a
# page (units in the headers, rounded, no index), the full parameter list folded at the end.

REPORT_CSS = """<style>
.fp-card { font-size: 13px; margin: 4px 0 8px 0; }
.fp-head { color: #444; margin-bottom: 6px; }
.fp-tiles { display: flex; flex-wrap: wrap; gap: 6px; }
.fp-tile { flex: 1 1 150px; max-width: 220px; border: 1px solid #d0d7de; border-radius: 4px;
           padding: 5px 8px; background: #f6f8fa; break-inside: avoid; }
.fp-tile.fp-main { border-color: #0969da; background: #ddf4ff; }
.fp-value { font-size: 20px; font-weight: 600; line-height: 1.2; }
.fp-label { color: #333; line-height: 1.25; }
.fp-label small, .fp-note { color: #666; font-size: 11px; }
.fp-note { margin: 6px 0 0 0; }
.fp-warn { color: #9a6700; margin: 6px 0 0 0; }
table.fp-table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
table.fp-table th { text-align: right; padding: 2px 6px; border-bottom: 1px solid #999;
                    vertical-align: bottom; }
table.fp-table td { text-align: right; padding: 1px 6px; font-variant-numeric: tabular-nums; }
table.fp-table th:first-child, table.fp-table td:first-child { text-align: left; }
.fp-params { columns: 3 16em; font-size: 11px; line-height: 1.35; }
.fp-params div { break-inside: avoid; }
details.fp-fold > summary { cursor: pointer; color: #0969da; }
</style>"""

# the per-round table: metrics.csv column -> (header with its unit, scale, format)
ROUND_COLUMNS = {
    "round": ("Round", 1, "{:.0f}"), "test_accuracy": ("Test acc. (%)", 1, "{:.2f}"),
    "test_loss": ("Test loss", 1, "{:.3f}"), "train_loss": ("Train loss", 1, "{:.3f}"),
    "avg_transmitted_ratio": ("Sent (%)", 100, "{:.2f}"),
    "avg_pruning_ratio": ("Pruning ratio", 1, "{:.2f}"),
    "uplink_bytes": ("Uplink (MB)", 1e-6, "{:.3f}"),
    "uplink_dense_bytes": ("Dense uplink (MB)", 1e-6, "{:.2f}"),
    "client_train_flops": ("Client GFLOP", 1e-9, "{:.1f}"),
    "simulated_round_time_sec": ("Simulated (s)", 1, "{:.1f}"),
    "wall_time_sec": ("Wall (s)", 1, "{:.1f}")}


def _e(value) -> str:
    import html

    return html.escape(str(value))


def _tile(value: str, label: str, detail: str = "", main: bool = False) -> str:
    small = f"<br><small>{detail}</small>" if detail else ""
    return (f'<div class="fp-tile{" fp-main" if main else ""}"><div class="fp-value">{value}'
            f'</div><div class="fp-label">{label}{small}</div></div>')


def summary_card(summary: dict, config: ExperimentConfig | None = None) -> str:
    """The run report's headline as HTML: tail accuracy (the headline), final, best (labelled
    as selected on the test set), uplink MB with its compression, the client FLOP saving,
    never-trained units, wall and simulated time; for structured runs the tail accuracy at
    each deployed width; warnings when the tail is shorter than asked or the run stopped at its
    target."""
    s = summary
    untrained = s.get("never_trained_units") or {}
    rounds = config.rounds if config is not None else s.get("rounds_completed")
    head = (f"<b>{_e(s.get('label', ''))}</b> &middot; run <code>{_e(s.get('run_name', ''))}"
            f"</code> &middot; seed {_e(s.get('seed', ''))} &middot; "
            f"{s.get('rounds_completed')} of {rounds} rounds")
    trained_x = s.get("compression_x_trained")
    per_update = s.get("client_train_gflops_per_update")
    tiles = [
        _tile(f"{s['tail_test_accuracy']:.2f}%", "Tail test accuracy",
              f"mean of the last {s.get('tail_rounds', '?')} evaluated rounds: the headline",
              main=True),
        _tile(f"{s['final_test_accuracy']:.2f}%", "Final round",
              "one round: non-IID rounds swing"),
        _tile(f"{s['best_test_accuracy']:.2f}%", f"Best, round {s.get('best_round', '?')}",
              "selected on the test set: optimistic"),
        _tile(f"{s['total_uplink_mb']:,.2f} MB",
              f"Uplink, {s['compression_x']:,.1f}× less than dense FedAvg",
              f"{trained_x:,.1f}× less than dense updates of what was trained"
              if trained_x is not None else ""),
        _tile(f"{s['flop_saving_pct']:.1f}%", "Client training FLOPs saved",
              f"{s.get('total_client_train_gflops', float('nan')):,.0f} GFLOP in all"
              + (f"; {per_update:,.2f} an update" if per_update is not None else "")),
        _tile(f"{sum(untrained.values()):,}", "Never-trained units",
              ", ".join(f"{k} {v}" for k, v in untrained.items() if v) or "every unit trained"),
        _tile(f"{s['wall_time_sec']:,.1f} s", "Wall time",
              f"simulated {s.get('simulated_time_sec', float('nan')):,.1f} s "
              f"(slowest client a round)")]
    warnings = []
    if s.get("tail_shorter_than_asked"):
        warnings.append(f"The run evaluated {s.get('tail_rounds')} round(s), fewer than "
                        f"tail_rounds = {s.get('tail_rounds_asked')}: its tail accuracy "
                        f"averages those alone; compare it only with runs of the same length.")
    if s.get("target_accuracy") is not None:
        warnings.append(
            f"Target {s['target_accuracy']:g}%: " + (
                f"reached at round {s['target_round']}"
                + (" (the run stopped there)" if s.get("stopped_at_target") else "")
                if s.get("target_round") is not None else "not reached") + ".")
    parts = [REPORT_CSS, '<div class="fp-card">', f'<div class="fp-head">{head}</div>',
             f'<div class="fp-tiles">{"".join(tiles)}</div>']
    parts += [f'<p class="fp-warn">{_e(w)}</p>' for w in warnings]
    parts.append(width_summary(s))
    parts.append("</div>")
    return "\n".join(p for p in parts if p)


def width_summary(summary: dict) -> str:
    """Structured runs: the tail accuracy at each width clients train beside the full width
    the server holds (the headline), as an HTML table; '' for runs with one width."""
    widths = summary.get("widths") or []
    if len(widths) < 2:
        return ""
    best = (summary.get("best_width") or {}).get("ratio")
    rows = []
    for w in widths:
        name = "full width (server)" if w["ratio"] == 0 else f"ratio {w['ratio']:.2f}"
        if w["ratio"] == best:
            name += " &larr; best (selected on the test set)"
        rows.append(f"<tr><td>{name}</td><td>{w['width']:.2f}</td>"
                    f"<td>{w['train_flops_per_sample'] / 1e6:,.2f}</td>"
                    f"<td>{w.get('clients', '')}</td><td>{w['tail_test_accuracy']:.2f}</td>"
                    f"<td>{w.get('evaluations', '')}</td></tr>")
    rows = "".join(rows)
    return ('<p class="fp-note">Tail accuracy at each width clients train, on the same test '
            'set (the full width is the headline):</p><table class="fp-table"><thead><tr>'
            "<th>Width</th><th>Kept fraction</th><th>Training MFLOP a sample</th>"
            "<th>Clients</th><th>Tail acc. (%)</th><th>Evaluations</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def round_table(metrics) -> str:
    """metrics.csv as the report prints it: ROUND_COLUMNS' headers with units, rounded,
    no index, '–' for a round not evaluated."""
    import math

    columns = [c for c in ROUND_COLUMNS if c in metrics]
    head = "".join(f"<th>{ROUND_COLUMNS[c][0]}</th>" for c in columns)
    body = []
    for row in metrics[columns].itertuples(index=False):
        cells = []
        for c, v in zip(columns, row):
            _, scale, fmt = ROUND_COLUMNS[c]
            missing = v is None or (isinstance(v, float) and math.isnan(v))
            cells.append(f"<td>{'–' if missing else fmt.format(v * scale)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'{REPORT_CSS}<table class="fp-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _plain(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items()) or "–"
    return "–" if value is None else str(value)


def folded(title: str, values: dict) -> str:
    """`values` as name = value lines in columns, inside a folded <details> (opened for print)."""
    lines = "".join(f"<div><code>{_e(k)}</code> = {_e(_plain(v))}</div>"
                    for k, v in values.items())
    return (f'{REPORT_CSS}<details class="fp-fold"><summary>{_e(title)}</summary>'
            f'<div class="fp-params">{lines}</div></details>')


def parameters_folded(config: ExperimentConfig) -> str:
    """Every parameter of the run, folded (the report's last section)."""
    values = config.to_dict()
    return folded(f"All {len(values)} parameters", values)


def summary_folded(summary: dict) -> str:
    """Every number of summary.json but the artifact paths and the widths (in the card)."""
    values = {k: v for k, v in summary.items()
              if k not in ("artifacts", "widths", "best_width")}
    return folded(f"All {len(values)} numbers of summary.json", values)


def show_figure(path: Path, alt: str) -> None:
    """A run figure in the notebook, with its alternative text (the HTML report carries it),
    at its printed size (analysis.display_width): text the same size in every figure."""
    from IPython.display import Image, display

    from ..analysis.figures import display_width

    display(Image(filename=str(path), width=display_width(path), alt=alt))


def client_figure(result) -> Optional[Path]:
    """The run's clients.png (run/plots.client_figures), drawn from clients.csv when the run
    did not write one; None without client rows."""
    import pandas as pd

    from ..run.plots import client_figures

    path = Path(result.run_dir) / "clients.png"
    if not path.exists():
        clients = (result.clients if getattr(result, "clients", None) is not None
                   else pd.read_csv(Path(result.run_dir) / "clients.csv"))
        client_figures(clients, Path(result.run_dir), result.summary.get("label", ""))
    return path if path.exists() else None


# ---------------------------------------------------------------- saving in JupyterLab

def refresh_git_index(model=None, os_path: str = "", contents_manager=None, **kwargs) -> None:
    """A Jupyter server post-save hook: after a tracked notebook is saved, if what git's
    nbstripout filter makes of it is what git already holds (`git diff --quiet`), refresh its
    index entry (`git add`: the same content, new stat data), so `git status` stays clean.

    Without it a notebook opened and saved in JupyterLab is listed as modified even when its
    stripped content is unchanged: git takes a file whose size changed (outputs, the kernel's
    language_info) as modified without running the clean filter. A real change (an edited
    cell) is left alone, shown as modified. Installed for `make lab` by `make venv`
    (jupyter_server_config.d/fedprune-sparse.json in the venv)."""
    import subprocess

    path = Path(os_path)
    if path.suffix != ".ipynb" or not path.is_file():
        return
    git = ["git", "-C", str(path.parent)]
    try:
        tracked = subprocess.run([*git, "ls-files", "--error-unmatch", "--", path.name],
                                 capture_output=True, timeout=60).returncode == 0
        if tracked and subprocess.run([*git, "diff", "--quiet", "--", path.name],
                                      capture_output=True, timeout=120).returncode == 0:
            subprocess.run([*git, "add", "--", path.name], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):  # no git here: nothing to keep clean
        return


def main(argv=None) -> int:
    """`python -m fedprune_core.tools.notebook IN OUT -p NAME VALUE ...`: papermill's command
    line for `make analysis`, quiet (execute_quietly); values typed as papermill's -p types
    them (numbers, booleans, None, else text)."""
    import argparse

    from papermill.cli import _resolve_type

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)
    parameters = {name: _resolve_type(value) for name, value in args.parameter}
    execute_quietly(args.notebook, args.out, parameters)
    print(wrote(args.out))
    return 0


def wrote(out: Path) -> str:
    """One line on what an executed notebook left beside it (make analysis: its tables as
    .csv/.md/.tex and figures as .png/.pdf)."""
    folder = out.parent
    tables = sorted(p.stem for p in folder.glob("*.csv"))
    figures = sorted(p.stem for p in folder.glob("*.png"))
    return (f"wrote {out}" + (f" and, in {folder}/, {len(tables)} tables (.csv .md .tex) and "
                              f"{len(figures)} figures (.png .pdf)" if tables or figures else ""))


if __name__ == "__main__":
    sys.exit(main())
