"""Figures across runs (PNG at 300 DPI and PDF): accuracy against rounds, bytes and FLOPs with
bands over seeds, the tail accuracy of each method against its total uplink and client FLOPs,
clients' pruning ratios, and the data partition.

Every method keeps one style (colour, marker and line style, `method_styles`) in every figure:
assigned in a fixed order, the baseline first and then the labels sorted, from a colour-blind
palette of 10 colours whose markers and line styles change with it, so 13 or 40 methods still
get distinct pairs. Legends use the short labels of loading.label_aliases (the tables keep the
full ones), sit under the axes, never wider than the figure, and name every line (the target
and what the bands mean too). Runs of different lengths are drawn against rounds in a panel
per length, each on its own scale, rather than squeezed onto the longest run's axis. The target
accuracy is drawn only when it lies near the curves (TARGET_REACH): a short run's curves are not
squashed into the bottom of an axis stretched up to it, and the legend says it is off the axis.
A log axis is labelled near every point of a tail figure (_log_ticks).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (FixedLocator, FuncFormatter, LogLocator, MaxNLocator,
                               NullFormatter)
from scipy import stats

from ..errors import ConfigError
from ..run.plots import legend_under
from .loading import BASELINE_LABEL, RunTable, label_aliases, label_order

# the analysis figures' legends: at most 4 columns, small type (run.plots.legend_under)
LEGEND = dict(max_cols=4, pad=0.1, fontsize="small", title_fontsize="small")

FIGURE_DPI = 300
FIGURE_WIDTH = 7.0  # inches: 2,100 px at 300 DPI, about the printed page's text width
MAX_WIDTH = 9.0  # no figure is wider (2,700 px)
BANDS = ("auto", "ci95", "std", "none")
BAND_TEXT = {"ci95": "95% CI over seeds", "std": "±1 SD over seeds"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_LINESTYLES = ("-", "--", "-.", ":")
_MARKS_PER_LINE = 12  # markers on a curve at most, however many rounds it has
# The accuracy axis stretches by at most this share of the curves' span to show the target.
TARGET_REACH = 0.25


@contextmanager
def _style():
    """Seaborn's look for the figures made inside, without changing global rcParams. Texts are
    plain: a label with dollar signs is a label, not matplotlib's math (which would drop them,
    or fail to draw on one alone)."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.25), \
            rc_context({"text.parse_math": False}):
        yield


@dataclass(frozen=True)
class Style:
    """How one method is drawn, in every figure."""

    color: tuple
    marker: str
    linestyle: str


