"""Analysis across runs: load results/ into pandas, compare experiments over seeds, tables,
figures.

Reads only the artifacts a run writes (config.json, metrics.csv, clients.csv, partition.csv,
summary.json), so it does not depend on the simulation code and works on results copied from
elsewhere. A row is one experiment (loading.py): runs pooled as its seeds share their label and
every parameter but the seed. Tables (tables.py) go out as CSV, Markdown and LaTeX (booktabs);
figures (figures.py) as PNG (300 DPI) and PDF.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .figures import (FIGURE_DPI, accuracy_curves, plot_accuracy_vs_flops,
                      plot_accuracy_vs_round, plot_accuracy_vs_uplink, plot_client_pruning,
                      plot_partition)
from .loading import (BASELINE_LABEL, CONFIG_FIELDS, RunTable, label_order, load_runs,
                      resolve_results_dir, split_experiments)
from .reproduce import reproduce_table, write_reproduce
from .tables import (RUN_COLUMNS, STAT_COLUMNS, label_stats, mean_ci, method_table,
                     rounds_to_target, run_table, write_table)

__all__ = ["reproduce_table", "write_reproduce", "BASELINE_LABEL", "CONFIG_FIELDS", "FIGURE_DPI", "RUN_COLUMNS", "STAT_COLUMNS",
           "RunTable", "accuracy_curves", "analyze", "label_order", "label_stats", "load_runs",
           "mean_ci", "method_table", "plot_accuracy_vs_flops", "plot_accuracy_vs_round",
           "plot_accuracy_vs_uplink", "plot_client_pruning", "plot_partition",
           "resolve_results_dir", "rounds_to_target", "run_table", "split_experiments",
           "write_table"]


def analyze(results_dir: str | Path = "results", out_dir: str | Path | None = None,
            target_accuracy: float = 90.0) -> dict:
    """Load the runs in results_dir and write every table and figure into out_dir.

    out_dir defaults to <results_dir>/analysis (never read back as a run: it has no config.json).
    What the loading had to say (runs skipped, experiments kept apart) is returned as `notes`
    rather than printed as warnings, and written to notes.md: a report shows it as text.
    Returns {"out_dir": Path, "notes": [str], "tables": {name: {"csv"|"md"|"tex": Path}},
    "figures": {name: {"png"|"pdf": Path}}}.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "analysis"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(results_dir)
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    _check_writable(out_dir)
    tables = {"methods": method_table(runs, target_accuracy),
              "methods_stats": label_stats(runs, target_accuracy),
              "runs": run_table(runs, target_accuracy)}
    figures = {"accuracy_vs_round": plot_accuracy_vs_round(runs, out_dir, target_accuracy),
               "accuracy_vs_uplink": plot_accuracy_vs_uplink(runs, out_dir),
               "accuracy_vs_flops": plot_accuracy_vs_flops(runs, out_dir),
               "client_pruning_ratios": plot_client_pruning(runs, out_dir),
               "partition": plot_partition(runs, out_dir)}
    (out_dir / "notes.md").write_text("".join(f"- {note}\n" for note in notes),
                                      encoding="utf-8")
    return {"out_dir": out_dir, "notes": notes,
            "tables": {name: write_table(df, out_dir, name) for name, df in tables.items()},
            "figures": figures}


def _check_writable(out_dir: Path) -> None:
    """out_dir must be a folder this process can write, said before the first figure (a
    read-only results folder is a clear error, not a traceback from deep in matplotlib)."""
    import os

    from ..config import ConfigError

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write_test_{os.getpid()}"
        probe.unlink(missing_ok=True)  # a stale one, of a killed process with this pid
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"out_dir: {out_dir} is not a writable folder ({err.strerror}); "
                          f"allowed: a folder this user can write (pass out_dir=...)") from None
