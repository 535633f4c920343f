"""Statistics over seeds and the comparison tables (CSV, Markdown, LaTeX booktabs).

Confidence intervals are Student-t intervals over seeds, because with a handful of seeds a
normal approximation or a bootstrap is too narrow.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from scipy import stats

from .figures import method_styles
from .loading import BASELINE_LABEL, RunTable, label_aliases, label_order

# Per-run numbers in the runs table; the ones after "seed" are also pooled over seeds per label.
RUN_COLUMNS = ("run_name", "label", "seed", "rounds_completed", "tail_test_accuracy",
               "final_test_accuracy", "best_test_accuracy", "best_round", "rounds_to_target",
               "total_uplink_mb", "compression_x", "compression_x_trained",
               "total_client_train_gflops", "client_train_gflops_per_update", "flop_saving_pct",
               "pruning_ratio_mean", "wall_time_sec", "simulated_time_sec")
STAT_COLUMNS = RUN_COLUMNS[3:]


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean, t-interval half-width and count of the non-NaN values.

    The half-width is NaN with fewer than two values (no spread to estimate); the mean too
    with none.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(x[0]), float("nan"), 1
    sem = x.std(ddof=1) / np.sqrt(n)
    return float(x.mean()), float(stats.t.ppf((1 + confidence) / 2, n - 1) * sem), n


def rounds_to_target(metrics: pd.DataFrame, target_accuracy: float = 90.0) -> pd.Series:
    """First round per run whose test accuracy (%) is >= the target; NaN if never reached."""
    hit = metrics[metrics["test_accuracy"] >= target_accuracy]  # NaN (not evaluated) never hits
    first = hit.groupby("run_name")["round"].min()
    return first.reindex(metrics["run_name"].unique()).astype(float).rename("rounds_to_target")


def run_table(runs: RunTable, target_accuracy: float = 90.0) -> pd.DataFrame:
    """One row per run with its summary numbers and rounds to the target accuracy."""
    table = runs.summaries.copy()
    table["rounds_to_target"] = table["run_name"].map(rounds_to_target(runs.metrics,
                                                                      target_accuracy))
    order = {label: i for i, label in enumerate(label_order(table))}
    table = table.sort_values(["label", "seed"], key=lambda c: c.map(order) if c.name == "label"
                              else c, kind="stable")
    return table[[c for c in RUN_COLUMNS if c in table]].reset_index(drop=True)


def label_stats(runs: RunTable, target_accuracy: float = 90.0) -> pd.DataFrame:
    """Long table: per label and metric, seeds, n (non-missing values), mean and 95% CI half-width.

    For rounds_to_target, n counts the seeds that reached the target; the mean is over those.
    """
    table = run_table(runs, target_accuracy)
    rows = []
    for label in label_order(table):
        group = table[table["label"] == label]
        for metric in (m for m in STAT_COLUMNS if m in group):
            mean, half, n = mean_ci(group[metric])
            rows.append({"label": label, "metric": metric, "seeds": len(group), "n": n,
                         "mean": mean, "ci95": half})
    return pd.DataFrame(rows)


def method_table(runs: RunTable, target_accuracy: float = 90.0) -> pd.DataFrame:
    """The main comparison: one row per method, numbers formatted as "mean ± 95% CI" strings.

    The headline is the tail accuracy (mean of the last tail_rounds evaluated rounds); the
    final round is one noisy draw and the best round is selected on the test set. Accuracies
    and rounds carry their CI over seeds; costs show the mean (their CIs are in label_stats).
    With one seed only the mean is shown.
    """
    stat = label_stats(runs, target_accuracy).set_index(["label", "metric"])
    rows = []
    for label in dict.fromkeys(stat.index.get_level_values("label")):
        s = stat.loc[label]
        rows.append({
            "Method": label,
            "Seeds": int(s["seeds"].iloc[0]),
            "Tail acc. (%)": _fmt(s, "tail_test_accuracy", 2),
            "Final acc. (%)": _fmt(s, "final_test_accuracy", 2),
            "Best acc., test-selected (%)": _fmt(s, "best_test_accuracy", 2),
            f"Rounds to {target_accuracy:g}%": _fmt_rounds(s.loc["rounds_to_target"]),
            "Uplink (MB)": _fmt(s, "total_uplink_mb", 2, ci=False),
            "Compression (×)": _fmt(s, "compression_x", 1, ci=False),
            "Compression of trained (×)": _fmt(s, "compression_x_trained", 1, ci=False),
            "Mean ratio": _fmt(s, "pruning_ratio_mean", 2, ci=False),
            "Client GFLOP an update": _fmt(s, "client_train_gflops_per_update", 2, ci=False),
            "FLOP saving (%)": _fmt(s, "flop_saving_pct", 1, ci=False),
            "Wall time (s)": _fmt(s, "wall_time_sec", 1, ci=False),
        })
    return pd.DataFrame(rows)


def _fmt(s: pd.DataFrame, metric: str, digits: int, ci: bool = True) -> str:
    """'mean ± half' from a label's stats rows; just the mean without a CI; '–' when missing."""
    if metric not in s.index or np.isnan(s.loc[metric, "mean"]):
        return "–"
    mean, half = s.loc[metric, "mean"], s.loc[metric, "ci95"]
    if not ci or np.isnan(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _fmt_rounds(row: pd.Series) -> str:
    """Rounds to target over the seeds that got there, and how many did ("41.0 ± 3.2 (3/5)"):
    a mean over the lucky seeds alone would flatter a method that often misses."""
    n, seeds = int(row["n"]), int(row["seeds"])
    if n == 0:
        return f"not reached (0/{seeds})"
    text = f"{row['mean']:.0f}" if n == 1 else f"{row['mean']:.1f} ± {row['ci95']:.1f}"
    return f"{text} ({n}/{seeds})"


def write_table(df: pd.DataFrame, out_dir: str | Path, name: str,
                shown: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write `df` as <name>.csv, <name>.md and <name>.tex (booktabs) in out_dir; return the paths.

    The CSV keeps full precision; Markdown and LaTeX show `shown` (default: `df`) with numbers
    as _display_frame formats them.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    df.to_csv(paths["csv"], index=False)
    shown = _display_frame(df if shown is None else shown)
    right = _is_numeric_column(shown)
    align = ["right" if r else "left" for r in right]
    # No number parsing: tabulate would otherwise turn a formatted "1.0" back into "1.00".
    markdown = shown.map(markdown_escape).rename(columns=markdown_escape)
    paths["md"].write_text(markdown.to_markdown(index=False, disable_numparse=True,
                                                colalign=align) + "\n")
    styler = shown.style.hide(axis="index").format(escape="latex").format_index(escape="latex",
                                                                                 axis=1)
    tex = styler.to_latex(hrules=True, column_format="".join("r" if r else "l" for r in right))
    # Signs as LaTeX commands, so the table compiles whatever the engine's input encoding; a
    # written "--" stays two hyphens (LaTeX would print an en dash).
    tex = tex.replace("--", "-{}-")
    for char, command in (("±", r"$\pm$"), ("×", r"$\times$"), ("–", "--")):
        tex = tex.replace(char, command)
    paths["tex"].write_text(tex)
    return paths


# Markdown's punctuation that can mean markup inside a table cell (emphasis, code, links, HTML,
# math in Jupyter, the cell separator): escaped, so a cell reads back as the text it holds.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#|~$&^])")


def markdown_escape(text: str) -> str:
    """`text` as a Markdown table cell that renders as `text` (CommonMark backslash escapes)."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def _display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """All cells as strings: float columns with 2 decimals (none if all whole), NaN as '–'."""
    shown = df.astype(object).copy()
    for column in df.columns:
        if pd.api.types.is_float_dtype(df[column]):
            values = df[column]
            whole = bool((values.dropna() % 1 == 0).all())
            shown[column] = [("–" if np.isnan(v) else f"{v:.0f}" if whole else f"{v:.2f}")
                             for v in values]
    return shown.astype(str)


def _is_numeric_column(shown: pd.DataFrame) -> list[bool]:
    """Per column: does a cell start with a digit (a number, "93.00 ± 0.45")? Those align right."""
    return [bool(shown[c].str.match(r"\d").any()) for c in shown.columns]


def width_table(runs: RunTable) -> pd.DataFrame:
    """Per method and deployed width (summary.json's `widths`, run/widths.py): the tail
    accuracy (mean ± 95% CI over seeds), the width's kept fraction and training MFLOP a sample;
    the full width the server holds first. Empty when no run evaluated its widths."""
    rows = []
    for label in label_order(runs.summaries):
        group = runs.summaries[runs.summaries.label == label]
        entries = [w for ws in group.get("widths", pd.Series(dtype=object)).dropna()
                   if isinstance(ws, list) for w in ws]
        by_ratio: dict = {}
        for w in entries:
            by_ratio.setdefault(round(w["ratio"], 4), []).append(w)
        for ratio in sorted(by_ratio):
            ws = by_ratio[ratio]
            mean, half, n = mean_ci([w["tail_test_accuracy"] for w in ws])
            rows.append({"Method": label,
                         "Width": "full (server)" if ratio == 0 else f"ratio {ratio:.2f}",
                         "Kept fraction": f"{ws[0]['width']:.2f}",
                         "MFLOP a sample": f"{ws[0]['train_flops_per_sample'] / 1e6:.2f}",
                         "Tail acc. (%)": (f"{mean:.2f}" if np.isnan(half)
                                           else f"{mean:.2f} ± {half:.2f}"),
                         "Seeds": n})
    return pd.DataFrame(rows, columns=["Method", "Width", "Kept fraction", "MFLOP a sample",
                                       "Tail acc. (%)", "Seeds"])



# The runs table as printed (runs.md, .tex, the report): a header with its unit for each of
# RUN_COLUMNS, numbers rounded as a reader compares them; runs.csv keeps names and digits.
RUN_HEADERS = {"run_name": ("Run", None), "label": ("Method", None), "seed": ("Seed", 0),
               "rounds_completed": ("Rounds", 0), "tail_test_accuracy": ("Tail acc. (%)", 2),
               "final_test_accuracy": ("Final acc. (%)", 2),
               "best_test_accuracy": ("Best acc. (%)", 2), "best_round": ("Best round", 0),
               "rounds_to_target": ("Rounds to target", 0),
               "total_uplink_mb": ("Uplink (MB)", 2), "compression_x": ("Compr. (×)", 1),
               "compression_x_trained": ("Compr. of trained (×)", 1),
               "total_client_train_gflops": ("Client GFLOP", 0),
               "client_train_gflops_per_update": ("GFLOP an update", 2),
               "flop_saving_pct": ("FLOP saving (%)", 1),
               "pruning_ratio_mean": ("Mean ratio", 2), "wall_time_sec": ("Wall (s)", 0),
               "simulated_time_sec": ("Simulated (s)", 0)}


def runs_display(table: pd.DataFrame) -> pd.DataFrame:
    """run_table as printed: RUN_HEADERS' names, each number with its digits, '–' if missing."""
    shown = pd.DataFrame(index=table.index)
    for column in table.columns:
        header, digits = RUN_HEADERS.get(column, (column, 2))
        values = table[column]
        if digits is None or not pd.api.types.is_numeric_dtype(values):
            shown[header] = values.astype(object).where(values.notna(), "–").astype(str)
        else:
            shown[header] = ["–" if pd.isna(v) else f"{float(v):,.{digits}f}" for v in values]
    return shown.reset_index(drop=True)


_COLOUR_NAMES = ("blue", "orange", "green", "red", "violet", "tan", "pink", "grey", "yellow",
                 "light blue")  # seaborn's colour-blind palette, in its order
_MARKER_NAMES = {"o": "circle", "s": "square", "^": "triangle up", "D": "diamond",
                 "v": "triangle down", "P": "plus", "X": "cross", "*": "star",
                 "<": "triangle left", ">": "triangle right", "h": "hexagon", "p": "pentagon"}
_LINE_NAMES = {"-": "solid", "--": "dashed", "-.": "dash-dot", ":": "dotted"}


def legend_table(runs: RunTable, baseline: str = BASELINE_LABEL) -> pd.DataFrame:
    """The figures' legend key: per method its short label, its style (a grey-scale print
    still tells the markers apart), its full label as the tables write it, and its seeds."""
    labels = label_order(runs.summaries)
    styles, aliases = method_styles(labels, baseline), label_aliases(runs.summaries)
    palette = {tuple(c): name for c, name in zip(sns.color_palette("colorblind", 10),
                                                 _COLOUR_NAMES)}
    seeds = runs.summaries.groupby("label")["seed"].nunique()
    return pd.DataFrame([{
        "Legend": aliases[k].replace("\n", " "),
        "Style": f"{palette.get(tuple(styles[k].color), 'colour')} "
                 f"{_MARKER_NAMES[styles[k].marker]}, {_LINE_NAMES[styles[k].linestyle]}",
        "Method (full label)": k, "Seeds": int(seeds.get(k, 0))} for k in labels])
