"""McMahan et al. 2017 ("Communication-Efficient Learning of Deep Networks from Decentralized
Data"), Table 2, rerun: rounds for FedAvg with their MNIST CNN on pathological non-IID MNIST
to first reach 99% test accuracy, beside the paper's numbers.

`make reproduce` runs params/reproduce/*.yaml; `reproduce_table` reads whatever of those runs
finished, so a partial rerun still gives its rows (a row the runs never reached says so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .loading import RunTable, load_runs
from .tables import mean_ci, rounds_to_target, write_table

TARGET = 99.0
# Table 2 (MNIST CNN, 99%, FedAvg, non-IID column): (local epochs E, batch size B) -> rounds.
PAPER_ROUNDS = {(1, 10): 350, (5, 10): 229, (20, 10): 173}


def reproduce_table(runs: RunTable, target: float = TARGET) -> pd.DataFrame:
    """One row per (E, B, lr) among the finished McMahan-CNN FedAvg runs."""
    s = runs.summaries
    s = s[(s["model"] == "mcmahan_cnn") & (s["pruning_mode"] == "none")
          & (s["sparsify_method"] == "none")]
    reached = rounds_to_target(runs.metrics, target)
    rows = []
    for (epochs, batch, lr), group in s.groupby(["local_epochs", "batch_size", "lr"]):
        hits = group["run_name"].map(reached)
        mean, _, n = mean_ci(hits)
        tail, half, _ = mean_ci(group["tail_test_accuracy"])
        rows.append({
            "E": int(epochs), "B": int(batch), "lr": lr, "Seeds": len(group),
            "Rounds run": int(group["rounds_completed"].max()),
            f"Rounds to {target:g}% (ours)": (f"{mean:.0f} ({n}/{len(group)} seeds)" if n
                                              else f"not reached (0/{len(group)} seeds)"),
            f"Rounds to {target:g}% (paper)": PAPER_ROUNDS.get((int(epochs), int(batch)), "–"),
            "Tail acc. (%)": f"{tail:.2f}" + ("" if np.isnan(half) else f" ± {half:.2f}")})
    return pd.DataFrame(rows, columns=[
        "E", "B", "lr", "Seeds", "Rounds run", f"Rounds to {target:g}% (ours)",
        f"Rounds to {target:g}% (paper)", "Tail acc. (%)"])


def write_reproduce(results_dir: str | Path = "results", out_dir: str | Path | None = None
                    ) -> dict[str, Path]:
    """reproduce.csv/.md/.tex from the finished runs in results_dir (default out:
    <results_dir>/reproduce)."""
    results_dir = Path(results_dir)
    table = reproduce_table(load_runs(results_dir))
    paths = write_table(table, out_dir or results_dir / "reproduce", "reproduce")
    print(table.to_markdown(index=False))
    return paths

