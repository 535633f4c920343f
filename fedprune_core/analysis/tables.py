"""Statistics over seeds and the comparison tables (CSV, Markdown, LaTeX booktabs).

Confidence intervals are Student-t intervals over seeds, because with a handful of seeds a
normal approximation or a bootstrap is too narrow.

What a table cannot be read for is marked in it: a tail accuracy that averages warm-up rounds
(loading.tail_includes_warmup) with WARMUP_MARK, a comparison over fewer than MIN_SEEDS seeds
with FEW_SEEDS_MARK, each explained in a footnote under the Markdown and LaTeX table (the CSV
has the flags as columns) and in the analysis notes (flag_notes). The Markdown and LaTeX tables
name methods by their short labels (loading.label_aliases); the legend table and the CSVs keep
the full ones.
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

MIN_SEEDS = 3  # fewer seeds than this: the comparison is marked
WARMUP_MARK, FEW_SEEDS_MARK = "†", "‡"
WARMUP_FLAG, FEW_SEEDS_FLAG = "Tail includes warm-up", f"Fewer than {MIN_SEEDS} seeds"
FOOTNOTES = {
    WARMUP_MARK: f"{WARMUP_MARK} Tail includes warm-up rounds: it averages more than half of "
                 f"the run's evaluated rounds (every one, round 1 included, when the run "
                 f"evaluated no more than tail_rounds), so it is not a plateau; compare it only "
                 f"with runs of the same length.",
    FEW_SEEDS_MARK: f"{FEW_SEEDS_MARK} Fewer than {MIN_SEEDS} seeds: a 95% interval over 2 "
                    f"seeds is ±12.71 standard errors, over 1 there is none; too few to tell "
                    f"methods apart."}

# Per-run numbers in the runs table; the ones after "seed" are also pooled over seeds per label.
RUN_COLUMNS = ("run_name", "label", "seed", "rounds_completed", "tail_test_accuracy",
               "final_test_accuracy", "best_test_accuracy", "best_round", "rounds_to_target",
               "total_uplink_mb", "compression_x", "compression_x_trained",
               "total_client_train_gflops", "client_train_gflops_per_update", "flop_saving_pct",
               "pruning_ratio_mean", "wall_time_sec", "simulated_time_sec")
STAT_COLUMNS = RUN_COLUMNS[3:]
# After them in runs.csv: how the tail was taken (the display marks the tail accuracy instead).
RUN_FLAGS = ("tail_rounds", "evaluated_rounds", "tail_warmup")


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
    return table[[c for c in RUN_COLUMNS + RUN_FLAGS if c in table]].reset_index(drop=True)


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
    With one seed only the mean is shown. The last two columns flag an experiment whose runs'
    tail averages warm-up rounds (any of them) and one with fewer than MIN_SEEDS seeds.
    """
    stat = label_stats(runs, target_accuracy).set_index(["label", "metric"])
    warmup = runs.summaries.groupby("label")["tail_warmup"].any()
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
            WARMUP_FLAG: bool(warmup.get(label, False)),
            FEW_SEEDS_FLAG: int(s["seeds"].iloc[0]) < MIN_SEEDS,
        })
    return pd.DataFrame(rows)


def methods_display(table: pd.DataFrame, aliases: dict[str, str]) -> pd.DataFrame:
    """method_table as printed: short labels, the flags as marks on the tail accuracy and the
    seeds (footnotes in attrs, written under the table by write_table)."""
    return _marked(table, aliases, "Tail acc. (%)", "Seeds")


def _marked(table: pd.DataFrame, aliases: dict[str, str], tail: str,
            seeds: str) -> pd.DataFrame:
    """`table` with WARMUP_FLAG / FEW_SEEDS_FLAG turned into marks on its `tail` and `seeds`
    columns, its Method column in short labels, and the footnotes of the marks it uses."""
    shown = table.drop(columns=[WARMUP_FLAG, FEW_SEEDS_FLAG]).astype(object)
    shown["Method"] = [_short(aliases, label) for label in table["Method"]]
    shown[tail] = [_mark(v, f, WARMUP_MARK) for v, f in zip(shown[tail], table[WARMUP_FLAG])]
    shown[seeds] = [_mark(v, f, FEW_SEEDS_MARK)
                    for v, f in zip(shown[seeds], table[FEW_SEEDS_FLAG])]
    shown.attrs["footnotes"] = [FOOTNOTES[m] for m, flag in ((WARMUP_MARK, WARMUP_FLAG),
                                                             (FEW_SEEDS_MARK, FEW_SEEDS_FLAG))
                                if table[flag].any()]
    return shown


def _mark(value, flagged: bool, mark: str) -> str:
    return f"{value} {mark}" if flagged else str(value)


