"""What explains a run's accuracy, computed at each evaluation and kept in diagnostics.csv:
per-class recall and the predicted-class histogram of the global model, and, for structured
runs, the accuracy of the sub-model at each width the round's clients used. Plus the count of
units no client has trained (they are zero in the evaluated and saved model).

diagnostics.csv is long: one row per (round, metric, key) with metric `class_recall` or
`predicted_share` (key = class, value in percent) or `width_accuracy` (key = pruning ratio,
value = that sub-model's test accuracy in percent on `diagnostic_test_samples` images; at most
MAX_WIDTHS ratios a round, spread over the used range, when a large cohort uses more).
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.loading import TensorDataset
from ..fl.evaluate import Evaluation, evaluate
from ..fl.round import RoundSetup
from ..fl.state import ServerState
from ..models.net import ParamLayout


def class_rows(r: int, ev: Evaluation) -> list[dict]:
    rows = [{"round": r, "metric": "class_recall", "key": c, "value": float(v)}
            for c, v in enumerate(ev.recall)]
    return rows + [{"round": r, "metric": "predicted_share", "key": c, "value": float(v)}
                   for c, v in enumerate(ev.predicted_share)]


def width_rows(r: int, state: ServerState, setup: RoundSetup, ratios: list[float],
               test: TensorDataset, batch_size: int) -> list[dict]:
    """Accuracy of the sub-model a client of each used ratio would start from next round."""
    if setup.extractor.kind != "structured":
        return []
    planner = setup.extractor.for_round(setup.layout, state.params, r + 1)
    rows = []
    for ratio in widths_to_diagnose(ratios):
        plan = planner.plan(ratio)
        ev = evaluate(state.params[plan.coords], plan.spec, test, setup.info, batch_size,
                      setup.workers)
        rows.append({"round": r, "metric": "width_accuracy", "key": ratio,
                     "value": ev.accuracy})
    return rows


MAX_WIDTHS = 10


def widths_to_diagnose(ratios: list[float]) -> list[float]:
    """The distinct used ratios; of a large cohort's (200 clients can use 200 ratios, each
    sub-model an evaluation) at most MAX_WIDTHS, spread evenly by rank from the lowest to the
    highest."""
    used = sorted(set(round(x, 6) for x in ratios))
    if len(used) <= MAX_WIDTHS:
        return used
    return [used[i] for i in sorted(set(np.linspace(0, len(used) - 1, MAX_WIDTHS).round()
                                        .astype(int)))]


def never_trained_units(layout: ParamLayout, trained: torch.Tensor) -> dict[str, int]:
    """Per prunable layer, the units (filters, neurons) none of whose weights any client has
    trained: left alone they would sit in the global model at their random initial values."""
    views = layout.views(trained)
    return {g: int((~views[f"{g}.weight"].flatten(1).any(1)).sum())
            for g in layout.spec.groups}
