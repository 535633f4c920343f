"""Figures across runs (PNG at 300 DPI and PDF): accuracy against rounds, bytes and FLOPs with
95% CI bands over seeds, clients' pruning ratios, and the data partition.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .loading import RunTable, label_order
from .tables import mean_ci

FIGURE_DPI = 300


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
    labels = label_order(runs.summaries)
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
    labels = [label for label in label_order(runs.summaries) if pruning.get(label, False)]
    if not labels:
        return _note_figure(out_dir, name, "No run in these results prunes its clients:\n"
                                           "there are no pruning ratios to show.")
    colors = _palette(label_order(runs.summaries))
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
        first = summaries[summaries["label"] == label_order(summaries)[0]]
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