def _short(aliases: dict[str, str], label: str) -> str:
    """A label's one-line short form (the label itself when it has none)."""
    return aliases.get(label, label).replace("\n", " ")


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
    as _display_frame formats them, and under the table the footnotes in shown.attrs (what its
    marks mean).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    df.to_csv(paths["csv"], index=False)
    shown = df if shown is None else shown
    footnotes = list(shown.attrs.get("footnotes", []))
    shown = _display_frame(shown)
    right = _is_numeric_column(shown)
    align = ["right" if r else "left" for r in right]
    # No number parsing: tabulate would otherwise turn a formatted "1.0" back into "1.00".
    markdown = shown.map(markdown_escape).rename(columns=markdown_escape)
    paths["md"].write_text(markdown.to_markdown(index=False, disable_numparse=True,
                                                colalign=align) + "\n"
                           + "".join(f"\n{markdown_escape(note)}\n" for note in footnotes))
    styler = shown.style.hide(axis="index").format(escape="latex").format_index(escape="latex",
                                                                                 axis=1)
    tex = styler.to_latex(hrules=True, column_format="".join("r" if r else "l" for r in right))
    if footnotes:  # below the tabular, as wide as the text: a float's caption area
        tex += "\\par\\smallskip{\\footnotesize\n" + "".join(
            _latex_text(note) + "\\par\n" for note in footnotes) + "}\n"
    # Signs as LaTeX commands, so the table compiles whatever the engine's input encoding; a
    # written "--" stays two hyphens (LaTeX would print an en dash).
    tex = tex.replace("--", "-{}-")
    for char, command in _LATEX_SIGNS:
        tex = tex.replace(char, command)
    paths["tex"].write_text(tex)
    return paths


