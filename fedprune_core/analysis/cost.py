"""Cost to accuracy: what each method spends to get somewhere, and where it gets for a budget.

A tail accuracy says where a method ends; a pruned method may end behind FedAvg and still be
ahead of it at every budget a device can afford. Two tables, paired over seeds (runs of one seed
share their partition, cohorts and batch order):

- `cost_to_accuracy`: per method and target, the rounds, uplink MB, client training GFLOP and
  simulated seconds (fl/systems.py: the capability profiles and the round deadline) to the first
  evaluated round at or above the target. Targets are fractions of the baseline's plateau (its
  mean tail accuracy over seeds: 90% and 97% by default), so one table fits every dataset; an
  absolute target (`TARGET=`) can be added. The costs are means over the seeds that reached the
  target, with how many did; the simulated time also as the paired ratio to the baseline's
  (method / baseline, over the seeds where both reached it): below 1 is sooner.
- `accuracy_at_budget`: per method, the accuracy at fractions (25, 50, 100%) of the baseline's
  total client GFLOP and uplink MB (means over its seeds): the mean of the last `window`
  evaluated rounds whose cumulative cost is within the budget (one evaluated round is one noisy
  draw of a non-IID curve), with the paired difference from the baseline at the same budget.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .loading import BASELINE_LABEL, RunTable, label_order
from .tables import mean_ci

TARGET_FRACTIONS = (0.90, 0.97)
BUDGET_FRACTIONS = (0.25, 0.5, 1.0)
WINDOW = 5  # evaluated rounds averaged at a budget
# what a cost is, as the cumulative metrics.csv column it is read from and its unit scale
COSTS = {"Rounds": ("round", 1.0), "Uplink (MB)": ("cumulative_uplink_bytes", 1e-6),
         "Client GFLOP": ("cumulative_client_train_flops", 1e-9),
         "Simulated time (s)": ("cumulative_simulated_time_sec", 1.0)}
BUDGETS = {"client GFLOP": ("cumulative_client_train_flops", 1e-9),
           "uplink MB": ("cumulative_uplink_bytes", 1e-6)}


def plateau(runs: RunTable, baseline: str = BASELINE_LABEL) -> float:
    """The baseline's plateau: its mean tail accuracy over seeds (NaN without its runs)."""
    tails = runs.summaries.loc[runs.summaries.label == baseline, "tail_test_accuracy"]
    return float(tails.mean()) if len(tails) else float("nan")


def targets(runs: RunTable, baseline: str = BASELINE_LABEL,
            fractions=TARGET_FRACTIONS, absolute: float | None = None) -> list[tuple[str, float]]:
    """(name, accuracy %) of each target: fractions of the baseline's plateau, then `absolute`."""
    level = plateau(runs, baseline)
    out = [(f"{100 * f:g}% of {baseline}'s plateau", f * level) for f in fractions
           if not np.isnan(level)]
    return out + ([(f"{absolute:g}%", float(absolute))] if absolute is not None else [])


def first_reached(runs: RunTable, target: float) -> pd.DataFrame:
    """Per run (run_name index, label, seed): the costs at its first evaluated round with test
    accuracy >= target; NaN where it never got there."""
    m = runs.metrics
    hit = m[m["test_accuracy"] >= target].sort_values("round").groupby("run_name").head(1)
    hit = hit.set_index("run_name")
    out = runs.summaries.set_index("run_name")[["label", "seed"]].copy()
    for name, (column, scale) in COSTS.items():
        out[name] = hit[column].reindex(out.index) * scale if column in hit else np.nan
    return out


def cost_to_accuracy(runs: RunTable, baseline: str = BASELINE_LABEL,
                     fractions=TARGET_FRACTIONS, absolute: float | None = None) -> pd.DataFrame:
    """One row per (target, method); see the module's doc."""
    rows = []
    for target_name, target in targets(runs, baseline, fractions, absolute):
        reached = first_reached(runs, target)
        base = reached[reached.label == baseline].set_index("seed")["Simulated time (s)"]
        for label in label_order(runs.summaries):
            mine = reached[reached.label == label]
            row = {"Target": target_name, "Target acc. (%)": round(target, 2), "Method": label,
                   "Seeds reached": f"{int(mine['Rounds'].notna().sum())}/{len(mine)}"}
            for name in COSTS:
                mean, half, n = mean_ci(mine[name])
                row[name] = mean
            time = mine.set_index("seed")["Simulated time (s)"]
            ratio = (time / base.reindex(time.index)).dropna()
            mean, half, n = mean_ci(ratio)
            row[f"Simulated time / {baseline}'s (paired)"] = mean
            row["± (95%)"] = half
            rows.append(row)
    return pd.DataFrame(rows)


