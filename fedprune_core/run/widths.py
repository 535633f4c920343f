"""Accuracy at every deployed width: the global model at each width its clients train, on one
test set (`width_test_samples` of the headline's: a stratified, seeded 2,000 by default, a fifth
of the whole set's cost; the whole set with 0), the full width on it too, and with the same
treatment of never-trained units (zero) as the full-width headline.

A heterogeneous federation deploys many widths; the server holds the full-width model, which no
client may train whole (with adaptive ratios the widest client keeps 90% here). So each
evaluation that `width_eval` selects also evaluates the sub-model a client of each width would
receive next round: the widths are the clients' pruning ratios, binned to at most MAX_BINS
(equal-width bins over the ratios in use; a bin's ratio is the mean of its clients' ratios).
Tail means per width go to summary.json next to the headline; `best_width` is the maximum over
those widths, so it is selected on the test set and labelled so.

widths.csv has a row per (evaluated round, width): ratio (0 = the full width the server holds),
the kept fraction of units, the training FLOPs a sample at that width, how many clients train
it, and its test accuracy and loss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..fl.evaluate import evaluate
from ..fl.state import ServerState

MAX_BINS = 8
COLUMNS = ("round", "ratio", "width", "train_flops_per_sample", "clients", "test_accuracy",
           "test_loss")


def width_bins(ratios, max_bins: int = MAX_BINS) -> list[tuple[float, int]]:
    """(ratio, clients) of each width: the distinct ratios, or, with more than `max_bins` of
    them, `max_bins` equal-width bins over their range, each at its clients' mean ratio."""
    used = np.round(np.asarray(ratios, dtype=float), 6)
    distinct, counts = np.unique(used, return_counts=True)
    if len(distinct) <= max_bins:
        return [(float(r), int(n)) for r, n in zip(distinct, counts)]
    edges = np.linspace(used.min(), used.max(), max_bins + 1)
    which = np.clip(np.searchsorted(edges, used, side="right") - 1, 0, max_bins - 1)
    return [(round(float(used[which == b].mean()), 6), int((which == b).sum()))
            for b in range(max_bins) if (which == b).any()]


def evaluation_rounds(rounds: int, eval_every: int, tail_rounds: int, mode: str) -> set[int]:
    """The rounds whose evaluation also evaluates every width: the run's tail (the last
    `tail_rounds` evaluated rounds of `rounds`), every evaluated round, or none."""
    evaluated = [r for r in range(1, rounds + 1) if r % eval_every == 0 or r == rounds]
    return {"tail": set(evaluated[-tail_rounds:]), "every": set(evaluated), "off": set()}[mode]


def width_rows(r: int, state: ServerState, setup, bins: list[tuple[float, int]], test, info,
               batch_size: int, full_eval, headline_test=None) -> list[dict]:
    """Round r's rows on `test`: the full width and the sub-model a client of each bin's ratio
    would start from next round. The full width is the headline's evaluation `full_eval` when
    `test` is the headline's set (`headline_test`), and always without sub-models (its one
    row)."""
    layout, structured = setup.layout, setup.extractor.kind == "structured"
    params = state.evaluated_params()
    if structured and test is not headline_test:
        full_eval = evaluate(params, layout.spec, test, info, batch_size, setup.workers)
    rows = [_row(r, 0.0, 1.0, layout.spec.train_flops_per_sample(), 0, full_eval)]
    if not structured:
        return rows
    planner = setup.extractor.for_round(layout, state.params, r + 1)
    for ratio, clients in bins:
        plan = planner.plan(ratio)
        ev = evaluate(params[plan.coords], plan.spec, test, info, batch_size, setup.workers)
        width = float(np.mean([len(plan.keep[g]) / plan.full_widths[g]
                               for g in layout.spec.groups]))
        rows.append(_row(r, ratio, width, plan.spec.train_flops_per_sample(), clients, ev))
    return rows


def _row(r, ratio, width, flops, clients, ev) -> dict:
    return {"round": r, "ratio": ratio, "width": width, "train_flops_per_sample": int(flops),
            "clients": clients, "test_accuracy": ev.accuracy, "test_loss": ev.loss}


def tail_by_width(widths: pd.DataFrame) -> list[dict]:
    """Per width (full width first), its mean test accuracy over the rounds it was evaluated."""
    if widths.empty:
        return []
    out = []
    for ratio, group in widths.groupby("ratio", sort=True):
        out.append({"ratio": float(ratio), "width": float(group.width.iloc[0]),
                    "train_flops_per_sample": int(group.train_flops_per_sample.iloc[0]),
                    "clients": int(group.clients.iloc[0]),
                    "tail_test_accuracy": float(group.test_accuracy.mean()),
                    "evaluations": int(len(group))})
    return out
