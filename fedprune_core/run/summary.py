"""A run's numbers: the per-round metrics row and the summary.json of a finished run.

Headline accuracy is `tail_test_accuracy`, the mean over the last `tail_rounds` evaluated
rounds: non-IID rounds swing by many points, so one final round is noise, and the best round is
chosen on the test set (reported, and labelled so).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from ..fl.evaluate import evaluate
from ..fl.state import ServerState
from ..fl.training import DivergenceError
from . import diagnostics, widths
from .federation import Federation

MB = 1e6
CUMULATIVE = {"cumulative_uplink_bytes": "uplink_bytes",
              "cumulative_downlink_bytes": "downlink_bytes",
              "cumulative_client_train_flops": "client_train_flops",
              "cumulative_dense_client_train_flops": "dense_client_train_flops",
              "cumulative_simulated_time_sec": "simulated_round_time_sec"}
# measured seconds: they differ from run to run, every other column is reproducible
TIMING_COLUMNS = {"metrics": ("avg_round_time_sec", "eval_time_sec", "diagnostic_time_sec",
                              "wall_time_sec", "elapsed_sec"),
                  "clients": ("update_time_sec", "train_time_sec", "node_time_sec")}


def evaluate_round(fed: Federation, r: int, state: ServerState
                   ) -> tuple[dict, list[dict], list[dict]]:
    """(accuracy, loss, evaluation times), the diagnostics rows and the widths rows; NaN and
    no rows when no evaluation is due."""
    cfg = fed.cfg
    if r % cfg.eval_every and r != cfg.rounds:
        return {"test_accuracy": float("nan"), "test_loss": float("nan"),
                "eval_time_sec": 0.0, "diagnostic_time_sec": 0.0}, [], []
    start = time.perf_counter()
    ev = evaluate(state.evaluated_params(), fed.layout.spec, fed.test, fed.setup.info,
                  cfg.eval_batch_size, fed.setup.workers)
    eval_time = time.perf_counter() - start
    if not math.isfinite(ev.loss):
        raise DivergenceError(f"round {r}: test loss is {ev.loss}")
    start = time.perf_counter()
    width_rows = []
    if r in widths.evaluation_rounds(cfg.rounds, cfg.eval_every, cfg.tail_rounds,
                                     cfg.width_eval):
        width_rows = widths.width_rows(r, state, fed.setup, fed.width_bins, fed.width_test,
                                       fed.setup.info, cfg.eval_batch_size, ev, fed.test)
    return {"test_accuracy": ev.accuracy, "test_loss": ev.loss, "eval_time_sec": eval_time,
            "diagnostic_time_sec": time.perf_counter() - start}, \
        diagnostics.class_rows(r, ev), width_rows


def round_row(fed: Federation, r: int, evaluation: dict, rows: list[dict],
              previous: list[dict]) -> dict:
    """The round's metrics row: its evaluation, the cohort's totals, the running sums. A
    deployment's missing updates (status 'missing') count as selected and in the downlink only."""
    selected = pd.DataFrame(rows)
    frame = selected[selected.status == "ok"]
    row = {
        "round": r, "test_accuracy": evaluation["test_accuracy"],
        "test_loss": evaluation["test_loss"],
        "train_loss": (float(np.average(frame.train_loss, weights=frame.num_samples))
                       if len(frame) else math.nan),  # every client sat the round out
        "avg_transmitted_ratio": frame.transmitted_ratio.mean(),
        "avg_pruning_ratio": frame.pruning_ratio.mean(),
        "avg_round_time_sec": frame.update_time_sec.mean(),
        "uplink_bytes": int(frame.uplink_bytes.sum()),
        "uplink_dense_bytes": 4 * fed.layout.size * len(frame),
        "downlink_bytes": int(selected.downlink_bytes.sum()),
        "client_train_flops": int(frame.train_flops.sum()),
        "dense_client_train_flops": int(frame.dense_train_flops.sum()),
        "simulated_round_time_sec": frame.simulated_time_sec.max() if len(frame) else 0.0,
        "eval_time_sec": evaluation["eval_time_sec"],
        "diagnostic_time_sec": evaluation["diagnostic_time_sec"],
        "num_clients_selected": len(selected)}
    last = previous[-1] if previous else {}
    for name, source in CUMULATIVE.items():
        row[name] = last.get(name, 0) + row[source]
    return row


def tail_accuracy(metrics: pd.DataFrame, tail_rounds: int) -> tuple[float, int]:
    """(mean test accuracy of the last `tail_rounds` evaluated rounds, how many were used)."""
    evaluated = metrics.dropna(subset=["test_accuracy"])
    tail = evaluated.test_accuracy.iloc[-tail_rounds:]
    return float(tail.mean()), len(tail)


