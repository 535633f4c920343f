"""Interactive explorer for JupyterLab: a few controls, a Run button, a plot that grows live.

`explorer()` builds its controls from ExperimentConfig (defaults from the dataclass fields,
choices from their metadata), so it offers nothing the core does not know. A click runs a short
experiment in the kernel; `run_experiment`'s `on_round_end` hook redraws the figure and the
per-round table after every round. Each click is a new run folder `explore_<timestamp>` in
`results_dir`, like any other run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import io
import traceback
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # not pyplot: no global state, no inline backend needed
from matplotlib.ticker import MaxNLocator

from ..checks import choices
from ..config import ConfigError, ExperimentConfig
from ..errors import exit_status

MB = 1e6
FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}

# The method dropdown says whether clients prune and whether they compress their updates;
# off means pruning_mode / sparsify_method `none`.
METHODS = {"FedAvg": (False, False), "Pruning only": (True, False),
           "Sparsification only": (False, True), "Hybrid": (True, True)}
# Slider ranges (min, max, step); a number field is an integer >= 1 (seed: >= 0).
SLIDERS = {"pruning_ratio": (0.0, 0.9, 0.05), "sparsity_ratio": (0.5, 0.999, 0.001),
           "data_fraction": (0.05, 1.0, 0.05)}
CONTROLS = ("method", "pruning_mode", "pruning_ratio", "adaptive_ratio", "sparsify_method",
            "sparsity_ratio", "error_feedback", "rounds", "num_clients", "clients_per_round",
            "data_fraction", "seed")
PRUNING_CONTROLS = ("pruning_mode", "pruning_ratio", "adaptive_ratio")
SPARSIFY_CONTROLS = ("sparsify_method", "sparsity_ratio", "error_feedback")
# The explorer's only departure from ExperimentConfig's defaults: a quick first click.
QUICK = {"data_fraction": 0.2, "rounds": 5, "local_epochs": 1}
TABLE_COLUMNS = {"round": "round", "test_accuracy": "accuracy (%)", "test_loss": "test loss",
                 "uplink_mb": "uplink (MB)", "sent_pct": "sent (%)",
                 "avg_pruning_ratio": "pruning ratio", "wall_time_sec": "wall (s)"}
TABLE_FORMATS = {"accuracy (%)": "{:.2f}".format, "test loss": "{:.4f}".format,
                 "uplink (MB)": "{:.3f}".format, "sent (%)": "{:.2f}".format,
                 "pruning ratio": "{:.2f}".format, "wall (s)": "{:.1f}".format}


def method_of(pruning: bool, compression: bool) -> str:
    return next(name for name, flags in METHODS.items() if flags == (pruning, compression))


def config_from_controls(values: dict[str, Any]) -> ExperimentConfig:
    """The config for the controls' values: `method` off switches pruning_mode or
    sparsify_method to `none`.

    Any other key is an ExperimentConfig field (validated and coerced by `from_dict`).
    """
    values = dict(values)
    method = values.pop("method", None)
    if method is not None:
        if method not in METHODS:
            raise ConfigError(f"method: {method!r} is not allowed; allowed: {', '.join(METHODS)}")
        pruning, compression = METHODS[method]
        if not pruning:
            values["pruning_mode"] = "none"
        elif values.get("pruning_mode") == "none":
            values["pruning_mode"] = FIELDS["pruning_mode"].default
        if not compression:
            values["sparsify_method"] = "none"
        elif values.get("sparsify_method") == "none":
            values["sparsify_method"] = FIELDS["sparsify_method"].default
    return ExperimentConfig.from_dict(values)


def fresh_run_name(results_dir: str | Path) -> str:
    """`explore_<timestamp>`, with a suffix when two clicks fall in the same second."""
    name = dt.datetime.now().strftime("explore_%Y%m%d_%H%M%S")
    candidate, n = name, 1
    while (Path(results_dir) / candidate).exists():
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def progress_frame(rows: list[dict]) -> pd.DataFrame:
    m = pd.DataFrame(rows)
    m["uplink_mb"] = m["cumulative_uplink_bytes"] / MB
    m["sent_pct"] = 100 * m["avg_transmitted_ratio"]
    return m


def progress_png(rows: list[dict], title: str, rounds: int) -> bytes:
    """progress_figure as PNG bytes, for the explorer's Image widget."""
    buffer = io.BytesIO()
    progress_figure(rows, title, rounds).savefig(buffer, format="png")
    return buffer.getvalue()


