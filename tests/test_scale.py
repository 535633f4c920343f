"""Cross-device scale: client state in a store outside memory, checkpoints of only what
changed, and a kill at the worst moment (half the store written) resuming exactly."""

import os
import subprocess
import sys
import textwrap

import pandas as pd
import torch

from fedprune_core.fl.store import ClientStates, FileStore, MemoryStore
from fedprune_core.fl.state import ClientState
from fedprune_core.run.loop import run_experiment
from fedprune_core.run.summary import TIMING_COLUMNS

TIMING = list(TIMING_COLUMNS["metrics"])


def test_file_store_round_trip_is_exact_and_sparse(tmp_path):
    store = FileStore(tmp_path / "s.f32", num_clients=1000, size=10_000)
    assert (tmp_path / "s.f32").stat().st_size == 4 * 1000 * 10_000
    assert (tmp_path / "s.f32").stat().st_blocks * 512 < 1e6  # nothing written: no disk used
    x = torch.randn(10_000)
    store.write({7: x, 999: -x})
    assert torch.equal(store.read(7), x) and torch.equal(store.read(999), -x)
    assert torch.equal(store.read(8), torch.zeros(10_000))


def test_client_states_overlay_commit_and_replay():
    view = ClientStates((0.1, 0.2, 0.3), MemoryStore())
    assert view[1] == ClientState(0.2, None)
    changed = view.replace({1: ClientState(0.25, torch.ones(4))})
    assert view[1].ratio == 0.2 and changed[1].ratio == 0.25  # the old view is unchanged
    assert set(changed.overlay) == {1} and changed.committed == {}
    committed = changed.commit()
    assert committed.overlay == {} and torch.equal(committed[1].residual, torch.ones(4))
    assert set(committed.committed) == {1}  # its checksum, checked on every read
    assert torch.equal(changed.commit()[1].residual, torch.ones(4))  # replay is idempotent


def test_thousand_clients_checkpoint_grows_with_the_cohort(tiny_config):
    cfg = tiny_config(run_name="crowd", num_clients=1000, clients_per_round=20,
                      data_fraction=0.05, rounds=2, test_samples=200)

    checkpoints = []

    def look(r, row):
        ckpt = result_dir / "checkpoint.pt"
        state = torch.load(ckpt, weights_only=True)["state"]
        checkpoints.append((ckpt.stat().st_size, set(state["clients"]["overlay"]),
                            (result_dir / "client_states.f32").stat().st_blocks * 512))

    result_dir = __import__("pathlib").Path(cfg.results_dir) / "crowd"
    result = run_experiment(cfg, on_round_end=look)
    model_bytes = 4 * 824_458
    for size, changed, on_disk in checkpoints:
        assert len(changed) == 20  # the cohort's residuals, not 1000 clients'
        assert size < 30 * model_bytes  # ~20 residuals + the global state, not 1000 residuals
    assert checkpoints[1][2] <= 41 * model_bytes  # the store holds only rows written
    assert len(result.clients) == 40
    assert not (result_dir / "client_states.f32").exists()  # a finished run drops it


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from fedprune_core.config import ExperimentConfig
    from fedprune_core.fl import store
    from fedprune_core.run.loop import run_experiment

    write, calls = store.FileStore.write, []

    def half_then_die(self, updates):
        calls.append(1)
        if len(calls) == 2:  # round 2: checkpoint written, store half updated, then killed
            first = dict(list(sorted(updates.items()))[:1])
            write(self, first)
            os.kill(os.getpid(), signal.SIGKILL)
        write(self, updates)

    store.FileStore.write = half_then_die
    run_experiment(ExperimentConfig(**eval(sys.argv[1])))
""")


def test_kill_between_checkpoint_and_store_resumes_bit_identical(tiny_config, tmp_path):
    full = run_experiment(tiny_config(run_name="full", rounds=3, sparsify_method="topk"))
    cfg = tiny_config(run_name="killed", rounds=3, sparsify_method="topk")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, repr(cfg.to_dict())], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    run_dir = full.run_dir.parent / "killed"
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "summary.json").exists()
    run_experiment(cfg.replace(resume=True))
    pd.testing.assert_frame_equal(
        pd.read_csv(full.run_dir / "metrics.csv").drop(columns=TIMING),
        pd.read_csv(run_dir / "metrics.csv").drop(columns=TIMING))
