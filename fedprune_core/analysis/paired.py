"""Paired comparisons against a baseline method.

Runs of one seed share their random numbers (the same partition, cohorts and batch order: see
rng.py), so much of a seed's luck is common to every method run with it. A method's per-seed
difference from the baseline cancels that luck, and its spread is far smaller than the spread
of either method's tail accuracy over seeds: a paired t interval over the differences can
resolve a few points where two independent means over the same seeds cannot.

For each method, over the seeds it shares with the baseline: the mean paired difference and its
95% paired-t interval, the spread (standard deviation) of the differences and of the method's
own values, the unpaired (Welch) interval of the same difference for comparison, and the seeds
a difference of 1, 3 and 5 points would need to be resolved (its 95% interval to exclude 0) at
the observed paired spread.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .loading import RunTable, label_order

RESOLVE_POINTS = (1.0, 3.0, 5.0)


def seeds_needed(spread: float, difference: float, confidence: float = 0.95,
                 most: int = 10_000) -> float:
    """The fewest seeds n (>= 2) whose paired-t half-width, t(n-1) * spread / sqrt(n), is below
    `difference`; 2 with no spread; inf beyond `most`."""
    if not math.isfinite(spread):
        return float("nan")
    for n in range(2, most + 1):
        if stats.t.ppf((1 + confidence) / 2, n - 1) * spread / math.sqrt(n) < difference:
            return float(n)
    return float("inf")


def paired_differences(runs: RunTable, baseline: str,
                       metric: str = "tail_test_accuracy") -> pd.DataFrame:
    """Long table: per method and seed shared with `baseline`, the method's value, the
    baseline's and their difference."""
    s = runs.summaries[["label", "seed", metric]].dropna()
    base = s[s.label == baseline].set_index("seed")[metric]
    rows = []
    for label in label_order(s):
        if label == baseline:
            continue
        mine = s[s.label == label].set_index("seed")[metric]
        for seed in sorted(set(mine.index) & set(base.index)):
            rows.append({"label": label, "seed": seed, "value": float(mine[seed]),
                         "baseline": float(base[seed]),
                         "difference": float(mine[seed] - base[seed])})
    return pd.DataFrame(rows, columns=["label", "seed", "value", "baseline", "difference"])


def paired_table(runs: RunTable, baseline: str = "FedAvg",
                 metric: str = "tail_test_accuracy", confidence: float = 0.95) -> pd.DataFrame:
    """One row per method (the baseline excluded): the paired comparison of the module doc."""
    if baseline not in set(runs.summaries.label):
        raise ValueError(f"baseline: no runs labelled {baseline!r}; allowed: one of "
                         f"{', '.join(map(repr, label_order(runs.summaries)))}")
    diffs = paired_differences(runs, baseline, metric)
    base_values = runs.summaries.loc[runs.summaries.label == baseline, metric].dropna()
    rows = []
    for label, group in diffs.groupby("label", sort=False):
        d = group.difference.to_numpy()
        n = len(d)
        spread = float(d.std(ddof=1)) if n > 1 else float("nan")
        half = (float(stats.t.ppf((1 + confidence) / 2, n - 1) * spread / math.sqrt(n))
                if n > 1 else float("nan"))
        own = runs.summaries.loc[runs.summaries.label == label, metric].dropna()
        rows.append({
            "label": label, "baseline": baseline, "seeds": n,
            "mean_difference": float(d.mean()), "paired_ci95": half,
            "paired_spread": spread,
            "method_spread": float(own.std(ddof=1)) if len(own) > 1 else float("nan"),
            "baseline_spread": (float(base_values.std(ddof=1)) if len(base_values) > 1
                                else float("nan")),
            "unpaired_ci95": _welch_half_width(own.to_numpy(), base_values.to_numpy(),
                                               confidence),
            **{f"seeds_for_{p:g}_points": seeds_needed(spread, p) for p in RESOLVE_POINTS}})
    return pd.DataFrame(rows)


def _welch_half_width(a: np.ndarray, b: np.ndarray, confidence: float) -> float:
    """Half-width of the unpaired (Welch) interval of mean(a) - mean(b)."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return 0.0
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(stats.t.ppf((1 + confidence) / 2, dof) * math.sqrt(va + vb))


def paired_display(table: pd.DataFrame) -> pd.DataFrame:
    """The paired table as printed: differences with their intervals, spreads, seeds needed."""
    def interval(mean: float, half: float) -> str:
        return f"{mean:+.2f}" + ("" if math.isnan(half) else f" ± {half:.2f}")

    def seeds(value: float) -> str:
        return "–" if math.isnan(value) else ("> 10,000" if math.isinf(value) else f"{value:.0f}")
    return pd.DataFrame([{
        "Method": r.label,
        f"Δ tail acc. vs {r.baseline}, paired (pp)": interval(r.mean_difference, r.paired_ci95),
        "Same, unpaired (pp)": interval(r.mean_difference, r.unpaired_ci95),
        "Seeds": int(r.seeds),
        "Paired spread (pp)": "–" if math.isnan(r.paired_spread) else f"{r.paired_spread:.2f}",
        "Unpaired spread (pp)": "–" if math.isnan(r.method_spread) else f"{r.method_spread:.2f}",
        **{f"Seeds for {p:g} pp": seeds(getattr(r, f"seeds_for_{p:g}_points"))
           for p in RESOLVE_POINTS}} for r in table.itertuples()])
