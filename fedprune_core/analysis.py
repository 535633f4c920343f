"""Analysis across runs: load results/ into pandas, compare methods over seeds, tables, figures.

Reads only the artifacts a run writes (config.json, metrics.csv, clients.csv, partition.csv,
summary.json), so it does not depend on the simulation code and works on results copied from
elsewhere. A method is a `label`; its runs with different seeds are pooled. Confidence intervals
are Student-t intervals over seeds, because with a handful of seeds a normal approximation or a
bootstrap is too narrow. Tables go out as CSV, Markdown and LaTeX (booktabs); figures as PNG
(300 DPI) and PDF.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

BYTES_PER_MB = 1e6  # decimal megabytes
FLOPS_PER_GFLOP = 1e9
FIGURE_DPI = 300
BASELINE_LABEL = "FedAvg"  # listed first in tables and legends when present

# Config fields copied next to each run's summary: what distinguishes one method from another.
CONFIG_FIELDS = ("dataset", "model", "partition", "rounds", "pruning_mode", "pruning_ratio",
                 "sparsify_method", "sparsity_ratio", "error_feedback", "aggregation")

# Per-run numbers in the runs table; the ones after "seed" are also pooled over seeds per label.
RUN_COLUMNS = ("run_name", "label", "seed", "rounds_completed", "final_test_accuracy",
               "best_test_accuracy", "best_round", "rounds_to_target", "total_uplink_mb",
               "compression_x", "total_client_train_gflops", "flop_saving_pct", "wall_time_sec",
               "simulated_time_sec")
STAT_COLUMNS = RUN_COLUMNS[3:]


@dataclass
class RunTable:
    """The finished runs of a results folder as DataFrames keyed by run_name, label and seed."""

    summaries: pd.DataFrame  # one row per run: summary.json numbers + CONFIG_FIELDS
    metrics: pd.DataFrame  # one row per (run, round), from metrics.csv
    clients: pd.DataFrame  # one row per (run, round, selected client), from clients.csv
    partitions: pd.DataFrame  # one row per (run, client), from partition.csv


# ---------------------------------------------------------------- loading

def resolve_results_dir(path: str | Path = "results") -> Path:
    """Return `path`, or `../path` if only that exists (a notebook opened from notebooks/)."""
    path = Path(path)
    if path.is_dir() or path.is_absolute() or not (Path("..") / path).is_dir():
        return path
    return Path("..") / path


def load_runs(results_dir: str | Path, exclude: tuple[str, ...] = ("analysis",)) -> RunTable:
    """Load every finished run folder directly under `results_dir`.

    A run folder has config.json and metrics.csv; other folders (analysis output, benchmarks,
    batch folders) are ignored. A run without summary.json is unfinished (summary.json is written
    last): it is skipped with a warning naming it. Raises FileNotFoundError if no run is finished.
    """
    results_dir = Path(results_dir)
    folders = sorted(p for p in results_dir.iterdir() if p.is_dir() and p.name not in exclude
                     and (p / "config.json").is_file() and (p / "metrics.csv").is_file()) \
        if results_dir.is_dir() else []
    unfinished = [p.name for p in folders if not (p / "summary.json").is_file()]
    if unfinished:
        warnings.warn(f"Skipping {len(unfinished)} unfinished run(s) without summary.json in "
                      f"{results_dir}: {', '.join(unfinished)}", stacklevel=2)
    finished = [p for p in folders if p.name not in unfinished]
    if not finished:
        raise FileNotFoundError(f"No finished runs (folders with config.json, metrics.csv and "
                                f"summary.json) in {results_dir.resolve()}")

    summaries = _split_labels(pd.DataFrame([_summary_row(folder) for folder in finished]))
    metrics, clients, partitions = [], [], []
    for folder, row in zip(finished, summaries.to_dict("records")):
        key = {k: row[k] for k in ("run_name", "label", "seed")}
        metrics.append(_read_csv(folder / "metrics.csv", key))
        clients.append(_read_csv(folder / "clients.csv", key))
        partitions.append(_read_csv(folder / "partition.csv", key))
    metrics = _concat(metrics)
    # Derived axes for the figures, in the units the tables use.
    metrics["cumulative_uplink_mb"] = metrics["cumulative_uplink_bytes"] / BYTES_PER_MB
    metrics["cumulative_client_train_gflops"] = (metrics["cumulative_client_train_flops"]
                                                 / FLOPS_PER_GFLOP)
    return RunTable(summaries, metrics, _concat(clients), _concat(partitions))


def _summary_row(folder: Path) -> dict:
    """One run's summary.json numbers plus its key config fields."""
    config = json.loads((folder / "config.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    # The folder name is the identifier on disk, so it wins over summary's run_name;
    # a run without a label is its own method.
    row = {"run_name": folder.name,
           "label": summary.get("label") or config.get("label") or folder.name,
           "seed": summary.get("seed", config.get("seed"))}
    row.update({k: v for k, v in summary.items() if k not in row and k != "artifacts"})
    row.update({k: config[k] for k in CONFIG_FIELDS if k in config})
    return row


def _read_csv(path: Path, key: dict) -> pd.DataFrame | None:
    """A run's CSV with its key columns in front; None if the run did not write it."""
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    for i, (name, value) in enumerate(key.items()):
        df.insert(i, name, value)
    return df


def _concat(frames: list[pd.DataFrame | None]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _split_labels(summaries: pd.DataFrame) -> pd.DataFrame:
    """Runs that share a label but differ in a key config field (a 20-round `make run` beside
    2-round ablations) are different experiments, not seeds: the differing fields join their
    label, e.g. "Hybrid(...) [rounds=20]", with a warning."""
    summaries = summaries.copy()
    for label, group in summaries.groupby("label", sort=False):
        fields = [f for f in CONFIG_FIELDS if f in group and group[f].astype(str).nunique() > 1]
        if fields:
            warnings.warn(f"Runs labelled {label!r} differ in {', '.join(fields)}; they are "
                          "kept apart, with those fields added to their labels", stacklevel=3)
            summaries.loc[group.index, "label"] = [
                f"{label} [{', '.join(f'{f}={row[f]}' for f in fields)}]"
                for _, row in group.iterrows()]
    for label, group in summaries.groupby("label", sort=False):
        if group["seed"].duplicated().any():
            warnings.warn(f"Runs labelled {label!r} repeat a seed; each run counts as one sample",
                          stacklevel=3)
    return summaries


def _label_order(summaries: pd.DataFrame) -> list[str]:
    """Labels in order of first appearance, the FedAvg baseline first."""
    labels = list(dict.fromkeys(summaries["label"]))
    return sorted(labels, key=lambda label: label != BASELINE_LABEL)


# ---------------------------------------------------------------- statistics and tables

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
    order = {label: i for i, label in enumerate(_label_order(table))}
    table = table.sort_values(["label", "seed"], key=lambda c: c.map(order) if c.name == "label"
                              else c, kind="stable")
    return table[[c for c in RUN_COLUMNS if c in table]].reset_index(drop=True)


def label_stats(runs: RunTable, target_accuracy: float = 90.0) -> pd.DataFrame:
    """Long table: per label and metric, seeds, n (non-missing values), mean and 95% CI half-width.

    For rounds_to_target, n counts the seeds that reached the target; the mean is over those.
    """
    table = run_table(runs, target_accuracy)
    rows = []
    for label in _label_order(table):
        group = table[table["label"] == label]
        for metric in (m for m in STAT_COLUMNS if m in group):
            mean, half, n = mean_ci(group[metric])
            rows.append({"label": label, "metric": metric, "seeds": len(group), "n": n,
                         "mean": mean, "ci95": half})
    return pd.DataFrame(rows)


def method_table(runs: RunTable, target_accuracy: float = 90.0) -> pd.DataFrame:
    """The main comparison: one row per method, numbers formatted as "mean ± 95% CI" strings.

    Accuracies and rounds carry their CI over seeds; costs show the mean (their CIs are in
    label_stats). With one seed only the mean is shown.
    """
    stat = label_stats(runs, target_accuracy).set_index(["label", "metric"])
    rows = []
    for label in dict.fromkeys(stat.index.get_level_values("label")):
        s = stat.loc[label]
        rows.append({
            "Method": label,
            "Seeds": int(s["seeds"].iloc[0]),
            "Final acc. (%)": _fmt(s, "final_test_accuracy", 2),
            "Best acc. (%)": _fmt(s, "best_test_accuracy", 2),
            f"Rounds to {target_accuracy:g}%": _fmt_rounds(s.loc["rounds_to_target"]),
            "Uplink (MB)": _fmt(s, "total_uplink_mb", 2, ci=False),
            "Compression (×)": _fmt(s, "compression_x", 1, ci=False),
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
    """Rounds to target, saying how many seeds got there when not all did."""
    n, seeds = int(row["n"]), int(row["seeds"])
    if n == 0:
        return "not reached"
    text = f"{row['mean']:.0f}" if n == 1 else f"{row['mean']:.1f} ± {row['ci95']:.1f}"
    return text if n == seeds else f"{text} ({n}/{seeds} seeds)"


def write_table(df: pd.DataFrame, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write `df` as <name>.csv, <name>.md and <name>.tex (booktabs) in out_dir; return the paths.

    The CSV keeps full precision; Markdown and LaTeX show numbers as _display_frame formats them.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    df.to_csv(paths["csv"], index=False)
    shown = _display_frame(df)
    right = _is_numeric_column(shown)
    align = ["right" if r else "left" for r in right]
    # No number parsing: tabulate would otherwise turn a formatted "1.0" back into "1.00".
    paths["md"].write_text(shown.to_markdown(index=False, disable_numparse=True, colalign=align)
                           + "\n")
    styler = shown.style.hide(axis="index").format(escape="latex").format_index(escape="latex",
                                                                                 axis=1)
    tex = styler.to_latex(hrules=True, column_format="".join("r" if r else "l" for r in right))
    # Signs as LaTeX commands, so the table compiles whatever the engine's input encoding.
    for char, command in (("±", r"$\pm$"), ("×", r"$\times$"), ("–", "--")):
        tex = tex.replace(char, command)
    paths["tex"].write_text(tex)
    return paths


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


# ---------------------------------------------------------------- figures

@contextmanager
def _style():
    """Seaborn's look for the figures made inside, without changing global rcParams."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        yield


def _save(fig: Figure, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Save as <name>.png (300 DPI) and <name>.pdf; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"png": out_dir / f"{name}.png", "pdf": out_dir / f"{name}.pdf"}
    # tight: legends placed below the axes must not be cut off
    fig.savefig(paths["png"], dpi=FIGURE_DPI, bbox_inches="tight")
    fig.savefig(paths["pdf"], bbox_inches="tight")
    return paths


def _note_figure(out_dir: str | Path, name: str, text: str) -> dict[str, Path]:
    """A figure that only says why there is nothing to draw, so the set of outputs stays fixed."""
    with _style():
        fig = Figure(figsize=(6.4, 2.0), layout="constrained")
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, text, ha="center", va="center")
        return _save(fig, out_dir, name)


def _palette(labels: list[str]) -> dict:
    """One colour per label, the same in every figure."""
    return dict(zip(labels, sns.color_palette("colorblind", len(labels))))


def accuracy_curves(metrics: pd.DataFrame, x: str = "round") -> pd.DataFrame:
    """Per label and round: mean of column `x` over seeds, and test accuracy mean, CI half-width, n.

    Rounds that were not evaluated (NaN accuracy) are left out.
    """
    evaluated = metrics.dropna(subset=["test_accuracy"])
    rows = []
    for (label, rnd), group in evaluated.groupby(["label", "round"], sort=True):
        mean, half, n = mean_ci(group["test_accuracy"])
        rows.append({"label": label, "round": rnd, "x": group[x].mean(), "mean": mean,
                     "ci95": half, "n": n})
    return pd.DataFrame(rows)


def _accuracy_figure(runs: RunTable, out_dir, x: str, xlabel: str, name: str,
                     log_x: bool = False, target_accuracy: float | None = None) -> dict[str, Path]:
    """Mean test accuracy over seeds against `x`, one line per label, 95% CI band."""
    curves = accuracy_curves(runs.metrics, x)
    labels = _label_order(runs.summaries)
    colors = _palette(labels)
    with _style():
        fig = Figure(figsize=(6.4, 4.4), layout="constrained")
        ax = fig.subplots()
        for label in labels:
            c = curves[curves["label"] == label]
            if log_x:
                c = c[c["x"] > 0]
            ax.plot(c["x"], c["mean"], color=colors[label], label=label,
                    marker="o" if len(c) <= 30 else None, markersize=3)
            # Accuracy is bounded, so the band is drawn clipped to [0, 100].
            ax.fill_between(c["x"], (c["mean"] - c["ci95"]).clip(0, 100),
                            (c["mean"] + c["ci95"]).clip(0, 100),
                            color=colors[label], alpha=0.2, linewidth=0)
        if target_accuracy is not None:
            ax.axhline(target_accuracy, color="grey", linestyle=":", linewidth=1)
        if log_x:
            ax.set_xscale("log")
        if x == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel=xlabel, ylabel="Test accuracy (%)")
        fig.legend(loc="outside lower center", ncols=min(3, len(labels)), fontsize="small",
                   title="Mean over seeds, band: 95% CI")
        return _save(fig, out_dir, name)


def plot_accuracy_vs_round(runs: RunTable, out_dir: str | Path,
                           target_accuracy: float | None = None) -> dict[str, Path]:
    """Test accuracy against round per method; a dotted line marks the target accuracy."""
    return _accuracy_figure(runs, out_dir, "round", "Round", "accuracy_vs_round",
                            target_accuracy=target_accuracy)


def plot_accuracy_vs_uplink(runs: RunTable, out_dir: str | Path) -> dict[str, Path]:
    """Test accuracy against cumulative uplink MB (log scale): accuracy bought per byte sent."""
    return _accuracy_figure(runs, out_dir, "cumulative_uplink_mb",
                            "Cumulative uplink (MB, log scale)", "accuracy_vs_uplink", log_x=True)


def plot_accuracy_vs_flops(runs: RunTable, out_dir: str | Path) -> dict[str, Path]:
    """Test accuracy against cumulative client training GFLOPs: accuracy bought per unit of work."""
    return _accuracy_figure(runs, out_dir, "cumulative_client_train_gflops",
                            "Cumulative client training (GFLOPs)", "accuracy_vs_flops")


def plot_client_pruning(runs: RunTable, out_dir: str | Path) -> dict[str, Path]:
    """Box plot of each client's pruning ratio over rounds and seeds; a panel per pruning method."""
    name = "client_pruning_ratios"
    clients = runs.clients
    # Judged from the data, not the config, so it also works for runs with sparse configs.
    pruning = (clients.groupby("label")["pruning_ratio"].max() > 0) if not clients.empty \
        else pd.Series(dtype=bool)
    labels = [label for label in _label_order(runs.summaries) if pruning.get(label, False)]
    if not labels:
        return _note_figure(out_dir, name, "No run in these results prunes its clients:\n"
                                           "there are no pruning ratios to show.")
    colors = _palette(_label_order(runs.summaries))
    client_ids = sorted(clients["client_id"].unique())
    with _style():
        width = min(12.0, max(6.4, 0.15 * len(client_ids)))
        fig = Figure(figsize=(width, 1.2 + 2.0 * len(labels)), layout="constrained")
        axes = fig.subplots(len(labels), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
        for ax, label in zip(axes, labels):
            ratios = clients.loc[clients["label"] == label, ["client_id", "pruning_ratio"]]
            per_client = [ratios.loc[ratios["client_id"] == c, "pruning_ratio"] for c in client_ids]
            boxes = ax.boxplot(per_client, positions=range(len(client_ids)), patch_artist=True,
                               flierprops={"markersize": 2}, medianprops={"color": "black"})
            for box in boxes["boxes"]:
                box.set(facecolor=colors[label], alpha=0.7)
            ax.set(title=label, ylabel="Pruning ratio")
        axes[-1].set_xlabel("Client")
        _client_ticks(axes[-1], client_ids)
        return _save(fig, out_dir, name)


def _client_ticks(ax, client_ids, max_labels: int = 40) -> None:
    """Label the client at x = 0, 1, ...; only every k-th, so a hundred clients stay readable."""
    step = -(-len(client_ids) // max_labels)
    ticks = range(0, len(client_ids), step)
    ax.set_xticks(ticks, [str(client_ids[i]) for i in ticks])


def plot_partition(runs: RunTable, out_dir: str | Path,
                   run_name: str | None = None) -> dict[str, Path]:
    """Stacked bars of training samples per class per client, for one run.

    Default run: the lowest seed of the first method. Runs with the same seed and partition
    settings share the partition (common random numbers), so one run stands for its seed.
    """
    name = "partition"
    if runs.partitions.empty:
        return _note_figure(out_dir, name, "No run in these results wrote partition.csv.")
    summaries = runs.summaries
    if run_name is None:
        first = summaries[summaries["label"] == _label_order(summaries)[0]]
        run_name = first.sort_values("seed")["run_name"].iloc[0]
    part = runs.partitions[runs.partitions["run_name"] == run_name]
    classes = [c for c in part.columns if c.startswith("class_") and part[c].notna().any()]
    info = summaries.set_index("run_name").loc[run_name]
    details = [str(info[k]) for k in ("partition", "dataset") if k in info and pd.notna(info[k])]
    x = np.arange(len(part))
    with _style():
        fig = Figure(figsize=(min(12.0, max(6.4, 0.15 * len(part))), 3.8), layout="constrained")
        ax = fig.subplots()
        bottom = np.zeros(len(part))
        palette = sns.color_palette("tab10" if len(classes) <= 10 else "husl", len(classes))
        for color, column in zip(palette, classes):
            counts = part[column].fillna(0).to_numpy()
            ax.bar(x, counts, bottom=bottom, width=0.85, color=color,
                   label=column.removeprefix("class_"))
            bottom += counts
        _client_ticks(ax, list(part["client_id"]))
        ax.grid(axis="x", visible=False)
        ax.set(xlabel="Client", ylabel="Training samples",
               title=f"Partition of run {run_name}"
                     + (f" ({', '.join(details)})" if details else ""))
        fig.legend(loc="outside right upper", title="Class", fontsize="small")
        return _save(fig, out_dir, name)


# ---------------------------------------------------------------- everything at once

def analyze(results_dir: str | Path = "results", out_dir: str | Path | None = None,
            target_accuracy: float = 90.0) -> dict:
    """Load the runs in results_dir and write every table and figure into out_dir.

    out_dir defaults to <results_dir>/analysis (never read back as a run: it has no config.json).
    Returns {"out_dir": Path, "tables": {name: {"csv"|"md"|"tex": Path}},
    "figures": {name: {"png"|"pdf": Path}}}.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "analysis"
    runs = load_runs(results_dir)
    tables = {"methods": method_table(runs, target_accuracy),
              "methods_stats": label_stats(runs, target_accuracy),
              "runs": run_table(runs, target_accuracy)}
    figures = {"accuracy_vs_round": plot_accuracy_vs_round(runs, out_dir, target_accuracy),
               "accuracy_vs_uplink": plot_accuracy_vs_uplink(runs, out_dir),
               "accuracy_vs_flops": plot_accuracy_vs_flops(runs, out_dir),
               "client_pruning_ratios": plot_client_pruning(runs, out_dir),
               "partition": plot_partition(runs, out_dir)}
    return {"out_dir": out_dir,
            "tables": {name: write_table(df, out_dir, name) for name, df in tables.items()},
            "figures": figures}
