"""A run folder is safe: one process at a time (an OS lock that dies with its holder), SIGTERM
logged like Ctrl-C, no stub left by a run that never started, and a finished run never passed
off as one with other parameters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fedprune_core.config import ConfigError, ExperimentConfig
from fedprune_core.fl.training import DivergenceError
from fedprune_core.run import guard, loop
from fedprune_core.run.loop import run_experiment

REPO = Path(__file__).resolve().parents[1]
TINY = ["--num_clients", "4", "--clients_per_round", "2", "--local_epochs", "1",
        "--data_fraction", "0.05", "--num_threads", "1", "--progress", "text"]


# No download can succeed, online or not: every URL goes to a closed local port.
OFFLINE = {**os.environ, **{k: "http://127.0.0.1:9" for k in (
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}, "no_proxy": "", "NO_PROXY": ""}


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "fedprune_core", *args], capture_output=True,
                          text=True, timeout=300, **kwargs)


def wait_for(check, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_a_second_process_cannot_touch_a_running_run_and_sigterm_is_logged(tmp_path):
    results = tmp_path / "results"
    run_dir = results / "busy"
    base = ["run", *TINY, "--results_dir", str(results), "--run_name", "busy"]
    first = subprocess.Popen([sys.executable, "-m", "fedprune_core", *base, "--rounds", "40"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run_dir / "checkpoint.pt").exists())
        for extra in (["--overwrite", "--rounds", "2"], ["--resume", "--rounds", "40"]):
            second = cli(*base, *extra)
            assert second.returncode == 2, second.stderr
            assert f"{run_dir} is in use by another process (pid {first.pid})" in second.stderr
            assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first run was not disturbed
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    log = (run_dir / "run.log").read_text()
    assert "Terminated (SIGTERM). The checkpoint of the last finished round is kept" in log
    assert log.count("FedPrune-Sparse run 'busy'") == 1  # no second writer in the log
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "summary.json").exists()
    guard.lock_run_dir(run_dir).release()  # the lock died with its holder


def test_the_lock_dies_with_a_killed_holder(tmp_path):
    code = ("import sys, time; from pathlib import Path; from fedprune_core.run import guard; "
            "guard.lock_run_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r")],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(guard.RunLockedError, match=f"pid {holder.pid}"):
        guard.lock_run_dir(tmp_path / "r")
    with pytest.raises(guard.RunLockedError, match=f"pid {holder.pid}"):
        guard.probe_run_dir(tmp_path / "r")
    holder.kill()
    holder.wait()
    guard.lock_run_dir(tmp_path / "r").release()
    assert not (tmp_path / "r" / guard.LOCK).exists()


def test_a_run_whose_setup_fails_leaves_nothing_behind(tmp_path):
    results, data_root = tmp_path / "results", tmp_path / "typo" / "data"
    for _ in range(2):  # the rerun is not blocked by a stub of the first
        out = cli("run", *TINY, "--rounds", "1", "--results_dir", str(results), "--run_name",
                  "r", "--data_root", str(data_root), env=OFFLINE)
        assert out.returncode == 1 and "could not be downloaded" in out.stderr, out.stderr
        assert "already" not in out.stderr
    assert list(results.iterdir()) == []  # no run folder
    assert not (tmp_path / "typo").exists()  # no MNIST/raw in the mistyped data root


def test_a_folder_without_checkpoint_is_taken_over_by_a_plain_rerun(tiny_config):
    cfg = tiny_config(run_name="stub", rounds=1)
    stub = Path(cfg.results_dir) / "stub"
    stub.mkdir(parents=True)
    (stub / "run.log").write_text("a run killed while loading its data\n")
    (stub / "config.json").write_text("{}")
    result = run_experiment(cfg)
    assert result.summary["rounds_completed"] == 1
    assert "killed while loading" not in (stub / "run.log").read_text()


def test_divergence_of_the_global_model_names_lr(tiny_config, monkeypatch):
    def diverge(*args):
        raise DivergenceError("round 1: the global model has NaN/inf weights")

    monkeypatch.setattr(loop, "_run", diverge)
    with pytest.raises(DivergenceError, match=r"Lower lr \(now 0.01\) or server_lr"):
        run_experiment(tiny_config(run_name="nan"))


def _finished(results: Path, cfg: ExperimentConfig) -> Path:
    """A finished run folder as far as the notebook runner looks: config.json + summary.json."""
    run_dir = results / cfg.run_name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(cfg.to_json(label=cfg.method_label))
    (run_dir / "summary.json").write_text(json.dumps({"run_name": cfg.run_name}))
    return run_dir


def test_make_run_with_other_parameters_does_not_skip_silently(tmp_path):
    results = tmp_path / "results"
    smoke = ExperimentConfig.from_yaml(REPO / "params" / "smoke.yaml",
                                       overrides={"results_dir": str(results)})
    run_dir = _finished(results, smoke)
    before = (run_dir / "config.json").read_text()
    out = cli("notebook", "--params", str(REPO / "params" / "smoke.yaml"), "--results_dir",
              str(results), "--rounds", "5", "--local_epochs", "3")
    assert out.returncode == 2, out.stderr
    assert "run_name:" in out.stderr and "rounds=2 (now 5)" in out.stderr
    assert "local_epochs=1 (now 3)" in out.stderr and "FORCE=1" in out.stderr
    assert "Traceback" not in out.stderr
    assert (run_dir / "config.json").read_text() == before
    same = cli("notebook", "--params", str(REPO / "params" / "smoke.yaml"), "--results_dir",
               str(results))
    assert same.returncode == 0 and "already finished with these parameters" in same.stdout
    dry = subprocess.run(["make", "-n", "run", "FORCE=1", "ARGS=--rounds 5"], cwd=REPO,
                         capture_output=True, text=True)
    assert "--rounds 5" in dry.stdout and "--overwrite" in dry.stdout


def test_resume_and_batches_use_the_one_definition_of_the_same_experiment(tmp_path):
    from fedprune_core.config import experiment_differences, experiment_params
    from fedprune_core.tools import batch

    cfg = ExperimentConfig(rounds=3, results_dir=str(tmp_path))
    saved = json.loads(cfg.to_json(label=cfg.method_label, _meta={}))
    assert "seed" not in experiment_params(cfg) and "results_dir" not in experiment_params(cfg)
    assert experiment_params(saved) == experiment_params(cfg)
    assert experiment_differences(saved, cfg.replace(num_threads=2, progress="off")) == []
    assert experiment_differences(saved, cfg.replace(seed=1)) == ["seed=0 (now 1)"]
    assert experiment_differences(saved, cfg.replace(seed=1), with_seed=False) == []
    # An older config.json without a newer field counts it at its default.
    del saved["eval_batch_size"]
    assert experiment_differences(saved, cfg) == []
    (tmp_path / "p.yaml").write_text("rounds: 3\n")
    unit = batch.expand_grid([str(tmp_path / "p.yaml")], [0], {"data_fraction": 0.5}, tmp_path,
                             threads=1)[0]
    _finished(tmp_path, cfg.replace(run_name="p_s0"))
    assert "data_fraction=1.0 (now 0.5)" in batch.other_parameters(unit)
    with pytest.raises(ConfigError, match="resume: .* data_fraction=1.0 \\(now 0.5\\)"):
        from fedprune_core.run.artifacts import _check_same_experiment
        _check_same_experiment(ExperimentConfig.from_dict(unit["config"]),
                               cfg.science_dict(), tmp_path)


def test_partition_figure_ticks_whole_client_ids():
    import numpy as np

    from fedprune_core.run.plots import partition_plot

    for n, step in ((4, 1), (7, 1), (100, 3)):
        ax = partition_plot(np.ones((n, 10), dtype=int)).axes[0]
        assert list(ax.get_xticks()) == list(range(0, n, step))


def test_metrics_are_those_of_a_run_that_was_never_disturbed(tiny_config):
    """The lock and signal handling change nothing in the numbers."""
    a = run_experiment(tiny_config(run_name="a"))
    assert len(pd.read_csv(a.run_dir / "metrics.csv")) == 2
    assert not (a.run_dir / guard.LOCK).exists()  # released, and removed, at the end
