"""Fake but contract-shaped run folders for the analysis tests.

The numbers are chosen so the expected statistics can be worked out by hand (see ACCURACY).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

NUM_CLIENTS = 4
CLIENTS_PER_ROUND = 2
NUM_CLASSES = 10
MODEL_PARAMS = 100_000
DENSE_BYTES = 4 * MODEL_PARAMS  # one dense update
DENSE_FLOPS = 5e8  # one client's local training of the full model
NAN = float("nan")

# Test accuracy (%) per round; round 2 is not evaluated.
ACCURACY = {
    ("FedAvg", 0): [50.0, NAN, 85.0, 91.0, 92.0],  # reaches 90 at round 4
    ("FedAvg", 1): [55.0, NAN, 89.0, 89.5, 94.0],  # round 5
    ("Hybrid(structured+topk 0.9)", 0): [40.0, NAN, 70.0, 80.0, 85.0],  # never
    ("Hybrid(structured+topk 0.9)", 1): [45.0, NAN, 75.0, 88.0, 90.0],  # round 5 (== target)
}
# Fraction of the dense bytes and FLOPs a method's client uses.
BYTE_FRACTION = {"FedAvg": 1.0, "Hybrid(structured+topk 0.9)": 0.1}
FLOP_FRACTION = {"FedAvg": 1.0, "Hybrid(structured+topk 0.9)": 0.6}
WALL_TIME = {("FedAvg", 0): 10.0, ("FedAvg", 1): 12.0,
             ("Hybrid(structured+topk 0.9)", 0): 6.0, ("Hybrid(structured+topk 0.9)", 1): 7.0}


def run_name(label: str, seed: int) -> str:
    return f"{'fedavg' if label == 'FedAvg' else 'hybrid'}_s{seed}"


def write_run(results_dir: Path, label: str, seed: int, accuracy: list[float],
              wall_time: float = 10.0, finished: bool = True, name: str | None = None,
              config: dict | None = None, byte_fraction: float | None = None,
              flop_fraction: float | None = None) -> Path:
    """Write one run folder (named `name`, default from label and seed, with `config` changes
    to its config.json); without summary.json when not `finished`. A label not in
    BYTE_FRACTION / FLOP_FRACTION needs `byte_fraction` and `flop_fraction`."""
    prunes = label != "FedAvg"
    byte_fraction = BYTE_FRACTION[label] if byte_fraction is None else byte_fraction
    flop_fraction = FLOP_FRACTION[label] if flop_fraction is None else flop_fraction
    folder = Path(results_dir) / (name or run_name(label, seed))
    folder.mkdir(parents=True)
    config = {"run_name": folder.name, "seed": seed, "rounds": len(accuracy),
              "pruning_mode": "structured" if prunes else "none", "pruning_ratio": 0.4 if prunes else 0.0,
              "sparsify_method": "topk" if prunes else "none",
              "sparsity_ratio": 0.9 if prunes else 0.0, "error_feedback": True,
              "label": None, "dataset": "mnist", "partition": "shards",
              "_meta": {"git_commit": "abc123", "created": "2025-01-01T00:00:00"},
              **(config or {})}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    metrics = _metrics(accuracy, byte_fraction, flop_fraction, wall_time)
    metrics.to_csv(folder / "metrics.csv", index=False)
    _clients(len(accuracy), seed, prunes).to_csv(folder / "clients.csv", index=False)
    _partition().to_csv(folder / "partition.csv", index=False)
    if finished:
        summary = _summary(folder.name, label, seed, metrics)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return folder


def _metrics(accuracy, byte_fraction, flop_fraction, wall_time) -> pd.DataFrame:
    rounds = len(accuracy)
    df = pd.DataFrame({"round": range(1, rounds + 1), "test_accuracy": accuracy})
    df["test_loss"] = [NAN if math.isnan(a) else (100 - a) / 50 for a in accuracy]
    df["train_loss"] = df["test_loss"].bfill()
    df["avg_transmitted_ratio"] = byte_fraction
    df["avg_pruning_ratio"] = 0.0 if flop_fraction == 1.0 else 0.4
    df["avg_round_time_sec"] = wall_time / rounds / CLIENTS_PER_ROUND
    df["uplink_dense_bytes"] = CLIENTS_PER_ROUND * DENSE_BYTES
    df["uplink_bytes"] = df["uplink_dense_bytes"] * byte_fraction
    df["cumulative_uplink_bytes"] = df["uplink_bytes"].cumsum()
    df["downlink_bytes"] = CLIENTS_PER_ROUND * DENSE_BYTES
    df["cumulative_downlink_bytes"] = df["downlink_bytes"].cumsum()
    df["dense_client_train_flops"] = CLIENTS_PER_ROUND * DENSE_FLOPS
    df["client_train_flops"] = df["dense_client_train_flops"] * flop_fraction
    df["cumulative_client_train_flops"] = df["client_train_flops"].cumsum()
    df["cumulative_dense_client_train_flops"] = df["dense_client_train_flops"].cumsum()
    df["simulated_round_time_sec"] = 2.0 * flop_fraction
    df["cumulative_simulated_time_sec"] = df["simulated_round_time_sec"].cumsum()
    df["wall_time_sec"] = wall_time / rounds
    df["elapsed_sec"] = df["wall_time_sec"].cumsum()
    df["eval_time_sec"] = 0.01
    return df


def _clients(rounds: int, seed: int, prunes: bool) -> pd.DataFrame:
    rows = []
    for rnd in range(1, rounds + 1):
        for k in range(CLIENTS_PER_ROUND):
            cid = (rnd + k + seed) % NUM_CLIENTS
            ratio = 0.1 * (cid + 1) if prunes else 0.0  # weaker clients (higher id) prune more
            trained = int(MODEL_PARAMS * (1 - ratio))
            rows.append({"round": rnd, "client_id": cid, "num_samples": 150,
                         "pruning_ratio": ratio, "trained_params": trained,
                         "sent_params": trained // 10 if prunes else trained,
                         "transmitted_ratio": 0.1 if prunes else 1.0,
                         "uplink_bytes": DENSE_BYTES // 10 if prunes else DENSE_BYTES,
                         "downlink_bytes": DENSE_BYTES, "train_flops": DENSE_FLOPS * (1 - ratio),
                         "train_loss": 0.5, "update_time_sec": 1.0, "simulated_time_sec": 1.0,
                         "compute_gflops": 1.0 + cid, "uplink_mbps": 10.0, "downlink_mbps": 50.0})
    return pd.DataFrame(rows)


def _partition() -> pd.DataFrame:
    """Label-skew shards: client c holds classes 2c and 2c+1 (and client 3 also 8, 9)."""
    rows = []
    for cid in range(NUM_CLIENTS):
        counts = [0] * NUM_CLASSES
        for cls in (2 * cid, 2 * cid + 1) + ((8, 9) if cid == NUM_CLIENTS - 1 else ()):
            counts[cls] = 75
        rows.append({"client_id": cid, **{f"class_{i}": n for i, n in enumerate(counts)},
                     "total": sum(counts)})
    return pd.DataFrame(rows)


def _summary(name: str, label: str, seed: int, metrics: pd.DataFrame) -> dict:
    acc = metrics["test_accuracy"]
    last = metrics.iloc[-1]
    uplink_mb = last["cumulative_uplink_bytes"] / 1e6
    dense_mb = metrics["uplink_dense_bytes"].sum() / 1e6
    gflops = last["cumulative_client_train_flops"] / 1e9
    dense_gflops = last["cumulative_dense_client_train_flops"] / 1e9
    return {"run_name": name, "label": label, "seed": seed, "rounds_completed": len(metrics),
            "tail_test_accuracy": float(acc.dropna().iloc[-5:].mean()),
            "final_test_accuracy": float(acc.dropna().iloc[-1]),
            "best_test_accuracy": float(acc.max()),
            "best_round": int(metrics["round"][acc.idxmax()]),
            "final_test_loss": float(metrics["test_loss"].dropna().iloc[-1]),
            "total_uplink_mb": uplink_mb, "total_uplink_dense_mb": dense_mb,
            "compression_x": dense_mb / uplink_mb,
            "total_downlink_mb": last["cumulative_downlink_bytes"] / 1e6,
            "total_client_train_gflops": gflops, "total_dense_client_train_gflops": dense_gflops,
            "flop_saving_pct": 100 * (1 - gflops / dense_gflops),
            "compression_x_trained": dense_mb / uplink_mb * (gflops / dense_gflops),
            "client_train_gflops_per_update": gflops / len(metrics) / CLIENTS_PER_ROUND,
            "pruning_ratio_mean": float(metrics["avg_pruning_ratio"].mean()),
            "tail_rounds": int(min(5, acc.notna().sum())), "tail_rounds_asked": 5,
            "tail_shorter_than_asked": bool(acc.notna().sum() < 5),
            "wall_time_sec": float(last["elapsed_sec"]),
            "simulated_time_sec": float(last["cumulative_simulated_time_sec"]),
            "artifacts": {"metrics": "metrics.csv", "summary": "summary.json"}}


def make_fake_results(results_dir: Path, labels: tuple[str, ...] | None = None) -> Path:
    """2 labels x 2 seeds of finished runs (or only `labels`), plus folders that are not runs."""
    results_dir = Path(results_dir)
    for (label, seed), accuracy in ACCURACY.items():
        if labels is None or label in labels:
            write_run(results_dir, label, seed, accuracy, WALL_TIME[(label, seed)])
    (results_dir / "bench").mkdir(parents=True, exist_ok=True)
    (results_dir / "bench" / "timings.csv").write_text("what,seconds\nround,1.0\n")
    (results_dir / "batch_ablations").mkdir(exist_ok=True)
    (results_dir / "batch_ablations" / "batch.json").write_text('{"runs": []}')
    (results_dir / ".gitkeep").write_text("")
    return results_dir


# Twelve methods as the ablations label them (config.method_label), with the share of dense
# bytes and FLOPs each sends and trains: a batch like `make ablations` writes.
BATCH_METHODS = {
    "FedAvg": (1.0, 1.0),
    "Prune(unstructured 0.5)": (1.0, 1.0),
    "Prune(structured 0.4 adaptive)": (0.6, 0.6),
    "Sparsify(topk 0.9)": (0.12, 1.0),
    "Sparsify(topk 0.95)": (0.07, 1.0),
    "Sparsify(topk 0.99)": (0.02, 1.0),
    "Sparsify(random 0.95)": (0.07, 1.0),
    "Sparsify(stc 0.95)": (0.02, 1.0),
    "QSGD(qsgd s=16 b=512)": (0.19, 1.0),
    "Hybrid(structured 0.4 adaptive + cost_weighted 0.95)": (0.04, 0.6),
    "Hybrid(structured 0.4 adaptive + cost_weighted 0.95 no-EF)": (0.04, 0.6),
    "Hybrid(rolex 0.4 adaptive + topk 0.95)": (0.04, 0.6),
}


def make_fake_batch(results_dir: Path, batch: str = "ablations", seeds=(0, 1),
                    rounds: int = 20, methods: dict | None = None) -> Path:
    """A batch's folder as `batch run` leaves it: results/<batch>/<stem>_s<seed>/ for every
    method and seed (accuracy rising to a plateau that differs by method), plus its grid.jsonl
    and logs/. Returns results/<batch>."""
    folder = Path(results_dir) / batch
    methods = BATCH_METHODS if methods is None else methods
    for i, (label, (byte_fraction, flop_fraction)) in enumerate(methods.items()):
        for seed in seeds:
            plateau = 92.0 - 2.5 * i + 1.5 * seed
            accuracy = [round(plateau * (1 - math.exp(-(r + 1) / 4)) + (r % 3) - 1, 2)
                        for r in range(rounds)]
            write_run(folder, label, seed, accuracy, wall_time=rounds * (2 + flop_fraction),
                      name=f"m{i:02d}_s{seed}", byte_fraction=byte_fraction,
                      flop_fraction=flop_fraction,
                      config={"rounds": rounds, "num_clients": 20, "clients_per_round": 10})
    (folder / "grid.jsonl").write_text("")
    (folder / "logs").mkdir(exist_ok=True)
    return folder
