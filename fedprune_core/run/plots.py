"""A run's figures (300 DPI PNG): the seed's four plus the partition's class histogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
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
    """The sent fraction (a few percent) and the pruning ratio (tens of percent) on axes of
    their own, each fit to its data: on one 0-100 axis the first is a line on the floor."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    sent, pruned = m["avg_transmitted_ratio"], m["avg_pruning_ratio"]
    blue, orange = colormaps["tab10"](0), colormaps["tab10"](1)
    ax.plot(m["round"], sent, marker="o", ms=3, color=blue,
            label="sent coordinates / model size")
    ax.set(xlabel="Round", title="Compression and pruning",
           ylim=(0, max(1e-6, 1.15 * float(sent.max()))))
    ax.set_ylabel("Sent fraction", color=blue)
    right = ax.twinx()
    right.plot(m["round"], pruned, marker="s", ms=3, color=orange,
               label="mean pruning ratio")
    right.set_ylim(0, max(0.05, min(1.0, 1.15 * float(pruned.max()))))
    right.set_ylabel("Pruning ratio", color=orange)
    lines = ax.get_lines() + right.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="lower right")
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
        fig.suptitle(title, fontsize=9, parse_math=False)  # a label is text, not math
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
    fig.suptitle(f"FedPrune-Sparse dashboard: {title}", fontsize=11, parse_math=False)
    fig.tight_layout()
    fig.savefig(run_dir / "experiment_dashboard.png", dpi=DPI)
    out["experiment_dashboard"] = run_dir / "experiment_dashboard.png"
    return out


def diagnostics_figures(diagnostics: pd.DataFrame, run_dir: Path,
                        title: str = "") -> dict[str, Path]:
    """class_recall.png: recall per class over rounds, a heatmap."""
    out = {}
    recall = diagnostics[diagnostics.metric == "class_recall"].pivot(
        index="class", columns="round", values="value")
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
    return out


# A style per deployed width, told apart in a grey-scale print too: seaborn's colour-blind
# palette, a marker and a line style each (widths i and i + 4 share no line style and marker).
WIDTH_COLOURS = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4",
                 "#949494", "#ece133", "#56b4e9")
WIDTH_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
WIDTH_LINES = ("-", "--", "-.", ":")
WIDTH_FIGURE = (7.0, 2.9)  # inches, before the legend: the printed size (analysis.display_width)
LEGEND_PT = 9.0  # the width figure's legend and labels, at the printed size


def width_styles(ratios) -> dict[float, dict]:
    """{ratio: matplotlib line keywords}: the full width the server holds (ratio 0) a thick
    black line with stars; the others, widest first, colour, marker and line style i."""
    styles = {0.0: {"color": "black", "marker": "*", "linestyle": "-", "lw": 2.0, "ms": 7}}
    for i, ratio in enumerate(sorted(r for r in ratios if r > 0)):
        styles[ratio] = {"color": WIDTH_COLOURS[i % len(WIDTH_COLOURS)],
                         "marker": WIDTH_MARKERS[i % len(WIDTH_MARKERS)],
                         "linestyle": WIDTH_LINES[i % len(WIDTH_LINES)], "lw": 1.3, "ms": 4.5}
    return styles


def width_figure(widths: pd.DataFrame, title: str = "") -> Figure | None:
    """The figure of width_figures (None with fewer than two widths): left, each deployed
    width's accuracy over the rounds it was evaluated (lines join consecutive evaluations
    only) beside the full width the server holds; right, each width's mean accuracy against
    its training FLOPs a sample; one legend under both, in type readable at print size."""
    if widths.empty or widths.ratio.nunique() < 2:
        return None
    fig = Figure(figsize=WIDTH_FIGURE, layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure the legend with
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    styles = width_styles(widths.ratio.unique())
    rounds = sorted(widths["round"].unique())
    position = {r: i for i, r in enumerate(rounds)}
    for ratio, style in styles.items():
        group = widths[widths.ratio == ratio].sort_values("round")
        name = "full width (server)" if ratio == 0 else f"ratio {ratio:.2f}"
        # a break wherever the evaluated rounds skip one, so no line bridges a gap
        runs = (group["round"].map(position).diff() != 1).cumsum()
        for k, (_, piece) in enumerate(group.groupby(runs)):
            left.plot(piece["round"], piece["test_accuracy"], label=name if k == 0 else None,
                      zorder=2 if ratio == 0 else 3, **style)  # thin lines over the thick
    left.set_xlabel("Round", fontsize=LEGEND_PT)
    left.set_ylabel("Test accuracy (%)", fontsize=LEGEND_PT)
    left.set_title("Accuracy at each deployed width", fontsize=LEGEND_PT)
    tail = widths.groupby("ratio").agg(acc=("test_accuracy", "mean"),
                                       flops=("train_flops_per_sample", "first"))
    right.plot(tail.flops / 1e6, tail.acc, color="grey", lw=0.8, zorder=1)
    for ratio, row in tail.iterrows():
        style = styles[ratio]
        right.plot(row.flops / 1e6, row.acc, color=style["color"], marker=style["marker"],
                   ms=style["ms"] + 2, linestyle="none", zorder=3)
    right.set_xlabel("Training MFLOP a sample", fontsize=LEGEND_PT)
    right.set_ylabel("Mean over evaluations (%)", fontsize=LEGEND_PT)
    right.set_title("Accuracy against compute", fontsize=LEGEND_PT)
    for ax in (left, right):
        ax.tick_params(labelsize=LEGEND_PT)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=LEGEND_PT, parse_math=False)
    handles, labels = left.get_legend_handles_labels()
    legend_under(fig, handles, labels, fontsize=LEGEND_PT, handlelength=2.6)
    return fig