# What _display_frame's text holds, as LaTeX (a mark a superscript on the number it follows).
_LATEX_SIGNS = (("±", r"$\pm$"), ("×", r"$\times$"), ("–", "--"), ("Δ", r"$\Delta$"),
                (f" {WARMUP_MARK}", r"$^{\dagger}$"), (f" {FEW_SEEDS_MARK}", r"$^{\ddagger}$"),
                (WARMUP_MARK, r"$^{\dagger}$"), (FEW_SEEDS_MARK, r"$^{\ddagger}$"))


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def _latex_text(text: str) -> str:
    """Prose for a LaTeX file: its special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


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
    """Per column: does a cell start with a number ("93.00 ± 0.45", "-1.90 ± 0.04")? Those
    align right."""
    return [bool(shown[c].str.match(r"[-+]?\d").any()) for c in shown.columns]


def width_table(runs: RunTable) -> pd.DataFrame:
    """Per method and deployed width (summary.json's `widths`, run/widths.py): the tail
    accuracy (mean ± 95% CI over seeds), the width's kept fraction and training MFLOP a sample;
    the full width the server holds first; the flags of method_table. Empty when no run
    evaluated its widths."""
    rows = []
    warmup = runs.summaries.groupby("label")["tail_warmup"].any()
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
                         "Seeds": n, WARMUP_FLAG: bool(warmup.get(label, False)),
                         FEW_SEEDS_FLAG: n < MIN_SEEDS})
    return pd.DataFrame(rows, columns=["Method", "Width", "Kept fraction", "MFLOP a sample",
                                       "Tail acc. (%)", "Seeds", WARMUP_FLAG, FEW_SEEDS_FLAG])


def widths_display(table: pd.DataFrame, aliases: dict[str, str]) -> pd.DataFrame:
    """width_table as printed: short labels, flags as marks (methods_display)."""
    return _marked(table, aliases, "Tail acc. (%)", "Seeds")


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


def runs_display(table: pd.DataFrame, aliases: dict[str, str] | None = None) -> pd.DataFrame:
    """run_table as printed: RUN_HEADERS' names, each number with its digits, '–' if missing,
    methods in their short labels (`aliases`), a tail that averages warm-up rounds marked (its
    footnote in attrs)."""
    shown = pd.DataFrame(index=table.index)
    for column in (c for c in table.columns if c not in RUN_FLAGS):
        header, digits = RUN_HEADERS.get(column, (column, 2))
        values = table[column]
        if digits is None or not pd.api.types.is_numeric_dtype(values):
            shown[header] = values.astype(object).where(values.notna(), "–").astype(str)
        else:
            shown[header] = ["–" if pd.isna(v) else f"{float(v):,.{digits}f}" for v in values]
    if aliases and "label" in table:
        shown["Method"] = [_short(aliases, label) for label in table["label"]]
    warmup = table.get("tail_warmup", pd.Series(False, index=table.index)).astype(bool)
    if "tail_test_accuracy" in table:
        header = RUN_HEADERS["tail_test_accuracy"][0]
        shown[header] = [_mark(v, f, WARMUP_MARK) for v, f in zip(shown[header], warmup)]
    shown = shown.reset_index(drop=True)
    shown.attrs["footnotes"] = [FOOTNOTES[WARMUP_MARK]] if warmup.any() else []
    return shown


_COLOUR_NAMES = ("blue", "orange", "green", "red", "violet", "tan", "pink", "grey", "yellow",
                 "light blue")  # seaborn's colour-blind palette, in its order
_MARKER_NAMES = {"o": "circle", "s": "square", "^": "triangle up", "D": "diamond",
                 "v": "triangle down", "P": "plus", "X": "cross", "*": "star",
                 "<": "triangle left", ">": "triangle right", "h": "hexagon", "p": "pentagon"}
_LINE_NAMES = {"-": "solid", "--": "dashed", "-.": "dash-dot", ":": "dotted"}


def legend_table(runs: RunTable, baseline: str = BASELINE_LABEL) -> pd.DataFrame:
    """The key to the figures' legends and the printed tables: per method its short label, its
    style in the figures (a grey-scale print still tells the markers apart), its full label (as
    the CSVs write it), and its seeds."""
    labels = label_order(runs.summaries)
    styles, aliases = method_styles(labels, baseline), label_aliases(runs.summaries)
    palette = {tuple(c): name for c, name in zip(sns.color_palette("colorblind", 10),
                                                 _COLOUR_NAMES)}
    seeds = runs.summaries.groupby("label")["seed"].nunique()
    return pd.DataFrame([{
        "Short label": _short(aliases, k),
        "Style": f"{palette.get(tuple(styles[k].color), 'colour')} "
                 f"{_MARKER_NAMES[styles[k].marker]}, {_LINE_NAMES[styles[k].linestyle]}",
        "Method (full label)": k, "Seeds": int(seeds.get(k, 0))} for k in labels])


def flag_notes(runs: RunTable, most: int = 6) -> list[str]:
    """The analysis notes on what the tables mark: the runs whose tail averages warm-up rounds,
    the experiments with fewer than MIN_SEEDS seeds; one line each, none when nothing is
    marked. Methods are named by their short labels (the tables'), `most` at most a line."""
    s, notes = runs.summaries, []
    aliases, labels = label_aliases(s), label_order(s)

    def experiments(chosen: list[str], detail=lambda label: "") -> str:
        if len(chosen) == len(labels):
            return f"every experiment ({len(labels)})"
        names = [_short(aliases, k) + detail(k) for k in chosen[:most]]
        more = f" and {len(chosen) - most} more" if len(chosen) > most else ""
        return f"{len(chosen)} of {len(labels)} experiments ({', '.join(names)}{more})"

    warm = s[s["tail_warmup"]] if "tail_warmup" in s else s.iloc[:0]
    if len(warm):
        spans = [(f"all {n} of their evaluated rounds" if tail >= n
                  else f"their last {tail:.0f} of {n} evaluated rounds")
                 + (f" ({count} runs)" if count < len(warm) else "")
                 for (tail, n), count in warm.groupby(["tail_rounds", "evaluated_rounds"]).size()
                 .sort_index(ascending=[True, False]).items()]
        asked = sorted(set(warm.get("tail_rounds_asked", pd.Series(dtype=float)).dropna()))
        notes.append(
            f"Tail includes warm-up rounds (marked {WARMUP_MARK} in the tables): {len(warm)} of "
            f"{len(s)} runs, in {experiments(list(dict.fromkeys(warm['label'])))}, average "
            f"{' or '.join(spans)}"
            + (f" (tail_rounds = {', '.join(f'{a:.0f}' for a in asked)})" if asked else "")
            + ". A tail is marked when it averages more than half of the run's evaluated "
              "rounds: it is not a plateau, so compare these runs only with runs of the same "
              "length, or run more rounds.")
    seeds = s.groupby("label")["seed"].nunique()
    few = [k for k in labels if seeds[k] < MIN_SEEDS]
    if few:
        counts = sorted(set(seeds[few]))
        where = (f"every experiment ({len(labels)}) has {counts[0]} seed"
                 f"{'s' if counts[0] > 1 else ''}"
                 if len(few) == len(labels) and len(counts) == 1 else
                 experiments(few, lambda k: f": {seeds[k]} seed{'s' if seeds[k] > 1 else ''}")
                 + " have fewer")
        notes.append(
            f"Fewer than {MIN_SEEDS} seeds (marked {FEW_SEEDS_MARK} in the tables): {where}. "
            f"A 95% interval over 2 seeds is ±12.71 standard errors and over 1 there is none: "
            f"run {MIN_SEEDS} seeds or more (SEEDS=\"0 1 2\") before comparing methods.")
    return notes
