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
the observed paired spread. Whether the paired interval is in fact the narrower one depends on
the seeds there are (with two, the paired t has one degree of freedom: t = 12.71): paired_reading
says what a table shows, from its numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .loading import RunTable, label_order
from .tables import FEW_SEEDS_FLAG, FEW_SEEDS_MARK, MIN_SEEDS, WARMUP_FLAG, WARMUP_MARK, _marked

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
    baseline's, their difference, and whether either run's tail averages warm-up rounds."""
    s = runs.summaries[["label", "seed", metric]].dropna().copy()
    s["warmup"] = (runs.summaries["tail_warmup"].reindex(s.index).fillna(False).astype(bool)
                   if "tail_warmup" in runs.summaries else False)
    base = s[s.label == baseline].set_index("seed")
    rows = []
    for label in label_order(s):
        if label == baseline:
            continue
        mine = s[s.label == label].set_index("seed")
        for seed in sorted(set(mine.index) & set(base.index)):
            rows.append({"label": label, "seed": seed, "value": float(mine.at[seed, metric]),
                         "baseline": float(base.at[seed, metric]),
                         "difference": float(mine.at[seed, metric] - base.at[seed, metric]),
                         "tail_warmup": bool(mine.at[seed, "warmup"] or base.at[seed, "warmup"])})
    return pd.DataFrame(rows, columns=["label", "seed", "value", "baseline", "difference",
                                       "tail_warmup"])


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
            "tail_warmup": bool(group.tail_warmup.any()),
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
    """The paired table as written to paired.csv: differences with their intervals, spreads,
    seeds needed, and the flags of tables.method_table (paired_marked prints them as marks)."""
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
           for p in RESOLVE_POINTS},
        WARMUP_FLAG: bool(getattr(r, "tail_warmup", False)),
        FEW_SEEDS_FLAG: int(r.seeds) < MIN_SEEDS} for r in table.itertuples()])


def paired_marked(display: pd.DataFrame, aliases: dict[str, str]) -> pd.DataFrame:
    """paired_display as the page prints it: short labels, the paired difference marked when a
    tail it compares averages warm-up rounds, the seeds when fewer than MIN_SEEDS are shared."""
    delta = next(c for c in display.columns if c.startswith("Δ tail acc."))
    return _marked(display, aliases, delta, "Seeds")


def paired_reading(table: pd.DataFrame, aliases: dict[str, str] | None = None) -> str:
    """What paired_table shows, said from its numbers: for how many methods the paired interval
    is narrower than the unpaired one (and by how much), which are wider and why, which
    differences it resolves (interval excluding 0), and what the marks say."""
    if table.empty:
        return "No method shares a seed with the baseline: there is nothing to pair."
    aliases = aliases or {}
    name = {label: aliases.get(label, label).replace("\n", " ") for label in table.label}
    baseline = table.baseline.iloc[0]
    both = table[np.isfinite(table.paired_ci95) & np.isfinite(table.unpaired_ci95)]
    if both.empty:
        return (f"No interval: each method shares one seed with {baseline}; run "
                f"{MIN_SEEDS} seeds or more for a paired comparison.")
    narrower = both[both.paired_ci95 < both.unpaired_ci95]
    wider = both[both.paired_ci95 >= both.unpaired_ci95]
    text = [f"Over the seeds each method shares with {baseline}, the paired 95% interval is "
            f"narrower than the unpaired one for {len(narrower)} of {len(both)} methods"]
    if len(narrower):
        ratio = float(np.median(narrower.paired_ci95 / narrower.unpaired_ci95.where(
            narrower.unpaired_ci95 > 0)))
        if np.isfinite(ratio):
            text[0] += f" (median {'under 1%' if ratio < 0.01 else f'{ratio:.0%}'} of its width)"
    text[0] += "."
    if len(wider):
        shown = [f"{name[r.label]} (±{r.paired_ci95:.2f} paired, ±{r.unpaired_ci95:.2f} "
                 f"unpaired)" for r in wider.head(3).itertuples()]
        more = f" and {len(wider) - 3} more" if len(wider) > 3 else ""
        few = sorted(set(int(n) for n in wider.seeds if n < MIN_SEEDS))
        why = (": over " + " or ".join(f"{n} shared seeds the paired t has {n - 1} degree(s) of "
                                        f"freedom (t = {stats.t.ppf(0.975, n - 1):.2f})"
                                        for n in few)
               if few and (wider.seeds < MIN_SEEDS).all() else
               ": pairing helps only where the differences vary less than the methods' own "
               "values (compare the spreads)")
        text.append(f"It is wider for {', '.join(shown)}{more}{why}.")
    resolved = both[(both.mean_difference - both.paired_ci95 > 0)
                    | (both.mean_difference + both.paired_ci95 < 0)]
    text.append(f"The paired interval excludes zero for {len(resolved)} of {len(both)}"
                + (f" ({', '.join(name[k] for k in resolved.label[:3])}"
                   + (f" and {len(resolved) - 3} more" if len(resolved) > 3 else "") + ")"
                   if len(resolved) else "") + ".")
    marks = []
    if table.get("tail_warmup", pd.Series(dtype=bool)).any():
        marks.append(f"{WARMUP_MARK}: a tail compared averages warm-up rounds")
    if (table.seeds < MIN_SEEDS).any():
        marks.append(f"{FEW_SEEDS_MARK}: fewer than {MIN_SEEDS} shared seeds")
    if marks:
        text.append(f"Read the marked rows with care ({'; '.join(marks)}).")
    return " ".join(text)
