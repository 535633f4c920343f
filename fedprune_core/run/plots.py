"""A run's figures (300 DPI PNG): the seed's four plus the partition's class histogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure  # not pyplot: no global state, works under any backend
from matplotlib.ticker import MaxNLocator

DPI = 300


def _accuracy(ax, m: pd.DataFrame):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ev = m.dropna(subset=["test_accuracy"])
    ax.plot(ev["round"], ev["test_accuracy"], marker="o", ms=3)
    ax.set(xlabel="Round", ylabel="Test accuracy (%)", title="Global model accuracy")
    ax.grid(alpha=0.3)


def _compression(ax, m: pd.DataFrame):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.plot(m["round"], 100 * m["avg_transmitted_ratio"], marker="o", ms=3,
            label="transmitted coordinates (%)")
    ax.plot(m["round"], 100 * m["avg_pruning_ratio"], marker="s", ms=3,
            label="pruning ratio (%)")
    ax.set(xlabel="Round", ylabel="Percent", title="Compression and pruning", ylim=(0, 105))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _round_time(ax, m: pd.DataFrame):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.plot(m["round"], m["avg_round_time_sec"], marker="o", ms=3,
            label="measured client update (s)")
    ax.plot(m["round"], m["simulated_round_time_sec"], marker="s", ms=3,
            label="simulated round (s)")
    ax.set(xlabel="Round", ylabel="Seconds", title="Round time")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _uplink(ax, m: pd.DataFrame):
    ev = m.dropna(subset=["test_accuracy"])
    ax.plot(ev["cumulative_uplink_bytes"] / 1e6, ev["test_accuracy"], marker="o", ms=3)
    ax.set(xlabel="Cumulative uplink (MB)", ylabel="Test accuracy (%)",
           title="Accuracy vs communication")
    ax.grid(alpha=0.3)


def _single(draw, m, path: Path, title: str | None = None) -> Path:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    draw(ax, m)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def partition_figure(counts: np.ndarray, path: Path) -> Path:
    """partition_plot saved at 300 DPI."""
    partition_plot(counts).savefig(path, dpi=DPI)
    return path


MAX_BARS = 200  # beyond this many clients, bars are thinner than a pixel: a heatmap instead


def partition_plot(counts: np.ndarray) -> Figure:
    """Stacked bars: samples of each class on each client (a heatmap for large federations)."""
    fig = Figure(figsize=(min(14, max(6, 0.35 * len(counts))), 4))
    ax = fig.subplots()
    if len(counts) > MAX_BARS:
        image = ax.imshow(counts.T, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set(xlabel="Client", ylabel="Class", title="Partition: samples of each class per client")
        fig.colorbar(image, ax=ax, label="samples")
        fig.tight_layout()
        return fig
    bottom = np.zeros(len(counts))
    colors = colormaps["tab10" if counts.shape[1] <= 10 else "tab20"]
    for c in range(counts.shape[1]):
        ax.bar(np.arange(len(counts)), counts[:, c], bottom=bottom, color=colors(c),
               label=str(c))
        bottom += counts[:, c]
    ax.set(xlabel="Client", ylabel="Samples", title="Partition: classes per client")
    # Client ids are whole numbers: a tick per client, or every k-th when there are many.
    step = -(-len(counts) // 40)
    ax.set_xticks(range(0, len(counts), step))
    ax.set_xlim(-0.6, len(counts) - 0.4)
    ax.legend(title="class", fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def run_figures(metrics: pd.DataFrame, run_dir: Path, title: str = "") -> dict[str, Path]:
    """The seed's four figures from metrics.csv rows."""
    out = {
        "accuracy_curve": _single(_accuracy, metrics, run_dir / "accuracy_curve.png", title),
        "compression_pruning_curve": _single(_compression, metrics,
                                             run_dir / "compression_pruning_curve.png", title),
        "round_time_curve": _single(_round_time, metrics, run_dir / "round_time_curve.png",
                                    title),
    }
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2)
    for draw, ax in zip((_accuracy, _uplink, _compression, _round_time), axes.flat):
        draw(ax, metrics)
    fig.suptitle(f"FedPrune-Sparse dashboard: {title}", fontsize=11)
    fig.tight_layout()
    fig.savefig(run_dir / "experiment_dashboard.png", dpi=DPI)
    out["experiment_dashboard"] = run_dir / "experiment_dashboard.png"
    return out


def diagnostics_figures(diagnostics: pd.DataFrame, run_dir: Path,
                        title: str = "") -> dict[str, Path]:
    """class_recall.png (recall per class over rounds, a heatmap) and, for structured runs,
    width_accuracy.png (each used width's sub-model accuracy over rounds)."""
    out = {}
    recall = diagnostics[diagnostics.metric == "class_recall"].pivot(
        index="key", columns="round", values="value")
    if not recall.empty:
        fig = Figure(figsize=(max(6, 0.3 * recall.shape[1] + 2), 4))
        ax = fig.subplots()
        image = ax.imshow(recall.values, aspect="auto", cmap="viridis", vmin=0, vmax=100)
        ax.set_yticks(range(len(recall.index)), [str(int(k)) for k in recall.index])
        step = max(1, len(recall.columns) // 20)
        ax.set_xticks(range(0, len(recall.columns), step), recall.columns[::step])
        ax.set(xlabel="Round", ylabel="Class", title="Recall per class of the global model (%)")
        fig.colorbar(image, ax=ax)
        out["class_recall"] = _save(fig, run_dir / "class_recall.png", title)
    widths = diagnostics[diagnostics.metric == "width_accuracy"]
    if not widths.empty:
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ratio, group in widths.groupby("key"):
            ax.plot(group["round"], group["value"], marker="o", ms=2, label=f"{ratio:.2f}")
        ax.set(xlabel="Round", ylabel="Test accuracy (%)",
               title="Sub-model accuracy at each used pruning ratio")
        ax.legend(title="ratio", fontsize=6, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
        ax.grid(alpha=0.3)
        out["width_accuracy"] = _save(fig, run_dir / "width_accuracy.png", title)
    return out


def _save(fig: Figure, path: Path, title: str) -> Path:
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