def method_styles(labels, baseline: str = BASELINE_LABEL) -> dict[str, Style]:
    """{label: Style}, assigned in a fixed order (the baseline first, then sorted labels):
    method i gets colour i mod 10, marker (i + 9 x (i div 10)) mod 12 and line style i div 10.
    The markers of each later ten are shifted by nine, so a method that shares its colour with
    one of the first ten gets a shape far from that one's (a star beside the circle, not a
    look-alike hexagon), and, 19 being prime to 12, no two of the first 120 methods share a
    colour-marker pair. A
    label's style depends only on the set of labels compared, not on the order the runs were
    found in."""
    colors = sns.color_palette("colorblind", 10)
    ordered = sorted(set(labels), key=lambda label: (label != baseline, label))
    return {label: Style(tuple(colors[i % len(colors)]),
                         _MARKERS[(i + 9 * (i // len(colors))) % len(_MARKERS)],
                         _LINESTYLES[(i // len(colors)) % len(_LINESTYLES)])
            for i, label in enumerate(ordered)}


def resolve_bands(bands: str, runs: RunTable) -> str:
    """`auto` is what reads at the seeds there are: no band without two seeds, ±1 SD below four
    (a 95% t interval over 2 seeds is ±12.7 SD: a band from 0 to 100), the 95% CI from four."""
    if bands not in BANDS:
        raise ConfigError(f"bands: {bands!r} is not allowed; allowed: {', '.join(BANDS)}")
    if bands != "auto":
        return bands
    seeds = runs.summaries.groupby("label")["seed"].nunique()
    seeds = seeds[seeds >= 2]
    if seeds.empty:
        return "none"
    return "std" if seeds.min() < 4 else "ci95"


def _half_width(values: np.ndarray, bands: str) -> float:
    values = values[~np.isnan(values)]
    if bands == "none" or len(values) < 2:
        return float("nan")
    sd = float(values.std(ddof=1))
    if bands == "std":
        return sd
    return float(stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values)))


def accuracy_curves(metrics: pd.DataFrame, x: str = "round") -> pd.DataFrame:
    """Per label and round: mean of column `x` over seeds, and the test accuracy's mean, 95%
    CI half-width (`ci95`), standard deviation (`std`) and count (`n`).

    Rounds that were not evaluated (NaN accuracy) are left out.
    """
    evaluated = metrics.dropna(subset=["test_accuracy"])
    rows = []
    for (label, rnd), group in evaluated.groupby(["label", "round"], sort=True):
        acc = group["test_accuracy"].to_numpy(dtype=float)
        rows.append({"label": label, "round": rnd, "x": group[x].mean(), "mean": acc.mean(),
                     "ci95": _half_width(acc, "ci95"), "std": _half_width(acc, "std"),
                     "n": len(acc)})
    return pd.DataFrame(rows, columns=["label", "round", "x", "mean", "ci95", "std", "n"])


def display_width(png: str | Path, most: int = 980) -> int:
    """Pixels to show a saved figure at in a notebook or report: its printed width at 100 px an
    inch (text near its printed size, the same size in every figure), `most` at most."""
    from PIL import Image

    with Image.open(png) as image:
        dpi = (image.info.get("dpi") or (FIGURE_DPI, FIGURE_DPI))[0] or FIGURE_DPI
        return int(min(most, round(image.width / dpi * 100)))


def _save(fig: Figure, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Save as <name>.png (300 DPI) and <name>.pdf; return the paths. The whole figure and
    nothing else: its size is the PNG's (the legend is inside it, see run.plots.legend_under)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"png": out_dir / f"{name}.png", "pdf": out_dir / f"{name}.pdf"}
    fig.savefig(paths["png"], dpi=FIGURE_DPI)
    fig.savefig(paths["pdf"])
    return paths


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(min(width, MAX_WIDTH), height), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure the legend with
    return fig


def _note_figure(out_dir: str | Path, name: str, text: str) -> dict[str, Path]:
    """A figure that only says why there is nothing to draw, so the set of outputs stays fixed."""
    with _style():
        fig = _new_figure(FIGURE_WIDTH, 2.0)
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, text, ha="center", va="center")
        return _save(fig, out_dir, name)


def _band_handles(bands: str, target_accuracy: float | None,
                  target_at: str = "drawn") -> tuple[list, list[str]]:
    handles, labels = [], []
    if bands in BAND_TEXT:
        handles.append(Patch(facecolor="grey", alpha=0.25, linewidth=0))
        labels.append(f"band: {BAND_TEXT[bands]}")
    if target_accuracy is not None:
        handles.append(Line2D([], [], color="black", linestyle=(0, (4, 3)), linewidth=1))
        labels.append(f"target {target_accuracy:g}%" + (
            "" if target_at == "drawn" else f": {target_at} the axis (not drawn)"))
    return handles, labels


def target_position(target: float, curves: pd.DataFrame, bands: str) -> str:
    """Where the target accuracy lies against the curves drawn (means, and their bands):
    'drawn' within their range widened by TARGET_REACH of its span on either side, else
    'above' or 'below' (then not drawn: the axis would squash the curves to reach it)."""
    half = curves[bands].fillna(0) if bands in BAND_TEXT else 0.0
    low = float((curves["mean"] - half).clip(0, 100).min())
    high = float((curves["mean"] + half).clip(0, 100).max())
    if not (np.isfinite(low) and np.isfinite(high)):
        return "drawn"
    reach = TARGET_REACH * max(high - low, 1.0)
    return "above" if target > high + reach else "below" if target < low - reach else "drawn"


def _draw_curves(ax, curves: pd.DataFrame, labels: list[str], styles: dict, bands: str,
                 log_x: bool) -> None:
    for label in labels:
        c = curves[curves["label"] == label]
        if log_x:
            c = c[c["x"] > 0]
        if c.empty:
            continue
        s = styles[label]
        ax.plot(c["x"], c["mean"], color=s.color, marker=s.marker, linestyle=s.linestyle,
                markersize=4, linewidth=1.3, markevery=max(1, -(-len(c) // _MARKS_PER_LINE)))
        if bands in BAND_TEXT:
            half = c[bands].fillna(0)
            # Accuracy is bounded, so the band is drawn clipped to [0, 100].
            ax.fill_between(c["x"], (c["mean"] - half).clip(0, 100),
                            (c["mean"] + half).clip(0, 100), color=s.color, alpha=0.15,
                            linewidth=0)
    if log_x:
        ax.set_xscale("log")
        _log_ticks(ax.xaxis)


def _log_ticks(axis, near=()) -> None:
    """A log axis labelled 0.5, 1, 2, 5, 10 ... in plain numbers (not 10^0): every 1-2-5 step
    when it spans three decades or fewer, else the powers of ten and the 1-2-5 step nearest
    each value in `near` (a figure's points), so a reader finds every point's value on the
    axis within a factor of 1.6."""
    axis.axes.autoscale_view()
    low, high = axis.get_view_interval()
    decades = math.log10(max(high, 1e-12) / max(low, 1e-12)) if low > 0 else 3
    subs = (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    if low > 0 and decades > 3 and near:
        steps = [(c, c * 10.0 ** k) for k in range(math.floor(math.log10(low)) - 1,
                                                   math.ceil(math.log10(high)) + 1)
                 for c in (1, 2, 5) if low <= c * 10.0 ** k <= high]
        ticks = {t for c, t in steps if c == 1}
        ticks |= {min((t for _, t in steps), key=lambda t: abs(math.log(t / v)))
                  for v in near if v > 0}
        axis.set_major_locator(FixedLocator(sorted(ticks)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
    axis.set_minor_formatter(NullFormatter())


def _run_lengths(runs: RunTable) -> dict[str, int]:
    """Each label's planned rounds (config `rounds`; else the last round it logged): a run
    stopped at its target accuracy ends early in its planned length's panel."""
    last = runs.metrics.groupby("label")["round"].max()
    planned = (runs.summaries.groupby("label")["rounds"].max().dropna().to_dict()
               if "rounds" in runs.summaries else {})
    return {label: int(planned.get(label, n)) for label, n in last.items()}


def _method_handles(labels, styles, aliases) -> tuple[list, list[str]]:
    handles = [Line2D([], [], color=styles[k].color, marker=styles[k].marker,
                      linestyle=styles[k].linestyle, markersize=5) for k in labels]
    return handles, [aliases[k] for k in labels]


def accuracy_figure(runs: RunTable, x: str, xlabel: str, target_accuracy: float | None = None,
                    bands: str = "auto", baseline: str = BASELINE_LABEL,
                    log_x: bool = False) -> Figure:
    """Mean test accuracy over seeds against `x`, a line per method with its band, and the
    target accuracy as a dashed line when it lies near them (target_position). Against
    rounds, runs of different lengths get a panel each (sharing the accuracy axis)."""
    bands = resolve_bands(bands, runs)
    curves = accuracy_curves(runs.metrics, x)
    labels = label_order(runs.summaries)
    styles, aliases = method_styles(labels, baseline), label_aliases(runs.summaries)
    if x == "round":
        lengths = _run_lengths(runs)
        groups = {n: [k for k in labels if lengths.get(k) == n]
                  for n in sorted(set(lengths.values()))}
    else:
        groups = {None: labels}
    ncols = min(len(groups), 3)
    nrows = -(-len(groups) // ncols)
    with _style():
        fig = _new_figure(FIGURE_WIDTH if ncols == 1 else 3.2 * ncols, 3.6 + 2.6 * (nrows - 1))
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        drawn = curves[curves["label"].isin(labels) & ((curves["x"] > 0) if log_x else True)]
        target_at = (target_position(target_accuracy, drawn, bands)
                     if target_accuracy is not None else None)
        for ax, (length, members) in zip(axes, groups.items()):
            _draw_curves(ax, curves, members, styles, bands, log_x)
            if target_at == "drawn":
                ax.axhline(target_accuracy, color="black", linestyle=(0, (4, 3)), linewidth=1)
            if x == "round":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xlim(0.5, length + 0.5)
                if len(groups) > 1:
                    ax.set_title(f"{length}-round runs", fontsize="medium")
            ax.set_xlabel(xlabel)
        for ax in axes[len(groups):]:
            ax.set_visible(False)
        for ax in axes[::ncols]:
            ax.set_ylabel("Test accuracy (%)")
        handles, texts = _method_handles(labels, styles, aliases)
        extra, extra_texts = _band_handles(bands, target_accuracy, target_at)
        legend_under(fig, handles + extra, texts + extra_texts, **LEGEND,
                     title="Mean over seeds" if bands == "none" else None)
        return fig


def plot_accuracy_vs_round(runs: RunTable, out_dir: str | Path,
                           target_accuracy: float | None = None, bands: str = "auto",
                           baseline: str = BASELINE_LABEL) -> dict[str, Path]:
    """Test accuracy against round per method; a dashed line marks the target accuracy."""
    fig = accuracy_figure(runs, "round", "Round", target_accuracy, bands, baseline)
    return _save(fig, out_dir, "accuracy_vs_round")


def plot_accuracy_vs_uplink(runs: RunTable, out_dir: str | Path, bands: str = "auto",
                            baseline: str = BASELINE_LABEL,
                            target_accuracy: float | None = None) -> dict[str, Path]:
    """Test accuracy against cumulative uplink MB (log scale): accuracy bought per byte sent."""
    fig = accuracy_figure(runs, "cumulative_uplink_mb", "Cumulative uplink (MB, log scale)",
                          target_accuracy, bands, baseline, log_x=True)
    return _save(fig, out_dir, "accuracy_vs_uplink")


def plot_accuracy_vs_flops(runs: RunTable, out_dir: str | Path, bands: str = "auto",
                           baseline: str = BASELINE_LABEL,
                           target_accuracy: float | None = None) -> dict[str, Path]:
    """Test accuracy against cumulative client training GFLOP (log scale): accuracy bought per
    unit of work (log: a long run's total would squeeze short runs against the axis)."""
    fig = accuracy_figure(runs, "cumulative_client_train_gflops",
                          "Cumulative client training (GFLOP, log scale)", target_accuracy,
                          bands, baseline, log_x=True)
    return _save(fig, out_dir, "accuracy_vs_flops")


def tail_figure(runs: RunTable, x: str, xlabel: str, unit: str, bands: str = "auto",
                baseline: str = BASELINE_LABEL) -> Figure:
    """One point per method: its tail accuracy (mean over seeds, error bar as `bands`)
    against its mean total of `x` (a summary.json number), on a log scale when the totals
    span ten times or more, labelled near every point (_log_ticks)."""
    bands = resolve_bands(bands, runs)
    labels = label_order(runs.summaries)
    styles, aliases = method_styles(labels, baseline), label_aliases(runs.summaries)
    points = {}
    for label in labels:
        group = runs.summaries[runs.summaries["label"] == label]
        acc = group["tail_test_accuracy"].to_numpy(dtype=float)
        cost = group[x].to_numpy(dtype=float) if x in group else np.array([np.nan])
        if not np.isnan(acc).all() and np.nanmean(cost) > 0:
            points[label] = (np.nanmean(cost), np.nanmean(acc), _half_width(acc, bands))
    costs = [c for c, _, _ in points.values()]
    log_x = bool(costs) and max(costs) >= 10 * min(costs)  # else a linear axis reads better
    with _style():
        fig = _new_figure(FIGURE_WIDTH, 3.8)
        ax = fig.subplots()
        for label, (cost, acc, half) in points.items():
            s = styles[label]
            ax.errorbar(cost, acc, yerr=None if np.isnan(half) else half, color=s.color,
                        marker=s.marker, markersize=7, capsize=3, linestyle="none",
                        elinewidth=1.2)
        ax.set(xlabel=f"{xlabel} ({unit}{', log scale' if log_x else ''})",
               ylabel="Tail test accuracy (%)")
        if log_x:
            ax.set_xscale("log")
            _log_ticks(ax.xaxis, near=costs)
        handles, texts = _method_handles(labels, styles, aliases)
        for h in handles:
            h.set_linestyle("none")
        legend_under(fig, handles, texts, **LEGEND, title="Mean over seeds" + (
            f"; bars: {BAND_TEXT[bands]}" if bands in BAND_TEXT else ""))
        return fig


def plot_tail_vs_uplink(runs: RunTable, out_dir: str | Path, bands: str = "auto",
                        baseline: str = BASELINE_LABEL) -> dict[str, Path]:
    """The figure a thesis cites first: each method's tail accuracy against its total uplink."""
    fig = tail_figure(runs, "total_uplink_mb", "Total uplink per run", "MB", bands, baseline)
    return _save(fig, out_dir, "tail_vs_uplink")


def plot_tail_vs_flops(runs: RunTable, out_dir: str | Path, bands: str = "auto",
                       baseline: str = BASELINE_LABEL) -> dict[str, Path]:
    """Each method's tail accuracy against its clients' total training GFLOP."""
    fig = tail_figure(runs, "total_client_train_gflops", "Client training per run", "GFLOP",
                      bands, baseline)
    return _save(fig, out_dir, "tail_vs_flops")


def plot_client_pruning(runs: RunTable, out_dir: str | Path,
                        baseline: str = BASELINE_LABEL) -> dict[str, Path]:
    """Box plot of each client's pruning ratio over rounds and seeds; a panel per pruning method
    (two panels a row from three methods on)."""
    name = "client_pruning_ratios"
    clients = runs.clients
    # Judged from the data, not the config, so it also works for runs with sparse configs.
    pruning = (clients.groupby("label")["pruning_ratio"].max() > 0) if not clients.empty \
        else pd.Series(dtype=bool)
    labels = [label for label in label_order(runs.summaries) if pruning.get(label, False)]
    if not labels:
        return _note_figure(out_dir, name, "No run in these results prunes its clients:\n"
                                           "there are no pruning ratios to show.")
    styles = method_styles(label_order(runs.summaries), baseline)
    aliases = label_aliases(runs.summaries)
    client_ids = sorted(clients["client_id"].unique())
    ncols = 1 if len(labels) <= 2 else 2 if len(labels) <= 6 else 3
    nrows = -(-len(labels) // ncols)
    with _style():
        fig = _new_figure(FIGURE_WIDTH if ncols == 1 else MAX_WIDTH, 0.6 + 1.8 * nrows)
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax, label in zip(axes, labels):
            ratios = clients.loc[clients["label"] == label, ["client_id", "pruning_ratio"]]
            per_client = [ratios.loc[ratios["client_id"] == c, "pruning_ratio"] for c in client_ids]
            boxes = ax.boxplot(per_client, positions=range(len(client_ids)), patch_artist=True,
                               flierprops={"markersize": 2}, medianprops={"color": "black"})
            for box in boxes["boxes"]:
                box.set(facecolor=styles[label].color, alpha=0.7)
            ax.set_title(aliases[label].replace("\n", " "), fontsize="small")
        for ax in axes[len(labels):]:
            ax.set_visible(False)
        for ax in axes[::ncols]:
            ax.set_ylabel("Pruning ratio")
        for ax in axes[:len(labels)][-ncols:]:  # the lowest panel of each column
            ax.set_xlabel("Client")
            ax.tick_params(labelbottom=True)
            _client_ticks(ax, client_ids, max_labels=40 // ncols)
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
        fig = _new_figure(min(MAX_WIDTH, max(FIGURE_WIDTH, 0.12 * len(part) + 2)), 3.6)
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
        ax.set(xlabel="Client", ylabel="Training samples")
        ax.set_title(f"Partition of run {run_name}"
                     + (f" ({', '.join(details)})" if details else ""), fontsize="medium")
        fig.legend(loc="outside right upper", title="Class", fontsize="small",
                   ncols=1 if len(classes) <= 12 else 2)
        return _save(fig, out_dir, name)