def legend_under(fig: Figure, handles: list, labels: list[str], max_cols: int = 5,
                 pad: float = 0.05, **legend_kw):
    """The legend under the axes, in as many columns as fit the figure's width (`max_cols` at
    most), the figure made `pad` inches plus the legend's height taller so the axes keep
    theirs. Also the analysis's figures' (analysis/figures.py)."""
    renderer = fig.canvas.get_renderer()
    legend = None
    for ncols in range(min(max_cols, len(handles)), 0, -1):
        if legend is not None:
            legend.remove()
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=ncols,
                            frameon=False, **legend_kw)
        if legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            break
    fig.set_figheight(fig.get_figheight() + legend.get_window_extent(renderer).height / fig.dpi
                      + pad)
    return legend


def width_figures(widths: pd.DataFrame, run_dir: Path, title: str = "") -> dict[str, Path]:
    """width_accuracy.png (structured runs, from widths.csv): width_figure at 300 DPI; {}
    with fewer than two widths."""
    fig = width_figure(widths, title)
    if fig is None:
        return {}
    path = run_dir / "width_accuracy.png"
    fig.savefig(path, dpi=DPI)  # the whole figure, its size the printed one
    return {"width_accuracy": path}


def client_figures(clients: pd.DataFrame, run_dir: Path, title: str = "") -> dict[str, Path]:
    """clients.png, from clients.csv: a row per client (all that took part), sharing the
    client axis across five panels: its capability (compute GFLOP/s, uplink Mbit/s, from its
    profile), then per round it was selected its pruning ratio, its update's uplink kB and its
    training loss (blank where it was not selected). Reads whether weak clients prune more,
    send less and train worse. {} when clients.csv has no rows."""
    if clients.empty:
        return {}
    ok = clients[clients["status"] == "ok"] if "status" in clients else clients
    ids = sorted(clients["client_id"].unique())
    rounds = sorted(clients["round"].unique())
    profile = clients.groupby("client_id")[["compute_gflops", "uplink_mbps"]].first() \
        .reindex(ids)
    fig = Figure(figsize=(11, min(9.0, max(3.6, 1.6 + 0.16 * len(ids)))), layout="constrained")
    axes = fig.subplots(1, 5, sharey=True, gridspec_kw={"width_ratios": [1, 1, 2, 2, 2]})
    y = np.arange(len(ids))
    for ax, column, label, colour in ((axes[0], "compute_gflops", "Compute (GFLOP/s)",
                                       colormaps["tab10"](0)),
                                      (axes[1], "uplink_mbps", "Uplink (Mbit/s)",
                                       colormaps["tab10"](1))):
        ax.barh(y, profile[column].to_numpy(), color=colour, height=0.8)
        ax.set(xlabel=label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_title("Capability", loc="left", fontsize=9)
    heat = [("pruning_ratio", "Pruning ratio", 1.0, "viridis"),
            ("uplink_bytes", "Uplink per update (kB)", 1e-3, "magma"),
            ("train_loss", "Training loss", 1.0, "cividis")]
    for ax, (column, label, scale, cmap) in zip(axes[2:], heat):
        grid = (ok.pivot_table(index="client_id", columns="round", values=column,
                               aggfunc="mean") * scale).reindex(index=ids, columns=rounds)
        colours = colormaps[cmap].with_extremes(bad="#eeeeee")  # grey: not selected
        image = ax.imshow(np.ma.masked_invalid(grid.to_numpy(dtype=float)), aspect="auto",
                          cmap=colours, interpolation="nearest",
                          extent=(-0.5, len(rounds) - 0.5, len(ids) - 0.5, -0.5))
        step = max(1, -(-len(rounds) // 10))
        ax.set_xticks(range(0, len(rounds), step), [str(r) for r in rounds[::step]])
        ax.set(xlabel="Round")
        ax.set_title(label, fontsize=9)
        ax.grid(False)
        fig.colorbar(image, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02,
                     aspect=30)
    step = -(-len(ids) // 40)
    axes[0].set_yticks(y[::step], [str(i) for i in ids[::step]])
    axes[0].set_ylim(len(ids) - 0.5, -0.5)  # client 0 on top, as in the heatmaps
    axes[0].set_ylabel("Client")
    if title:
        fig.suptitle(f"Clients: {title} (grey: not selected that round)", fontsize=9)
    fig.savefig(run_dir / "clients.png", dpi=DPI)
    return {"clients": run_dir / "clients.png"}


def _save(fig: Figure, path: Path, title: str) -> Path:
    if title:
        fig.suptitle(title, fontsize=9, parse_math=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # a legend beside the axes stays in
    return path
