"""What explains a run's accuracy, computed at each evaluation and kept in diagnostics.csv:
per-class recall and the predicted-class histogram of the global model (the accuracy at each
width clients train is run/widths.py's, in widths.csv). Plus the count of units no client has
trained (they are zero in the evaluated and saved model).

diagnostics.csv is long: one row per (round, metric, class) with metric `class_recall` or
`predicted_share` (value in percent).
"""

from __future__ import annotations

import torch

from ..fl.evaluate import Evaluation
from ..models.net import ParamLayout


def class_rows(r: int, ev: Evaluation) -> list[dict]:
    rows = [{"round": r, "metric": "class_recall", "class": c, "value": float(v)}
            for c, v in enumerate(ev.recall)]
    return rows + [{"round": r, "metric": "predicted_share", "class": c, "value": float(v)}
                   for c, v in enumerate(ev.predicted_share)]


def never_trained_units(layout: ParamLayout, trained: torch.Tensor) -> dict[str, int]:
    """Per prunable layer, the units (filters, neurons) none of whose weights any client has
    trained: left alone they would sit in the global model at their random initial values."""
    views = layout.views(trained)
    return {g: int((~views[f"{g}.weight"].flatten(1).any(1)).sum())
            for g in layout.spec.groups}
