"""The round loop: sampling, local updates, aggregation, evaluation, metrics, checkpoints.

One round is a function of the state the loop owns (the global vector and each client's
`ClientState`); every random draw comes from a named stream keyed by (seed, round, client),
so an interrupted run resumed from its checkpoint ends with the same numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch

from . import artifacts, plots
from ..fl import server
from ..fl.client import ClientState, DivergenceError, local_update
from ..config import ExperimentConfig, check_device
from ..data.loading import TensorDataset, class_counts, load_dataset, partition, resolve_data_root, subsample
from ..data.catalog import DATASETS
from ..models.layers import ModelShape, ParamLayout, init_flat_params
from ..fl.pruning import Pruner, initial_ratios, kept_units, online_ratio
from ..rng import torch_generator
from ..fl.systems import auto_deadline, make_profiles

MB = 1e6


@dataclass
class RunResult:
    run_dir: Path
    metrics: pd.DataFrame
    clients: pd.DataFrame
    summary: dict


@dataclass
class Federation:
    """What a run is set up with before its first round."""

    cfg: ExperimentConfig
    client_data: list[TensorDataset]
    test: TensorDataset
    counts: np.ndarray  # [client, class] partition table
    shape: ModelShape
    layout: ParamLayout
    profiles: list
    deadline: float


def sample_clients(cfg: ExperimentConfig, round_idx: int) -> list[int]:
    perm = torch.randperm(cfg.num_clients, generator=torch_generator(cfg.seed, "sampling",
                                                                     round_idx))
    return sorted(perm[: cfg.clients_per_round].tolist())


def setup(cfg: ExperimentConfig) -> Federation:
    info = DATASETS[cfg.dataset]
    train, test = load_dataset(cfg.dataset, cfg.data_root)
    device = torch.device(cfg.device)
    keep = subsample(train.labels, cfg.data_fraction, cfg.seed)
    parts = partition(train.labels[keep], cfg.partition, cfg.num_clients, cfg.seed,
                      classes_per_client=cfg.classes_per_client, alpha=cfg.dirichlet_alpha)
    parts = [keep[p] for p in parts]
    client_data = [TensorDataset(train.images[p].to(device), train.labels[p].to(device))
                   for p in parts]
    shape = ModelShape.for_dataset(info)
    layout = ParamLayout(shape)
    profiles = make_profiles(cfg)
    deadline = cfg.round_deadline_sec
    if deadline is None:
        ratio = cfg.pruning_ratio if cfg.pruning else 0.0
        base = shape
        if cfg.pruning and cfg.pruning_mode == "structured":
            base = shape.with_widths({g: kept_units(w, ratio) for g, w in shape.width_of.items()})
        deadline = auto_deadline(profiles, [len(p) for p in parts],
                                 base.train_flops_per_sample(), ParamLayout(base).size, cfg)
    test = TensorDataset(test.images.to(device), test.labels.to(device))
    return Federation(cfg, client_data, test, class_counts(train.labels, parts, info.num_classes),
                      shape, layout, profiles, deadline)


def run_experiment(cfg: ExperimentConfig,
                   on_round_end: Optional[Callable[[int, dict], None]] = None) -> RunResult:
    """Run (or resume) one experiment and write its artifacts; see README for the files.

    Checked before any work: the device and the results folder. The run folder is locked while
    the run works in it (a second process gets RunLockedError naming the holder's pid), SIGTERM
    stops the run like Ctrl-C, and a run that fails before writing its config leaves no folder.
    """
    from .guard import Terminated, claimed
    from ..config import check_results_dir

    check_device(cfg.device)
    check_results_dir(cfg.results_dir)
    if cfg.run_name is None:
        cfg = cfg.replace(run_name=artifacts.default_run_name())
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    with claimed(Path(cfg.results_dir) / cfg.run_name):
        run_dir, checkpoint = artifacts.prepare_run_dir(cfg)
        log = artifacts.open_log(run_dir, cfg.run_name, console=cfg.progress != "off",
                                 bar=cfg.progress == "auto")
        try:
            return _run(cfg, run_dir, checkpoint, log, on_round_end)
        except KeyboardInterrupt as err:
            how = "Terminated (SIGTERM)" if isinstance(err, Terminated) else "Interrupted"
            log.error(f"{how}. The checkpoint of the last finished round is kept: continue "
                      "with --resume (resume=True).")
            raise
        except DivergenceError as err:
            message = str(err)
            if "lr" not in message.replace("(", " ").split():
                message += (f". Lower lr (now {cfg.lr:g}) or server_lr (now "
                            f"{cfg.server_lr:g})")
            log.error(f"Run stopped, diverged: {message}. What was written so far is kept in "
                      f"{run_dir}.")
            raise DivergenceError(message) from None
        finally:
            artifacts.close_log(log)


def _run(cfg, run_dir, checkpoint, log, on_round_end) -> RunResult:
    wall_start = time.perf_counter()
    log.info(f"FedPrune-Sparse run '{cfg.run_name}': {cfg.method_label} on {cfg.dataset} "
             f"(data root {resolve_data_root(cfg.data_root).resolve()}), device {cfg.device}")
    fed = setup(cfg)
    if checkpoint is None:
        artifacts.write_config(cfg, run_dir, deadline_sec=fed.deadline)
        artifacts.write_csv(_partition_rows(fed.counts), run_dir / "partition.csv")
        plots.partition_figure(fed.counts, run_dir / "partition.png")
    _log_setup(log, fed)

    global_flat = init_flat_params(fed.shape, cfg.seed).to(cfg.device)
    ratios = initial_ratios(np.array([p.strength for p in fed.profiles]), cfg)
    states = [ClientState(float(r)) for r in ratios]
    metric_rows: list[dict] = []
    client_rows: list[dict] = []
    start_round, elapsed_before = 1, 0.0
    if checkpoint is not None:
        global_flat = checkpoint["global"].to(cfg.device)
        for state, (ratio, residual) in zip(states, checkpoint["clients"]):
            state.ratio = ratio
            state.residual = None if residual is None else residual.to(cfg.device)
        metric_rows, client_rows = checkpoint["metrics"], checkpoint["client_rows"]
        start_round, elapsed_before = checkpoint["round"] + 1, checkpoint["elapsed_sec"]
        log.info(f"Resuming after round {checkpoint['round']} of {cfg.rounds}")

    bar = _progress(cfg, start_round)
    for r in range(start_round, cfg.rounds + 1):
        round_start = time.perf_counter()
        global_flat, row, rows = run_round(fed, r, global_flat, states, log)
        row["wall_time_sec"] = time.perf_counter() - round_start
        row["elapsed_sec"] = elapsed_before + time.perf_counter() - wall_start
        _accumulate(row, metric_rows)
        metric_rows.append(row)
        client_rows.extend(rows)
        _log_round(log, cfg, row)
        artifacts.write_csv(metric_rows, run_dir / "metrics.csv")
        artifacts.write_csv(client_rows, run_dir / "clients.csv")
        artifacts.save_atomic({
            "round": r, "config": cfg.science_dict(), "global": global_flat.cpu(),
            "clients": [(s.ratio, None if s.residual is None else s.residual.cpu())
                        for s in states],
            "metrics": metric_rows, "client_rows": client_rows,
            "elapsed_sec": row["elapsed_sec"]}, run_dir / artifacts.CHECKPOINT)
        if bar is not None:
            bar.update(1)
            if not math.isnan(row["test_accuracy"]):
                bar.set_postfix(acc=f"{row['test_accuracy']:.2f}%")
        if on_round_end is not None:
            on_round_end(r, row)
    if bar is not None:
        bar.close()
    return _finish(cfg, run_dir, fed, global_flat, metric_rows, client_rows, log)


def run_round(fed: Federation, r: int, global_flat: torch.Tensor, states: list[ClientState],
              log) -> tuple[torch.Tensor, dict, list[dict]]:
    """One synchronous round; returns the new global vector, its metrics row, client rows."""
    cfg = fed.cfg
    pruner = Pruner(fed.layout, global_flat, cfg)
    messages, rows = [], []
    for cid in sample_clients(cfg, r):
        state = states[cid]
        down_plan = pruner.plan(state.ratio) if pruner.mode == "structured" else pruner.full_plan()
        down = server.broadcast(global_flat, down_plan)
        result = local_update(cid, r, down, pruner, state, fed.client_data[cid],
                              DATASETS[cfg.dataset], fed.layout, cfg)
        profile = fed.profiles[cid]
        simulated = profile.time(result.train_flops, len(down), len(result.message))
        messages.append(result.message)
        rows.append({
            "round": r, "client_id": cid, "num_samples": result.num_samples,
            "pruning_ratio": state.ratio, "trained_params": len(result.plan.coords),
            "sent_params": result.sent, "transmitted_ratio": result.sent / fed.layout.size,
            "uplink_bytes": len(result.message), "downlink_bytes": len(down),
            "train_flops": result.train_flops, "dense_train_flops": result.dense_train_flops,
            "train_loss": result.train_loss, "update_time_sec": result.update_time_sec,
            "simulated_time_sec": simulated, "compute_gflops": profile.compute_gflops,
            "uplink_mbps": profile.uplink_mbps, "downlink_mbps": profile.downlink_mbps})
        log.info(f"  round {r:3d} client {cid:3d} | ratio {state.ratio:.2f} | "
                 f"samples {result.num_samples:5d} | loss {result.train_loss:.4f} | sent "
                 f"{result.sent:,}/{len(result.plan.coords):,} coords | up "
                 f"{len(result.message) / 1e3:,.1f} kB | down {len(down) / 1e3:,.1f} kB | "
                 f"{result.update_time_sec:.2f} s (simulated {simulated:.2f} s)",
                 extra={"client": True})
        if cfg.pruning and cfg.adaptive_ratio_online:
            state.ratio = online_ratio(state.ratio, simulated, fed.deadline, cfg)

    global_flat = server.aggregate(global_flat, messages, pruner, cfg.aggregation_weights,
                                   cfg.server_lr)
    if not torch.isfinite(global_flat).all():
        raise DivergenceError(f"round {r}: the global model has NaN/inf weights")
    accuracy = loss = float("nan")
    eval_time = 0.0
    if r % cfg.eval_every == 0 or r == cfg.rounds:
        eval_start = time.perf_counter()
        accuracy, loss = server.evaluate(global_flat, fed.shape, fed.test,
                                         DATASETS[cfg.dataset], cfg.eval_batch_size)
        eval_time = time.perf_counter() - eval_start
        if not math.isfinite(loss):
            raise DivergenceError(f"round {r}: test loss is {loss}")
    frame = pd.DataFrame(rows)
    row = {
        "round": r, "test_accuracy": accuracy, "test_loss": loss,
        "train_loss": float(np.average(frame.train_loss, weights=frame.num_samples)),
        "avg_transmitted_ratio": frame.transmitted_ratio.mean(),
        "avg_pruning_ratio": frame.pruning_ratio.mean(),
        "avg_round_time_sec": frame.update_time_sec.mean(),
        "uplink_bytes": int(frame.uplink_bytes.sum()),
        "uplink_dense_bytes": 4 * fed.layout.size * len(frame),
        "downlink_bytes": int(frame.downlink_bytes.sum()),
        "client_train_flops": int(frame.train_flops.sum()),
        "dense_client_train_flops": int(frame.dense_train_flops.sum()),
        "simulated_round_time_sec": frame.simulated_time_sec.max(),
        "eval_time_sec": eval_time, "num_clients_selected": len(frame)}
    return global_flat, row, rows


def _accumulate(row: dict, previous: list[dict]) -> None:
    last = previous[-1] if previous else {}
    for name, source in (("cumulative_uplink_bytes", "uplink_bytes"),
                         ("cumulative_downlink_bytes", "downlink_bytes"),
                         ("cumulative_client_train_flops", "client_train_flops"),
                         ("cumulative_dense_client_train_flops", "dense_client_train_flops"),
                         ("cumulative_simulated_time_sec", "simulated_round_time_sec")):
        row[name] = last.get(name, 0) + row[source]


def _finish(cfg, run_dir, fed, global_flat, metric_rows, client_rows, log) -> RunResult:
    metrics = pd.DataFrame(metric_rows)
    torch.save({"state_dict": {s.name: v.cpu().clone() for s, v in
                               zip(fed.layout, fed.layout.views(global_flat).values())},
                "model_shape": fed.shape.__dict__, "config": cfg.to_dict()},
               run_dir / "final_model.pt")
    figures = plots.run_figures(metrics, run_dir, cfg.method_label)
    evaluated = metrics.dropna(subset=["test_accuracy"])
    best = evaluated.loc[evaluated.test_accuracy.idxmax()]
    last = metrics.iloc[-1]
    summary = {
        "run_name": cfg.run_name, "label": cfg.method_label, "dataset": cfg.dataset,
        "seed": cfg.seed, "rounds_completed": int(last["round"]),
        "final_test_accuracy": float(last.test_accuracy),
        "final_test_loss": float(last.test_loss),
        "best_test_accuracy": float(best.test_accuracy), "best_round": int(best["round"]),
        "total_uplink_mb": float(last.cumulative_uplink_bytes / MB),
        "total_uplink_dense_mb": float(metrics.uplink_dense_bytes.sum() / MB),
        "compression_x": float(metrics.uplink_dense_bytes.sum() / last.cumulative_uplink_bytes),
        "total_downlink_mb": float(last.cumulative_downlink_bytes / MB),
        "total_client_train_gflops": float(last.cumulative_client_train_flops / 1e9),
        "total_dense_client_train_gflops": float(last.cumulative_dense_client_train_flops / 1e9),
        "flop_saving_pct": float(100 * (1 - last.cumulative_client_train_flops
                                        / last.cumulative_dense_client_train_flops)),
        "wall_time_sec": float(last.elapsed_sec),
        "simulated_time_sec": float(last.cumulative_simulated_time_sec),
        "artifacts": {name: str(run_dir / name) for name in (
            "config.json", "metrics.csv", "clients.csv", "partition.csv", "run.log",
            "final_model.pt", *(f"{k}.png" for k in figures), "partition.png")},
    }
    log.info(f"Finished: final accuracy {summary['final_test_accuracy']:.2f}% (best "
             f"{summary['best_test_accuracy']:.2f}% at round {summary['best_round']}), uplink "
             f"{summary['total_uplink_mb']:.2f} MB ({summary['compression_x']:.1f}x less than "
             f"dense), client FLOPs saved {summary['flop_saving_pct']:.1f}%, wall time "
             f"{summary['wall_time_sec']:.1f} s. Artifacts in {run_dir}")
    artifacts.write_summary(summary, run_dir)  # last: marks the run finished
    (run_dir / artifacts.CHECKPOINT).unlink(missing_ok=True)
    return RunResult(run_dir, metrics, pd.DataFrame(client_rows), summary)


def _partition_rows(counts: np.ndarray) -> list[dict]:
    return [{"client_id": i, **{f"class_{c}": int(n) for c, n in enumerate(row)},
             "total": int(row.sum())} for i, row in enumerate(counts)]


def _log_setup(log, fed: Federation) -> None:
    cfg = fed.cfg
    log.info(f"Partition '{cfg.partition}' over {cfg.num_clients} clients "
             f"({int(fed.counts.sum()):,} training samples); model {fed.layout.size:,} "
             f"parameters; round deadline (simulated) {fed.deadline:.2f} s")
    for cid, row in enumerate(fed.counts):
        classes = ", ".join(f"{c}:{n}" for c, n in enumerate(row) if n)
        log.info(f"  client {cid:3d} | {int(row.sum()):5d} samples | classes {classes}",
                 extra={"client": True})


def _log_round(log, cfg, row: dict) -> None:
    acc = ("not evaluated" if math.isnan(row["test_accuracy"]) else
           f"acc {row['test_accuracy']:.2f}% loss {row['test_loss']:.4f}")
    log.info(f"Round {row['round']:3d}/{cfg.rounds} | {acc} | train loss "
             f"{row['train_loss']:.4f} | sent {100 * row['avg_transmitted_ratio']:.2f}% | "
             f"pruning {row['avg_pruning_ratio']:.2f} | uplink {row['uplink_bytes'] / MB:.2f} "
             f"MB | {row['wall_time_sec']:.1f} s (simulated {row['simulated_round_time_sec']:.1f}"
             f" s)")


def _progress(cfg, start_round: int):
    """A live bar (a widget in Jupyter) for `auto`; for `text` (papermill, batches) the
    'Round k/N' lines are the progress, since a redrawn bar only litters a saved notebook."""
    if cfg.progress != "auto":
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.rounds, initial=start_round - 1, desc=cfg.run_name, unit="round")


def describe_partition(cfg: ExperimentConfig) -> pd.DataFrame:
    """Samples per class on each client, as the run will partition them."""
    return pd.DataFrame(_partition_rows(setup(cfg).counts)).set_index("client_id")
