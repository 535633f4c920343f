"""Published tables, rerun: one table per paper, our runs beside the paper's numbers in the
paper's own metric.

- `mcmahan`: McMahan et al. 2017 ("Communication-Efficient Learning of Deep Networks from
  Decentralized Data"), Table 2: rounds for FedAvg with their MNIST CNN on pathological non-IID
  MNIST to first reach 99% test accuracy. A row per (E, B, lr).
- `heterofl`: Diao et al. 2021 ("HeteroFL: Computation and Communication Efficient Federated
  Learning for Heterogeneous Clients", ICLR), CIFAR-10 with their pre-activation ResNet-18: the
  global model's test accuracy per model mix (a = the whole model for everyone, e = a 1/16-width
  model, a-b-c-d-e = clients spread over five widths) and data split (IID, non-IID with 2
  classes a client), beside the paper's poster table and Flower's reproduction (full
  participation). Ours is the tail accuracy (mean of the last tail_rounds evaluations) and,
  as HeteroFL reports, the best evaluated round (selected on the test set).
- `heterofl_mnist`: the same HeteroFL on non-IID MNIST (2 label shards a client, all 100
  clients every round, 400 rounds) with their 4-convolution CNN, as Flower's baseline runs it:
  the global accuracy of each model mix (a ... e: one width for every client; a-e and
  a-b-c-d-e: clients spread over those widths, dynamically), beside Flower's table.
- `fjord`: Horvath et al. 2021 ("FjORD: Fair and Accurate Federated Learning under
  heterogeneous targets with Ordered Dropout", NeurIPS) as Flower's baseline runs it: ResNet-18
  on CIFAR-10, the global model's accuracy at each width p = 0.2 ... 1.0 (summary.json's
  `widths`: each deployed width's tail accuracy, p = 1 - its pruning ratio), without and with
  self-distillation, mean +- 95% t-interval over seeds.

`make reproduce PAPER=<paper>` runs params/reproduce/<paper>/*.yaml and then `write_reproduce`,
which reads whatever of those runs finished, so a partial rerun still gives its rows (a row the
runs never reached says so).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .loading import RunTable, load_runs
from .tables import mean_ci, rounds_to_target, write_table

PAPERS = ("mcmahan", "heterofl", "heterofl_mnist", "fjord")
TARGET = 99.0
# McMahan et al. Table 2 (MNIST CNN, 99%, FedAvg, non-IID column): (E, B) -> rounds.
PAPER_ROUNDS = {(1, 10): 350, (5, 10): 229, (20, 10): 173}
# HeteroFL's poster table, CIFAR-10 global accuracy: (mix, data) -> %; Flower's reproduction.
HETEROFL_PAPER = {("a", "IID"): 91.19, ("a", "non-IID"): 56.88,
                  ("a-b-c-d-e", "IID"): 88.83, ("a-b-c-d-e", "non-IID"): 61.64,
                  ("e", "IID"): 77.09, ("e", "non-IID"): 54.16}
HETEROFL_FLOWER = {("a", "IID"): 90.83, ("a", "non-IID"): 53.59,
                   ("a-b-c-d-e", "IID"): 87.46, ("a-b-c-d-e", "non-IID"): 45.08}
# Flower's HeteroFL baseline on non-IID MNIST (README, dynamic): global accuracy (%) per mix.
HETEROFL_MNIST_FLOWER = {"a": 98.87, "a-e": 98.9, "a-b-c-d-e": 98.5, "b": 98.81, "c": 97.14,
                         "d": 97.58, "e": 96.5}
LEVEL_LETTERS = {1.0: "a", 0.5: "b", 0.25: "c", 0.125: "d", 0.0625: "e"}  # by kept fraction
# Flower's FjORD baseline, ResNet-18 on CIFAR-10: accuracy (%) at p = 0.2, 0.4, 0.6, 0.8, 1.0.
FJORD_P = (0.2, 0.4, 0.6, 0.8, 1.0)
FJORD_BASELINE = {"FjORD": (83.9, 85.6, 86.2, 85.7, 84.8),
                  "FjORD + KD": (83.7, 86.1, 86.6, 86.5, 85.9)}
# config.json fields the tables read beyond loading.CONFIG_FIELDS, with their defaults
CONFIG_EXTRA = {"model_width": 1.0, "pruning_levels": "", "level_assignment": "fixed",
                "local_training": "sgd", "fjord_distill": False, "classes_per_client": 2}


def reproduce_table(runs: RunTable, paper: str = "mcmahan", target: float = TARGET
                    ) -> pd.DataFrame:
    """The paper's table from the finished runs (summaries may carry CONFIG_EXTRA columns;
    missing ones take their defaults)."""
    if paper not in PAPERS:
        raise ValueError(f"paper: {paper!r} is not allowed; allowed: {', '.join(PAPERS)}")
    s = runs.summaries.copy()
    for name, default in CONFIG_EXTRA.items():
        s[name] = s[name].fillna(default) if name in s else default
    return {"mcmahan": lambda: _mcmahan(s, runs, target), "heterofl": lambda: _heterofl(s),
            "heterofl_mnist": lambda: _heterofl_mnist(s), "fjord": lambda: _fjord(s)}[paper]()


def _acc(values) -> str:
    mean, half, n = mean_ci(values)
    if not n:
        return "–"
    return f"{mean:.2f}" + ("" if np.isnan(half) else f" ± {half:.2f}")


def _mcmahan(s: pd.DataFrame, runs: RunTable, target: float) -> pd.DataFrame:
    """One row per (E, B, lr) among the finished McMahan-CNN FedAvg runs."""
    s = s[(s["model"] == "mcmahan_cnn") & (s["pruning_mode"] == "none")
          & (s["sparsify_method"] == "none")]
    reached = rounds_to_target(runs.metrics, target)
    rows = []
    for (epochs, batch, lr), group in s.groupby(["local_epochs", "batch_size", "lr"]):
        hits = group["run_name"].map(reached)
        mean, _, n = mean_ci(hits)
        rows.append({
            "E": int(epochs), "B": int(batch), "lr": lr, "Seeds": len(group),
            "Rounds run": int(group["rounds_completed"].max()),
            f"Rounds to {target:g}% (ours)": (f"{mean:.0f} ({n}/{len(group)} seeds)" if n
                                              else f"not reached (0/{len(group)} seeds)"),
            f"Rounds to {target:g}% (paper)": PAPER_ROUNDS.get((int(epochs), int(batch)), "–"),
            "Tail acc. (%)": _acc(group["tail_test_accuracy"])})
    return pd.DataFrame(rows, columns=[
        "E", "B", "lr", "Seeds", "Rounds run", f"Rounds to {target:g}% (ours)",
        f"Rounds to {target:g}% (paper)", "Tail acc. (%)"])


def heterofl_mix(model_width: float, pruning_levels: str, level_assignment: str = "fixed") -> str:
    """HeteroFL's name of a model mix: its levels' letters (a = the whole width ... e = 1/16 of
    it, pruning ratio 0.9375), or a single model's width."""
    def letter(kept: float) -> str:
        return LEVEL_LETTERS.get(float(kept), f"{float(kept):g}")
    if pruning_levels:
        mix = "-".join(letter(1.0 - float(v)) for v in str(pruning_levels).split(","))
        return mix if level_assignment == "dynamic" else f"{mix} (fix)"
    return letter(model_width)