def summary(fed: Federation, state: ServerState, metrics: pd.DataFrame,
            clients: pd.DataFrame, width_rows: pd.DataFrame) -> dict:
    cfg = fed.cfg
    evaluated = metrics.dropna(subset=["test_accuracy"])
    best = evaluated.loc[evaluated.test_accuracy.idxmax()]
    last = metrics.iloc[-1]
    tail, used = tail_accuracy(metrics, cfg.tail_rounds)
    untrained = diagnostics.never_trained_units(fed.layout, state.trained)
    initial = fed.setup.initial_ratios(fed.full_round_times)
    by_width = widths.tail_by_width(width_rows)
    updates = clients[clients.get("status", "ok") == "ok"] if "status" in clients else clients
    return {
        "run_name": cfg.run_name, "label": cfg.method_label, "dataset": cfg.dataset,
        "model": cfg.model, "seed": cfg.seed, "rounds_completed": int(last["round"]),
        "tail_test_accuracy": tail, "tail_rounds": used,
        "tail_rounds_asked": cfg.tail_rounds, "tail_shorter_than_asked": used < cfg.tail_rounds,
        "widths": by_width,
        "best_width": (max(by_width, key=lambda w: w["tail_test_accuracy"]) | {
            "selected_on_test_set": True}) if by_width else None,
        "final_test_accuracy": float(last.test_accuracy),
        "final_test_loss": float(last.test_loss),
        "best_test_accuracy": float(best.test_accuracy), "best_round": int(best["round"]),
        "best_is_selected_on_test_set": True,
        "target_accuracy": cfg.target_accuracy, "target_round": _target_round(metrics, cfg),
        "stopped_at_target": (cfg.target_accuracy is not None
                              and int(last["round"]) < cfg.rounds),
        "never_trained_units": untrained,
        "never_trained_params": int((~state.trained).sum()),
        "initial_ratio_mean": float(initial.mean()), "initial_ratio_std": float(initial.std()),
        "initial_ratio_min": float(initial.min()), "initial_ratio_max": float(initial.max()),
        "pruning_ratio_mean": float(clients.pruning_ratio.mean()),
        "pruning_ratio_std": float(clients.pruning_ratio.std(ddof=0)),
        "total_uplink_mb": float(last.cumulative_uplink_bytes / MB),
        "total_uplink_dense_mb": float(metrics.uplink_dense_bytes.sum() / MB),
        "compression_x": float(metrics.uplink_dense_bytes.sum() / last.cumulative_uplink_bytes),
        # against dense float32 updates of what the clients trained: compression alone, apart
        # from the bytes pruning saved
        "compression_x_trained": float(4 * updates.trained_params.sum()
                                       / last.cumulative_uplink_bytes),
        "total_downlink_mb": float(last.cumulative_downlink_bytes / MB),
        "total_client_train_gflops": float(last.cumulative_client_train_flops / 1e9),
        "total_dense_client_train_gflops": float(last.cumulative_dense_client_train_flops / 1e9),
        "flop_saving_pct": float(100 * (1 - last.cumulative_client_train_flops
                                        / last.cumulative_dense_client_train_flops)),
        "client_train_gflops_per_update": float(updates.train_flops.mean() / 1e9),
        "wall_time_sec": float(last.elapsed_sec),
        "simulated_time_sec": float(last.cumulative_simulated_time_sec)}


def _target_round(metrics: pd.DataFrame, cfg) -> int | None:
    """The first evaluated round at or above target_accuracy (None: not set, or not reached)."""
    if cfg.target_accuracy is None:
        return None
    hit = metrics[metrics.test_accuracy >= cfg.target_accuracy]
    return int(hit["round"].iloc[0]) if len(hit) else None


def finished_line(s: dict) -> str:
    untrained = ", ".join(f"{k} {v}" for k, v in s["never_trained_units"].items() if v)
    short = (f" (asked for {cfg_tail} rounds: the run evaluated fewer)"
             if (cfg_tail := s.get("tail_rounds_asked")) and s["tail_shorter_than_asked"]
             else "")
    return (f"Finished: tail accuracy {s['tail_test_accuracy']:.2f}% (mean of the last "
            f"{s['tail_rounds']} evaluated rounds{short}; the full width the server holds); "
            f"final {s['final_test_accuracy']:.2f}%; best "
            f"{s['best_test_accuracy']:.2f}% at round {s['best_round']} (selected on the test "
            f"set). Uplink {s['total_uplink_mb']:.2f} MB ({s['compression_x']:.1f}x less than "
            f"dense FedAvg, {s['compression_x_trained']:.1f}x less than dense updates of the "
            f"trained parameters), client FLOPs saved {s['flop_saving_pct']:.1f}%, wall time "
            f"{s['wall_time_sec']:.1f} s. Never-trained units (zero in the evaluated model): "
            f"{untrained or 'none'}.")


def width_lines(s: dict) -> list[str]:
    """The run log's lines on the accuracy at each deployed width."""
    if len(s["widths"]) < 2:
        return []
    lines = ["Tail accuracy at each width clients train (same test set; the full width is the "
             "headline):"]
    for w in s["widths"]:
        name = "full width (server)" if w["ratio"] == 0 else f"ratio {w['ratio']:.2f}"
        lines.append(f"  {name:>19} | width {w['width']:.2f} | "
                     f"{w['train_flops_per_sample'] / 1e6:6.2f} MFLOP a sample | "
                     f"{w['tail_test_accuracy']:.2f}% over {w['evaluations']} evaluation(s)")
    b = s["best_width"]
    lines.append(f"  best width (selected on the test set): ratio {b['ratio']:.2f}, "
                 f"{b['tail_test_accuracy']:.2f}%")
    return lines