def progress_figure(rows: list[dict], title: str, rounds: int) -> Figure:
    """Accuracy and cumulative uplink against round (dense FedAvg's uplink for scale)."""
    m = progress_frame(rows)
    fig = Figure(figsize=(9, 3.2), dpi=100, layout="constrained")
    acc, up = fig.subplots(1, 2)
    ev = m.dropna(subset=["test_accuracy"])
    acc.plot(ev["round"], ev["test_accuracy"], marker="o", ms=3)
    acc.set(xlabel="Round", ylabel="Test accuracy (%)", title="Accuracy", ylim=(0, 100))
    up.plot(m["round"], m["uplink_mb"], marker="o", ms=3, label="this run")
    # Dense FedAvg's uplink over every planned round (the same clients each round, 4 bytes a
    # parameter): a reference already whole at round 1, where one point would draw no line.
    planned = np.arange(1, rounds + 1)
    up.plot(planned, planned * m["uplink_dense_bytes"].mean() / MB, ls="--", color="grey",
            label="dense FedAvg")
    # log scale: at 95%+ sparsity the run's curve would lie flat under dense FedAvg's
    up.set(xlabel="Round", ylabel="MB (log scale)", title="Cumulative uplink", yscale="log")
    up.legend(fontsize=8)
    for ax in (acc, up):
        ax.set_xlim(0.5, rounds + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def progress_table(rows: list[dict]) -> str:
    m = progress_frame(rows)[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
    return m.to_html(index=False, formatters=TABLE_FORMATS, na_rep="–")


def _control(name: str, value: Any) -> widgets.ValueWidget:
    style, layout = {"description_width": "140px"}, widgets.Layout(width="360px")
    if name == "method":
        return widgets.Dropdown(options=list(METHODS), value=value, description="method",
                                style=style, layout=layout)
    spec = FIELDS[name]
    common = dict(value=value, description=name, tooltip=spec.metadata["help"], style=style,
                  layout=layout)
    if choices(spec):
        return widgets.Dropdown(options=list(choices(spec)), **common)
    if name in SLIDERS:
        low, high, step = SLIDERS[name]
        digits = len(f"{step:g}".split(".")[-1])
        return widgets.FloatSlider(min=low, max=high, step=step, readout_format=f".{digits}f",
                                   continuous_update=False, **common)
    if spec.type == "bool":
        return widgets.Checkbox(indent=False, **common)
    return widgets.BoundedIntText(min=0 if name == "seed" else 1, max=10**6, **common)


class Explorer(widgets.VBox):
    """The explorer's widget; its parts: `controls`, `run_button`, `figure`, `table`,
    `clients` (the finished run's per-client figure), `status`."""

    def __init__(self, results_dir: str | Path = "results", **defaults):
        # A wrong default fails here, not at the first click; values come back coerced.
        start = config_from_controls({**QUICK, **defaults, "results_dir": str(results_dir)})
        start = {**start.to_dict(), "method": method_of(start.pruning, start.compression)}
        self.fixed = {k: v for k, v in start.items() if k not in CONTROLS}
        self.controls = {name: _control(name, start[name]) for name in CONTROLS}
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        # Hidden until there is a PNG: an empty Image widget shows a broken-image icon.
        self.figure = widgets.Image(format="png", layout=widgets.Layout(width="900px",
                                                                        display="none"))
        self.table = widgets.HTML()
        # the per-client view (run/plots.client_figures) of the finished run
        self.clients = widgets.Image(format="png", layout=widgets.Layout(width="900px",
                                                                         display="none"))
        self.status = widgets.HTML()
        self.controls["method"].observe(self._enable_controls, names="value")
        self._enable_controls()
        self.run_button.on_click(self.run)
        c = self.controls
        columns = widgets.HBox([
            widgets.VBox([c[n] for n in ("method", *PRUNING_CONTROLS, *SPARSIFY_CONTROLS)]),
            widgets.VBox([c[n] for n in ("rounds", "num_clients", "clients_per_round",
                                         "data_fraction", "seed")] + [self.run_button])])
        super().__init__([columns, self.status, self.figure, self.table, self.clients])

    def values(self) -> dict[str, Any]:
        # a slider's value can carry float noise (0.35000000000000003) into config.json
        return {**self.fixed, **{name: round(w.value, 6) if isinstance(w.value, float) else w.value
                                 for name, w in self.controls.items()}}

    def _enable_controls(self, change=None) -> None:
        pruning, sparsification = METHODS[self.controls["method"].value]
        for name in PRUNING_CONTROLS:
            self.controls[name].disabled = not pruning
        for name in SPARSIFY_CONTROLS:
            self.controls[name].disabled = not sparsification

    def _say(self, text: str, detail: str = "", color: str = "inherit") -> None:
        body = f'<span style="color:{color}">{html.escape(text)}</span>'
        if detail:
            body += (f"<details><summary>traceback</summary><pre>{html.escape(detail)}</pre>"
                     "</details>")
        self.status.value = body

    def on_round_end(self, cfg: ExperimentConfig, rows: list[dict], row: dict) -> None:
        """Keep `row` and redraw the figure and table (run_experiment's per-round hook)."""
        rows.append(row)
        self.figure.value = progress_png(rows, cfg.method_label, cfg.rounds)
        self.figure.layout.display = None
        self.table.value = progress_table(rows)
        self._say(f"round {row['round']}/{cfg.rounds} of {cfg.run_name} ...")

    def run(self, _button=None) -> None:
        """The Run button: validate, then run one experiment with a live figure."""
        # torch is heavy: imported when a run starts, not when the controls are built
        from ..run.loop import run_experiment

        values = {**self.values(), "progress": "off"}
        values["run_name"] = fresh_run_name(values["results_dir"])
        try:
            cfg = config_from_controls(values)
        except ConfigError as err:
            self._say(f"Invalid settings: {err}", color="#b00020")
            return
        self.run_button.disabled = True
        self.figure.value, self.table.value, rows = b"", "", []
        self.figure.layout.display = self.clients.layout.display = "none"
        self._say(f"running {cfg.method_label} as {cfg.run_name} ...")
        try:
            result = run_experiment(cfg, on_round_end=lambda r, row: self.on_round_end(
                cfg, rows, row))
        except KeyboardInterrupt:  # the kernel's stop button
            self._say(f"Interrupted: {cfg.run_name} keeps the checkpoint of its last finished "
                      "round.", color="#b00020")
            return
        except Exception as err:  # shown in the widget: a click handler's traceback is hidden
            expected = exit_status(err) is not None
            self._say(f"{type(err).__name__}: {err}", "" if expected else traceback.format_exc(),
                      color="#b00020")
            return
        finally:
            self.run_button.disabled = False
        s = result.summary
        self._say(finished_message(cfg.run_name, s, result.run_dir))
        self.show_clients(result)

    def show_clients(self, result) -> None:
        """The run's per-client figure under the table (drawn from clients.csv if the run did
        not write clients.png)."""
        from .notebook import client_figure

        path = client_figure(result)
        if path is not None:
            self.clients.value = path.read_bytes()
            self.clients.layout.display = None


def finished_message(run_name: str, s: dict, run_dir: Path) -> str:
    """What the explorer says when a run ends: the tail accuracy (the headline) first."""
    return (f"Finished {run_name}: tail accuracy {s['tail_test_accuracy']:.2f}% (mean of the "
            f"last {s.get('tail_rounds', '?')} evaluated rounds), final "
            f"{s['final_test_accuracy']:.2f}%; uplink {s['total_uplink_mb']:.2f} MB "
            f"({s['compression_x']:.1f}x less than dense), client FLOPs saved "
            f"{s['flop_saving_pct']:.1f}%, {s['wall_time_sec']:.1f} s. Artifacts: "
            f"{Path(run_dir).resolve()}")


def explorer(results_dir: str | Path = "results", **defaults) -> Explorer:
    """Controls, a Run button and a live figure; `defaults` override ExperimentConfig's.

    Any ExperimentConfig field may be given, also one without a control (e.g.
    `local_epochs=1`): it is then fixed for every click.
    """
    return Explorer(results_dir, **defaults)
