"""The parallel engine (fl/round.py): whole client updates side by side, one torch thread each.
Its numbers are the sequential engine's on one thread, bit for bit, whatever the worker count."""

import threading

import pandas as pd
import pytest
import torch

from fedprune_core.fl import round as fl_round
from fedprune_core.fl.training import DivergenceError
from fedprune_core.run.federation import build_federation, cohort as round_cohort, initial_state
from fedprune_core.run.loop import run_experiment
from fedprune_core.run.summary import TIMING_COLUMNS

METHODS = {
    "hybrid": {},  # structured L1 + adaptive ratios + cost-weighted top-k + error feedback
    "unstructured_topk": dict(pruning_mode="unstructured", sparsify_method="topk",
                              adaptive_ratio=False),
    "qsgd_fedavgm_momentum": dict(pruning_mode="none", sparsify_method="qsgd",
                                  adaptive_ratio=False, aggregation="fedavgm", momentum=0.9)}


def _without_timing(run_dir, name: str) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / f"{name}.csv")
    return frame.drop(columns=list(TIMING_COLUMNS.get(name, ())))


@pytest.mark.parametrize("method", METHODS.values(), ids=METHODS.keys())
def test_two_workers_give_the_sequential_engines_numbers_on_one_thread(tiny_config, method):
    # 7 clients a round on 2 workers: a full window of 4 updates in flight, then an odd tail
    common = dict(rounds=2, num_clients=8, clients_per_round=7, **method)
    seq = run_experiment(tiny_config(run_name="seq", engine="sequential", num_threads=1,
                                     **common))
    par = run_experiment(tiny_config(run_name="par", engine="parallel", num_threads=2,
                                     **common))
    assert torch.get_num_threads() == 1  # the run's 2 threads are not left behind
    for name in ("metrics", "clients", "diagnostics"):
        pd.testing.assert_frame_equal(_without_timing(par.run_dir, name),
                                      _without_timing(seq.run_dir, name), check_exact=True)
    metrics = _without_timing(par.run_dir, "metrics")
    assert metrics.train_loss.iloc[1] < metrics.train_loss.iloc[0]  # they train: not vacuous
    clients = pd.read_csv(par.run_dir / "clients.csv")
    assert len(clients) == 2 * 7 and (clients.train_time_sec > 0).all()


def test_each_update_runs_on_a_worker_with_one_torch_thread(tiny_config, monkeypatch):
    fed = build_federation(tiny_config(num_clients=6, clients_per_round=6, engine="parallel"))
    seen, update = [], fl_round.local_update

    def recording(*args):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return update(*args)
    monkeypatch.setattr(fl_round, "local_update", recording)
    torch.set_num_threads(2)
    try:
        state, rows = fl_round.run_round(initial_state(fed), round_cohort(fed, 1), fed.setup)
        assert torch.get_num_threads() == 2  # restored after the round
    finally:
        torch.set_num_threads(1)
    assert [row["client_id"] for row in rows] == [s.client_id for s in round_cohort(fed, 1).clients]
    workers = {ident for ident, _ in seen}
    assert len(seen) == 6 and len(workers) == 2 and threading.get_ident() not in workers
    assert {threads for _, threads in seen} == {1}


def test_a_diverging_worker_names_the_round_and_the_client_and_restores_threads(tiny_config):
    fed = build_federation(tiny_config(lr=1e6, pruning_mode="none", sparsify_method="none",
                                       engine="parallel"))
    torch.set_num_threads(2)
    try:
        with pytest.raises(DivergenceError, match=r"round 1, client \d+: .* Lower lr"):
            fl_round.run_round(initial_state(fed), round_cohort(fed, 1), fed.setup)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
