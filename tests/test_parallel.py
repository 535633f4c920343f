"""The parallel engine (fl/round.py, the default): whole client updates side by side, one torch
thread each, and evaluation batches likewise. Its numbers are the sequential engine's on one
thread, bit for bit, whatever the worker count (fl/threads.py)."""

import threading

import pandas as pd
import pytest
import torch

from fedprune_core.fl import round as fl_round
from fedprune_core.fl.training import DivergenceError
from fedprune_core.run.federation import build_federation, cohort as round_cohort, initial_state
from fedprune_core.run.loop import run_experiment
from fedprune_core.run.summary import TIMING_COLUMNS

def _without_timing(run_dir, name: str) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / f"{name}.csv")
    return frame.drop(columns=list(TIMING_COLUMNS.get(name, ())))


def test_the_default_runs_numbers_do_not_depend_on_the_thread_count(tiny_config):
    """The default engine with 1, 2 and 3 workers, and the sequential engine on one thread:
    the same metrics, client rows, diagnostics and final model, bit for bit. 7 clients a round:
    a full window of updates in flight, then an odd tail."""
    common = dict(rounds=2, num_clients=8, clients_per_round=7, data_fraction=0.05,
                  test_samples=300)
    runs = [run_experiment(tiny_config(run_name=f"threads{n}", num_threads=n, **common))
            for n in (1, 2, 3)]
    runs.append(run_experiment(tiny_config(run_name="seq", engine="sequential", num_threads=1,
                                           **common)))
    assert torch.get_num_threads() == 1  # a run's threads are not left behind
    first = runs[0].run_dir
    for other in (r.run_dir for r in runs[1:]):
        for name in ("metrics", "clients", "diagnostics", "widths"):
            pd.testing.assert_frame_equal(_without_timing(other, name),
                                          _without_timing(first, name), check_exact=True)
        a, b = (torch.load(d / "final_model.pt")["state_dict"] for d in (first, other))
        assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = _without_timing(first, "metrics")
    assert metrics.train_loss.iloc[1] < metrics.train_loss.iloc[0]  # they train: not vacuous
    assert len(pd.read_csv(first / "widths.csv")) > 2  # sub-models evaluated too: not vacuous
    clients = pd.read_csv(first / "clients.csv")
    assert len(clients) == 2 * 7 and (clients.train_time_sec > 0).all()


def test_evaluation_gives_the_same_numbers_on_any_number_of_workers():
    from fedprune_core.data.catalog import DATASETS
    from fedprune_core.fl.evaluate import evaluate
    from helpers import SPEC, global_vector, random_data

    test = random_data(n=700, seed=3)
    results = [evaluate(global_vector(1), SPEC, test, DATASETS["mnist"], 64, workers)
               for workers in (1, 2, 3)]
    assert len({(r.accuracy, r.loss) for r in results}) == 1
    assert torch.get_num_threads() == 1


def test_each_update_runs_on_a_worker_with_one_torch_thread(tiny_config, monkeypatch):
    fed = build_federation(tiny_config(num_clients=6, clients_per_round=6, num_threads=2))
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
                                       num_threads=2))
    torch.set_num_threads(2)
    try:
        with pytest.raises(DivergenceError, match=r"round 1, client \d+: .* Lower lr"):
            fl_round.run_round(initial_state(fed), round_cohort(fed, 1), fed.setup)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