def _heterofl(s: pd.DataFrame) -> pd.DataFrame:
    """One row per (model mix, data split) among the finished PreResNet-18 CIFAR-10 runs."""
    s = s[(s["model"] == "preresnet18") & (s["dataset"] == "cifar10")].copy()
    s["mix"] = [heterofl_mix(w, lv, a) for w, lv, a in
                zip(s["model_width"], s["pruning_levels"], s["level_assignment"])]
    s["data"] = ["IID" if p == "iid" else f"non-IID ({int(c)} classes)" if p == "shards"
                 else p for p, c in zip(s["partition"], s["classes_per_client"])]
    columns = ["Model mix", "Data", "Seeds", "Rounds run", "Global acc. (%) (ours, tail)",
               "Best acc. (%) (ours)", "Global acc. (%) (paper)", "Global acc. (%) (Flower)"]
    rows = []
    for (mix, data), group in s.groupby(["mix", "data"], sort=False):
        key = (mix, "IID" if data == "IID" else "non-IID" if data == "non-IID (2 classes)"
               else data)
        rows.append({"Model mix": mix, "Data": data, "Seeds": len(group),
                     "Rounds run": int(group["rounds_completed"].max()),
                     "Global acc. (%) (ours, tail)": _acc(group["tail_test_accuracy"]),
                     "Best acc. (%) (ours)": _acc(group["best_test_accuracy"]),
                     "Global acc. (%) (paper)": HETEROFL_PAPER.get(key, "–"),
                     "Global acc. (%) (Flower)": HETEROFL_FLOWER.get(key, "–")})
    order = {m: i for i, m in enumerate(("a", "a-b-c-d-e", "e"))}
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["Data", "Model mix"], key=lambda c: c.map(
        lambda v: order.get(v, len(order))) if c.name == "Model mix" else c,
        kind="stable").reset_index(drop=True)


