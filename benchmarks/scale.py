"""The scale figures of `make bench`, from whole experiments run in fresh processes.

- Floor: an experiment's end-to-end wall time against its compute floor, i.e. its clients'
  training FLOPs at the machine's measured ceiling (the faster of a large matmul and a large
  convolution) plus one 10k-image evaluation per evaluated round, and where the time went,
  from the run's own CSVs: training, the rest of the client updates (decode, selection, error
  feedback, encode, copies), evaluation, diagnostics, checkpoints (the checkpoint file and the
  client store's commit), everything else (data loading, the server's decode and aggregation,
  CSVs, figures).
- Checkpoints and memory: federations of 20, 1,000 and 10,000 clients with error feedback; the
  checkpoint's bytes and seconds per round (they grow with the clients per round, not with all
  clients) and each process's peak resident memory.

The checkpoint is timed by wrapping the two functions the loop calls (run.artifacts.save_atomic
and fl.store.ClientStates.commit) inside the worker process; nothing else is changed.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from common import in_process, peak_rss_mb


def _experiment_worker(cfg_dict: dict, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    from fedprune_core.config import ExperimentConfig
    from fedprune_core.fl.store import ClientStates
    from fedprune_core.run import artifacts
    from fedprune_core.run.loop import run_experiment

    saves, commits = [], []
    save, commit = artifacts.save_atomic, ClientStates.commit

    def timed_save(obj, path):
        start = time.perf_counter()
        save(obj, path)
        if path.name == artifacts.CHECKPOINT:
            saves.append({"sec": time.perf_counter() - start, "bytes": path.stat().st_size})

    def timed_commit(self):
        start = time.perf_counter()
        out = commit(self)
        commits.append({"sec": time.perf_counter() - start,
                        "bytes": sum(4 * t.numel() for t in self.overlay.values())})
        return out

    artifacts.save_atomic, ClientStates.commit = timed_save, timed_commit
    cfg = ExperimentConfig.from_dict(cfg_dict)
    after_imports = peak_rss_mb()
    start = time.perf_counter()
    result = run_experiment(cfg)
    queue.put({"wall_sec": time.perf_counter() - start, "engine": cfg.engine,
               "summary": result.summary,
               "metrics": result.metrics.to_dict("list"),
               "clients": result.clients.to_dict("list"), "checkpoints": saves,
               "commits": commits[:len(saves)],  # the last round's; a resume would add one
               "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": after_imports})


def run_experiment(cfg, threads: int) -> dict:
    """`cfg` end to end in a fresh process: its numbers and its timings."""
    return in_process(_experiment_worker, (cfg.to_dict(), threads),
                      f"experiment {cfg.run_name}")


def split(run: dict) -> dict:
    """Where an experiment's wall time went (seconds). On the parallel engine clients overlap,
    so their own times add up to more than the time they took: there the updates are not split
    from the rest."""
    metrics, clients = pd.DataFrame(run["metrics"]), pd.DataFrame(run["clients"])
    parts = {} if run["engine"] == "parallel" else {
        "training": clients.train_time_sec.sum(),
        "update_rest": (clients.update_time_sec - clients.train_time_sec).sum()}
    parts |= {"evaluation": metrics.eval_time_sec.sum(),
              "diagnostics": metrics.diagnostic_time_sec.sum(),
              "checkpoint": sum(c["sec"] for c in run["checkpoints"] + run["commits"])}
    parts["other"] = run["wall_sec"] - sum(parts.values())
    return {k: float(v) for k, v in parts.items()}


def floor(run: dict, ceiling_gflops: float, eval_10k_sec: float,
          full_training_gflops: float) -> dict:
    """The compute floor of `run` and its wall time over that floor; also over a practical
    floor, with training at the full model's measured training speed instead of the ceiling."""
    evaluations = int(pd.Series(run["metrics"]["test_accuracy"]).notna().sum())
    gflops = run["summary"]["total_client_train_gflops"]
    train_floor = gflops / ceiling_gflops
    floor_sec = train_floor + evaluations * eval_10k_sec
    practical = gflops / full_training_gflops + evaluations * eval_10k_sec
    seconds = split(run)
    return {"wall_sec": run["wall_sec"], "floor_sec": floor_sec,
            "train_floor_sec": train_floor, "evaluations": evaluations,
            "over_floor_x": run["wall_sec"] / floor_sec,
            "practical_floor_sec": practical, "over_practical_floor_x": run["wall_sec"] / practical,
            "train_gflops": gflops,
            "train_gflops_per_sec": (gflops / seconds["training"] if "training" in seconds
                                     else None),
            "tail_accuracy_pct": run["summary"]["tail_test_accuracy"],
            "peak_rss_mb": run["peak_rss_mb"], "split_sec": seconds}


def checkpoint_figures(run: dict) -> dict:
    """Per round (mean over the run's rounds): checkpoint file bytes and seconds, the client
    store's commit bytes and seconds; and the process's peak memory."""
    saves, commits = run["checkpoints"], run["commits"]
    mean = lambda rows, key: sum(r[key] for r in rows) / max(len(rows), 1)  # noqa: E731
    return {"rounds": len(saves), "wall_sec": run["wall_sec"],
            "checkpoint_mb_per_round": mean(saves, "bytes") / 1e6,
            "checkpoint_sec_per_round": mean(saves, "sec"),
            "store_commit_mb_per_round": mean(commits, "bytes") / 1e6,
            "store_commit_sec_per_round": mean(commits, "sec"),
            "peak_rss_mb": run["peak_rss_mb"],
            "rss_after_imports_mb": run["rss_after_imports_mb"]}
