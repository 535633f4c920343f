"""The round loop: sampling, local updates, aggregation, evaluation, metrics, checkpoints.

A round is a function of the state (fl/round.py); the loop owns the ServerState between rounds
and saves it, whole, as the checkpoint after every round. Every random draw comes from a named
stream keyed by (seed, round, client), so a resumed run ends with the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch

from . import artifacts, checkpoint, plots, summary, widths
from ..checks import check_device, check_results_dir
from ..config import ExperimentConfig
from ..data.files import resolve_data_root
from ..fl.round import UpdateSource, run_round
from ..fl.state import ServerState
from ..fl.store import FileStore
from ..fl.threads import available_cores, resolve_threads, torch_threads
from ..fl.training import DivergenceError
from .federation import Federation, build_federation, cohort, initial_state
from .guard import Terminated, claimed
from .progress import Progress
from .summary import MB


@dataclass
class RunResult:
    run_dir: Path
    metrics: pd.DataFrame
    clients: pd.DataFrame
    summary: dict


def run_experiment(cfg: ExperimentConfig,
                   on_round_end: Optional[Callable[[int, dict], None]] = None,
                   updates: Optional[UpdateSource] = None) -> RunResult:
    """Run (or resume) one experiment and write its artifacts; see README for the files.

    `updates` replaces how the cohort's client updates are obtained (fl.round.run_round): a
    deployment's server passes the one that asks its nodes; everything else is this loop.

    Checked before any work: the device and the results folder. The run folder is locked while
    the run works in it (a second process gets RunLockedError naming the holder's pid), SIGTERM
    stops the run like Ctrl-C, and a run that fails before writing its config leaves no folder.
    """
    check_device(cfg.device)
    check_results_dir(cfg.results_dir)
    if cfg.run_name is None:
        cfg = cfg.replace(run_name=artifacts.default_run_name())
    threads = resolve_threads(cfg.num_threads)
    with claimed(Path(cfg.results_dir) / cfg.run_name), torch_threads(threads):
        run_dir, resume = artifacts.prepare_run_dir(cfg)
        saved = (checkpoint.load(run_dir / artifacts.CHECKPOINT, cfg,
                                 checkpoint.numeric_threads(cfg, threads)) if resume else None)
        log = artifacts.open_log(run_dir, cfg.run_name, console=cfg.progress != "off",
                                 bar=cfg.progress == "auto")
        try:
            return _run(cfg, run_dir, saved, log, on_round_end, updates)
        except KeyboardInterrupt as err:
            how = "Terminated (SIGTERM)" if isinstance(err, Terminated) else "Interrupted"
            # run.log's record; the command that stops says so in its own one line
            log.error(f"{how}. The checkpoint of the last finished round is kept: continue "
                      "with --resume (resume=True).", extra={"client": True})
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


def _run(cfg, run_dir, saved, log, on_round_end, updates) -> RunResult:
    wall_start = time.perf_counter()
    log.info(f"FedPrune-Sparse run '{cfg.run_name}': {cfg.method_label} on {cfg.dataset} "
             f"(data root {resolve_data_root(cfg.data_root).resolve()}), device {cfg.device}")
    _warn_oversubscribed(log, cfg)
    fed = build_federation(cfg)
    _warn_scaler_without_norm(log, fed)
    if saved is None:
        artifacts.write_config(cfg, run_dir, deadline_sec=fed.deadline)
        artifacts.write_csv(_partition_rows(fed.counts), run_dir / "partition.csv")
        plots.partition_figure(fed.counts, run_dir / "partition.png")
    _log_setup(log, fed)

    if saved is None:
        store = FileStore(run_dir / artifacts.CLIENT_STATES, cfg.num_clients, fed.layout.size)
        state, history, elapsed_before = initial_state(fed, store), History(), 0.0
    else:  # replay the last round's client changes into the checked store (idempotent)
        state = ServerState.from_dict(saved["state"], saved["store"], cfg.device)
        state = state.replace(clients=state.clients.commit())
        history, elapsed_before = History(**saved["history"]), saved["elapsed_sec"]
        log.info(f"Resuming after round {state.round} of {cfg.rounds}")

    progress = Progress(cfg.progress, cfg.run_name, cfg.rounds, cfg.clients_per_round,
                        state.round + 1)
    threads = checkpoint.numeric_threads(cfg, torch.get_num_threads())
    for r in range(state.round + 1, cfg.rounds + 1):
        if _reached_target(cfg, history):
            break
        round_start = time.perf_counter()
        state, rows = run_round(state, cohort(fed, r), fed.setup, updates,
                                progress.client_done)
        if r < cfg.rounds and cfg.target_accuracy is None and hasattr(updates, "start"):
            updates.start(state, cohort(fed, r + 1), fed.setup)  # before evaluating round r
        evaluation, diagnostics, width_rows = summary.evaluate_round(fed, r, state)
        row = summary.round_row(fed, r, evaluation, rows, history.metrics)
        row["wall_time_sec"] = time.perf_counter() - round_start
        row["elapsed_sec"] = elapsed_before + time.perf_counter() - wall_start
        history.add(row, rows, diagnostics, width_rows)
        progress.round_ending()  # a terminal's live bar gives way to the round's line
        _log_round(log, cfg, row, rows)
        history.write(run_dir)
        # the checkpoint holds the global state and the clients this round changed; only then
        # are those changes written to the store, so a kill anywhere resumes exactly
        checkpoint.save(run_dir / artifacts.CHECKPOINT, cfg, state, history.as_dict(),
                        row["elapsed_sec"], threads)
        state = state.replace(clients=state.clients.commit())
        progress.round_done(row)
        if on_round_end is not None:
            on_round_end(r, row)
    progress.close()
    if _reached_target(cfg, history):
        log.info(f"Target accuracy {cfg.target_accuracy:g}% reached at round {state.round}: "
                 f"the run stops there (rounds = {cfg.rounds} was the limit).")
    return _finish(cfg, run_dir, fed, state, history, log)


def _reached_target(cfg: ExperimentConfig, history: "History") -> bool:
    """Has the last evaluated round reached target_accuracy (evaluated rounds only)?"""
    return (cfg.target_accuracy is not None and bool(history.metrics)
            and history.metrics[-1]["test_accuracy"] >= cfg.target_accuracy)


def _warn_oversubscribed(log, cfg: ExperimentConfig) -> None:
    """Once, where the thread settings make threads wait for cores: more threads than cores,
    or intra-op threads (engine sequential/cohort) on a machine other processes keep busy
    (OpenMP's barriers then wait at every operation for a core someone else holds)."""
    cores, threads = available_cores(), resolve_threads(cfg.num_threads)
    if threads > cores:
        log.warning(f"num_threads {threads} is more than the {cores} core(s) this process may "
                    f"use: threads will wait for each other (oversubscribed); allowed without "
                    f"waiting: up to {cores}")
    elif cfg.engine != "parallel" and threads > 1 and cfg.device == "cpu":
        busy = os.getloadavg()[0]
        if busy + threads > cores + 0.5:
            log.warning(f"the machine is busy (load {busy:.1f} on {cores} cores): engine "
                        f"{cfg.engine} on {threads} intra-op threads waits at every operation "
                        f"for a core another process holds; engine parallel (the default) "
                        f"does not")


def _warn_scaler_without_norm(log, fed: Federation) -> None:
    """Once: HeteroFL's scaler on a model without normalisation layers hurts the full model."""
    spec = fed.layout.spec
    if fed.cfg.local_training == "scaler" and not (spec.has_norm("bn") or spec.has_norm("gn")):
        log.warning(f"local_training scaler on {spec.name} without normalisation: each pruned "
                    f"layer's output is divided by its kept fraction while training, and with no "
                    f"norm after it the factors compound layer by layer, so units trained at "
                    f"different widths are averaged on different scales and the full-width "
                    f"model suffers (HeteroFL follows every convolution with static batch norm, "
                    f"which cancels the factor: model_norm bn)")


DIAGNOSTIC_COLUMNS = ("round", "metric", "class", "value")


@dataclass
class History:
    """The rows written so far: metrics.csv, clients.csv, diagnostics.csv, widths.csv."""

    metrics: list[dict] = field(default_factory=list)
    clients: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    widths: list[dict] = field(default_factory=list)

    def add(self, row: dict, client_rows: list[dict], diagnostic_rows: list[dict],
            width_rows: list[dict]) -> None:
        self.metrics.append(row)
        self.clients.extend(client_rows)
        self.diagnostics.extend(diagnostic_rows)
        self.widths.extend(width_rows)

    def as_dict(self) -> dict[str, list[dict]]:
        return dataclasses.asdict(self)

    def write(self, run_dir: Path) -> None:
        artifacts.write_csv(self.metrics, run_dir / "metrics.csv")
        artifacts.write_csv(self.clients, run_dir / "clients.csv")
        artifacts.write_csv(self.diagnostics, run_dir / "diagnostics.csv",
                            columns=DIAGNOSTIC_COLUMNS)
        artifacts.write_csv(self.widths, run_dir / "widths.csv", columns=widths.COLUMNS)


def _finish(cfg, run_dir, fed, state, history: History, log) -> RunResult:
    metrics, clients = pd.DataFrame(history.metrics), pd.DataFrame(history.clients)
    params = state.evaluated_params()
    artifacts.save_atomic(
        {"state_dict": {s.name: v.cpu().clone() for s, v in
                        zip(fed.layout, fed.layout.views(params).values())},
         "model": dataclasses.asdict(fed.layout.spec), "config": cfg.to_dict()},
        run_dir / "final_model.pt")
    figures = plots.run_figures(metrics, run_dir, cfg.method_label)
    width_frame = pd.DataFrame(history.widths, columns=widths.COLUMNS)
    figures.update(plots.diagnostics_figures(pd.DataFrame(
        history.diagnostics, columns=DIAGNOSTIC_COLUMNS), run_dir, cfg.method_label))
    figures.update(plots.width_figures(width_frame, run_dir, cfg.method_label))
    figures.update(plots.client_figures(clients, run_dir, cfg.method_label))
    result = summary.summary(fed, state, metrics, clients, width_frame)
    result["artifacts"] = {name: str(run_dir / name) for name in (
        "config.json", "metrics.csv", "clients.csv", "diagnostics.csv", "widths.csv",
        "partition.csv",
        "run.log", "final_model.pt", *(f"{k}.png" for k in figures), "partition.png")}
    log.info(summary.finished_line(result) + f" Artifacts in {run_dir}")
    for line in summary.width_lines(result):
        log.info(line)
    if result["tail_shorter_than_asked"]:
        log.warning(f"The run evaluated {result['tail_rounds']} round(s), fewer than tail_rounds "
                    f"= {cfg.tail_rounds}: its tail accuracy averages those alone, round 1 "
                    f"included; compare it only with runs of the same length")
    artifacts.write_summary(result, run_dir)  # last: marks the run finished
    (run_dir / artifacts.CHECKPOINT).unlink(missing_ok=True)
    (run_dir / artifacts.CLIENT_STATES).unlink(missing_ok=True)
    return RunResult(run_dir, metrics, clients, result)


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


def _log_round(log, cfg, row: dict, rows: list[dict]) -> None:
    for c in rows:
        if c["status"] == "sat_out":  # selective participation: not capable this round
            log.info(f"  round {c['round']:3d} client {c['client_id']:3d} | sits the round out "
                     f"(its full-model round would miss the deadline)", extra={"client": True})
            continue
        if c["status"] == "missing":  # a deployment's node failed or timed out: on the console
            log.warning(f"  round {c['round']:3d} client {c['client_id']:3d} | missing: its "
                        f"update did not arrive (down {c['downlink_bytes'] / 1e3:,.1f} kB)")
            continue
        log.info(f"  round {c['round']:3d} client {c['client_id']:3d} | ratio "
                 f"{c['pruning_ratio']:.2f} | samples {c['num_samples']:5d} | loss "
                 f"{c['train_loss']:.4f} | sent {c['sent_params']:,}/{c['trained_params']:,} "
                 f"coords | up {c['uplink_bytes'] / 1e3:,.1f} kB | down "
                 f"{c['downlink_bytes'] / 1e3:,.1f} kB | {c['update_time_sec']:.2f} s "
                 f"(simulated {c['simulated_time_sec']:.2f} s)", extra={"client": True})
    acc = ("not evaluated" if math.isnan(row["test_accuracy"]) else
           f"acc {row['test_accuracy']:.2f}% loss {row['test_loss']:.4f}")
    log.info(f"Round {row['round']:3d}/{cfg.rounds} | {acc} | train loss "
             f"{row['train_loss']:.4f} | sent {100 * row['avg_transmitted_ratio']:.2f}% | "
             f"pruning {row['avg_pruning_ratio']:.2f} | uplink {row['uplink_bytes'] / MB:.2f} "
             f"MB | {row['wall_time_sec']:.1f} s (simulated {row['simulated_round_time_sec']:.1f}"
             f" s)")


def describe_partition(cfg: ExperimentConfig) -> pd.DataFrame:
    """Samples per class on each client, as the run will partition them."""
    return pd.DataFrame(_partition_rows(build_federation(cfg).counts)).set_index("client_id")
