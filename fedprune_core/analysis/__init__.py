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

from ..checks import writable_folder
from .cost import accuracy_at_budget, budget_display, cost_display, cost_to_accuracy
from .figures import (BANDS, FIGURE_DPI, accuracy_curves, accuracy_figure, display_width,
                      method_styles,
                      plot_accuracy_vs_flops, plot_accuracy_vs_round, plot_accuracy_vs_uplink,
                      plot_client_pruning, plot_partition, plot_tail_vs_flops,
                      plot_tail_vs_uplink, resolve_bands, tail_figure)
from .loading import (BASELINE_LABEL, CONFIG_FIELDS, RunTable, label_aliases, label_order,
                      load_runs, resolve_results_dir, short_label, split_experiments)
from .loading import tail_includes_warmup
from .paired import (paired_differences, paired_display, paired_marked, paired_reading,
                     paired_table, seeds_needed)
from .reproduce import reproduce_table, write_reproduce
from .tables import (MIN_SEEDS, RUN_COLUMNS, STAT_COLUMNS, flag_notes, label_stats,
                     legend_table, mean_ci, method_table, methods_display, rounds_to_target,
                     run_table, runs_display, width_table, widths_display, write_table)

__all__ = ["accuracy_at_budget", "cost_to_accuracy", "reproduce_table", "write_reproduce", "BASELINE_LABEL", "CONFIG_FIELDS", "FIGURE_DPI", "RUN_COLUMNS", "STAT_COLUMNS",
           "RunTable", "accuracy_curves", "analyze", "label_order", "label_stats", "load_runs",
           "mean_ci", "method_table", "plot_accuracy_vs_flops", "plot_accuracy_vs_round",
           "plot_accuracy_vs_uplink", "plot_client_pruning", "plot_partition",
           "resolve_results_dir", "rounds_to_target", "run_table", "split_experiments",
           "write_table", "paired_differences", "paired_display", "paired_table",
           "seeds_needed", "width_table", "BANDS", "accuracy_figure", "method_styles",
           "plot_tail_vs_flops", "plot_tail_vs_uplink", "resolve_bands", "tail_figure",
           "label_aliases", "short_label", "legend_table", "runs_display", "display_width",
           "MIN_SEEDS", "flag_notes", "methods_display", "paired_marked", "paired_reading",
           "tail_includes_warmup", "widths_display"]


def analyze(results_dir: str | Path = "results", out_dir: str | Path | None = None,
            target_accuracy: float = 90.0, baseline: str = BASELINE_LABEL,
            batch: str | None = None, bands: str = "auto") -> dict:
    """Load the runs in results_dir (a batch's alone with `batch`: results_dir/<batch>) and
    write every table and figure into out_dir.

    out_dir defaults to <results_dir>/analysis, or <results_dir>/<batch>/analysis (never read
    back as a run: it has no config.json).
    `baseline` is the label the paired table compares every method with (analysis/paired.py),
    drawn first and in the first style; without runs of it the table is left out, with a note.
    `bands`: what the shading around curves and the error bars show: `ci95` (95% t interval
    over seeds), `std` (±1 standard deviation), `none`, or `auto` (figures.resolve_bands: none
    with one seed, std below four seeds, ci95 from four).
    What the loading had to say (runs skipped, experiments kept apart) is returned as `notes`
    rather than printed as warnings, and written to notes.md: a report shows it as text; so is
    what the tables mark (tables.flag_notes: tails averaging warm-up rounds, fewer than
    MIN_SEEDS seeds). The Markdown and LaTeX tables name methods by their short labels (the
    legend table has the full ones).
    Returns {"out_dir": Path, "notes": [str], "tables": {name: {"csv"|"md"|"tex": Path}},
    "figures": {name: {"png"|"pdf": Path}}, "bands": the bands drawn, "readings": {"paired":
    what the paired table shows, in words (paired.paired_reading)}}.
    """
    if bands not in BANDS:
        resolve_bands(bands, None)  # the ConfigError naming what is allowed
    results_dir = Path(results_dir)
    if batch:
        if not (results_dir / batch).is_dir():
            found = sorted(p.name for p in results_dir.iterdir()
                           if (p / "grid.jsonl").is_file()) if results_dir.is_dir() else []
            raise FileNotFoundError(f"batch: {results_dir / batch} is not a folder; batches in "
                                    f"{results_dir}: {', '.join(found) or 'none'}")
        results_dir = results_dir / batch
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "analysis"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(results_dir)
    notes = list(dict.fromkeys(str(w.message) for w in caught)) + flag_notes(runs)
    _check_writable(out_dir)
    bands = resolve_bands(bands, runs)
    aliases = label_aliases(runs.summaries)
    tables = {"methods": method_table(runs, target_accuracy),
              "methods_stats": label_stats(runs, target_accuracy),
              "runs": run_table(runs, target_accuracy)}
    # .md and .tex as a page shows them: short labels, flags as marks and footnotes, runs
    # with units in the headers and fewer digits (the CSVs keep full labels, flags, digits)
    shown = {"methods": methods_display(tables["methods"], aliases),
             "runs": runs_display(tables["runs"], aliases)}
    readings = {}
    if baseline in set(runs.summaries.label):
        paired = paired_table(runs, baseline)
        tables["paired"] = paired_display(paired)
        shown["paired"] = paired_marked(tables["paired"], aliases)
        readings["paired"] = paired_reading(paired, aliases)
        tables["cost_to_accuracy"] = cost_to_accuracy(runs, baseline, absolute=target_accuracy)
        tables["accuracy_at_budget"] = accuracy_at_budget(runs, baseline)
        shown["cost_to_accuracy"] = cost_display(tables["cost_to_accuracy"], baseline, aliases)
        shown["accuracy_at_budget"] = budget_display(tables["accuracy_at_budget"], baseline,
                                                     aliases)
    else:
        notes.append(f"No paired table: no runs labelled {baseline!r} (the baseline; pass "
                     f"baseline=... to compare with another label)")
    widths = width_table(runs)
    if not widths.empty:
        tables["widths"] = widths
        shown["widths"] = widths_display(widths, aliases)
    tables["legend"] = legend_table(runs, baseline)
    figures = {"tail_vs_uplink": plot_tail_vs_uplink(runs, out_dir, bands, baseline),
               "tail_vs_flops": plot_tail_vs_flops(runs, out_dir, bands, baseline),
               "accuracy_vs_round": plot_accuracy_vs_round(runs, out_dir, target_accuracy,
                                                           bands, baseline),
               "accuracy_vs_uplink": plot_accuracy_vs_uplink(runs, out_dir, bands, baseline,
                                                             target_accuracy),
               "accuracy_vs_flops": plot_accuracy_vs_flops(runs, out_dir, bands, baseline,
                                                           target_accuracy),
               "client_pruning_ratios": plot_client_pruning(runs, out_dir, baseline),
               "partition": plot_partition(runs, out_dir)}
    (out_dir / "notes.md").write_text("".join(f"- {note}\n" for note in notes),
                                      encoding="utf-8")
    written = {name: write_table(df, out_dir, name, shown.get(name))
               for name, df in tables.items()}
    return {"out_dir": out_dir, "notes": notes, "tables": written, "figures": figures,
            "bands": bands, "readings": readings}


def _check_writable(out_dir: Path) -> None:
    """out_dir must be a folder this process can write, said before the first figure (a
    read-only results folder is a clear error, not a traceback from deep in matplotlib)."""
    writable_folder(out_dir, "out_dir")