def accuracy_at(run_metrics: pd.DataFrame, column: str, budget: float,
                window: int = WINDOW) -> float:
    """A run's accuracy at a budget of `column` (raw units): the mean of its last `window`
    evaluated rounds whose cumulative cost is within the budget; NaN if none is."""
    within = run_metrics[(run_metrics[column] <= budget * (1 + 1e-12))].dropna(
        subset=["test_accuracy"]).sort_values("round")
    return float(within["test_accuracy"].iloc[-window:].mean()) if len(within) else float("nan")


def accuracy_at_budget(runs: RunTable, baseline: str = BASELINE_LABEL,
                       fractions=BUDGET_FRACTIONS, window: int = WINDOW) -> pd.DataFrame:
    """One row per (budget, method); see the module's doc."""
    s, m = runs.summaries, runs.metrics
    base_runs = set(s.loc[s.label == baseline, "run_name"])
    rows = []
    for cost, (column, scale) in BUDGETS.items():
        totals = m[m.run_name.isin(base_runs)].groupby("run_name")[column].max()
        if totals.empty:
            continue
        for fraction in fractions:
            budget = fraction * float(totals.mean())
            acc = {name: accuracy_at(group, column, budget, window)
                   for name, group in m.groupby("run_name")}
            runs_acc = s.assign(acc=s.run_name.map(acc))
            base = runs_acc[runs_acc.label == baseline].set_index("seed")["acc"]
            for label in label_order(s):
                mine = runs_acc[runs_acc.label == label].set_index("seed")["acc"]
                mean, half, _ = mean_ci(mine)
                diff = (mine - base.reindex(mine.index)).dropna()
                d_mean, d_half, n = mean_ci(diff)
                rows.append({"Budget": f"{100 * fraction:g}% of {baseline}'s {cost}",
                             "Budget value": round(budget * scale, 3), "Method": label,
                             "Acc. (%)": mean, "Acc. ± (95%)": half,
                             f"Δ vs {baseline}, paired (pp)": d_mean, "Δ ± (95%)": d_half,
                             "Seeds paired": n})
    return pd.DataFrame(rows)


def _pm(mean: float, half: float, digits: int = 2) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if np.isnan(half) else f" ± {half:.{digits}f}")


def cost_display(table: pd.DataFrame, baseline: str = BASELINE_LABEL,
                 aliases: dict | None = None) -> pd.DataFrame:
    """The cost table as a page shows it: short labels (`aliases`), costs rounded, the paired
    ratio with its interval."""
    ratio = f"Simulated time / {baseline}'s (paired)"
    shown = table.drop(columns=[ratio, "± (95%)"]).copy()
    shown["Method"] = [(aliases or {}).get(m, m) for m in table["Method"]]
    for name, digits in (("Rounds", 1), ("Uplink (MB)", 1), ("Client GFLOP", 0),
                         ("Simulated time (s)", 0)):
        shown[name] = [("–" if np.isnan(v) else f"{v:,.{digits}f}") for v in table[name]]
    shown[f"Sim. time vs {baseline} (×)"] = [_pm(m, h) for m, h in
                                            zip(table[ratio], table["± (95%)"])]
    return shown


def budget_display(table: pd.DataFrame, baseline: str = BASELINE_LABEL,
                   aliases: dict | None = None) -> pd.DataFrame:
    delta = f"Δ vs {baseline}, paired (pp)"
    return pd.DataFrame({
        "Budget": table["Budget"], "Budget value": [f"{v:,.1f}" for v in table["Budget value"]],
        "Method": [(aliases or {}).get(m, m) for m in table["Method"]],
        "Acc. (%)": [_pm(m, h) for m, h in zip(table["Acc. (%)"], table["Acc. ± (95%)"])],
        delta: [_pm(m, h) for m, h in zip(table[delta], table["Δ ± (95%)"])],
        "Seeds paired": table["Seeds paired"]})