def _heterofl_mnist(s: pd.DataFrame) -> pd.DataFrame:
    """One row per model mix among the finished heterofl_conv MNIST runs, in Flower's order."""
    s = s[(s["model"] == "heterofl_conv") & (s["dataset"] == "mnist")].copy()
    s["mix"] = [heterofl_mix(w, lv, a).removesuffix(" (fix)") for w, lv, a in
                zip(s["model_width"], s["pruning_levels"], s["level_assignment"])]
    columns = ["Model mix", "Seeds", "Rounds run", "Global acc. (%) (ours, tail)",
               "Best acc. (%) (ours)", "Global acc. (%) (Flower)"]
    rows = []
    for mix in [*HETEROFL_MNIST_FLOWER, *sorted(set(s["mix"]) - set(HETEROFL_MNIST_FLOWER))]:
        group = s[s["mix"] == mix]
        rows.append({"Model mix": mix, "Seeds": len(group),
                     "Rounds run": int(group["rounds_completed"].max()) if len(group) else 0,
                     "Global acc. (%) (ours, tail)": _acc(group["tail_test_accuracy"]),
                     "Best acc. (%) (ours)": _acc(group["best_test_accuracy"]),
                     "Global acc. (%) (Flower)": HETEROFL_MNIST_FLOWER.get(mix, "–")})
    return pd.DataFrame(rows, columns=columns)


def _fjord(s: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, width p) among the finished ResNet-18 FjORD runs."""
    s = s[(s["model"] == "resnet18") & (s["local_training"] == "fjord")]
    columns = ["Method", "p", "Seeds", "Rounds run", "Acc. (%) (ours, tail)",
               "Acc. (%) (Flower baseline)"]
    rows = []
    for distill, group in s.groupby("fjord_distill"):
        method = "FjORD + KD" if bool(distill) else "FjORD"
        per_p: dict[float, list[float]] = {}
        for widths in group.get("widths", pd.Series(dtype=object)):
            for w in widths if isinstance(widths, list) else []:
                p = round(1.0 - float(w["ratio"]), 6)
                per_p.setdefault(p, []).append(float(w["tail_test_accuracy"]))
        for p in sorted(set(per_p) | set(FJORD_P)):
            baseline = dict(zip(FJORD_P, FJORD_BASELINE[method])).get(p, "–")
            rows.append({"Method": method, "p": p, "Seeds": len(per_p.get(p, [])),
                         "Rounds run": int(group["rounds_completed"].max()),
                         "Acc. (%) (ours, tail)": _acc(per_p.get(p, [])),
                         "Acc. (%) (Flower baseline)": baseline})
    return pd.DataFrame(rows, columns=columns)


def with_config(runs: RunTable, results_dir: str | Path) -> RunTable:
    """The runs with CONFIG_EXTRA read from each run's config.json (a run folder's path from
    `results_dir` is its run_name)."""
    summaries = runs.summaries.copy()
    for name, default in CONFIG_EXTRA.items():
        values = []
        for run in summaries["run_name"]:
            try:
                config = json.loads((Path(results_dir) / run / "config.json").read_text())
            except (OSError, ValueError):
                config = {}
            value = config.get(name, default)
            values.append(default if value is None or (isinstance(value, float)
                                                       and math.isnan(value)) else value)
        summaries[name] = values
    return RunTable(summaries, runs.metrics, runs.clients, runs.partitions)


def write_reproduce(results_dir: str | Path = "results", out_dir: str | Path | None = None,
                    paper: str = "mcmahan") -> dict[str, Path]:
    """reproduce.csv/.md/.tex of `paper` from the finished runs in results_dir (make reproduce
    passes the batch's folder) into out_dir (default: results_dir itself, beside the runs)."""
    if paper not in PAPERS:
        raise ValueError(f"paper: {paper!r} is not allowed; allowed: {', '.join(PAPERS)}")
    results_dir = Path(results_dir)
    table = reproduce_table(with_config(load_runs(results_dir), results_dir), paper)
    paths = write_table(table, out_dir or results_dir, "reproduce")
    print(table.to_markdown(index=False))
    return paths
