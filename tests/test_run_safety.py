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

from fedprune_core.config import ExperimentConfig
from fedprune_core.fl.training import DivergenceError
from fedprune_core.run import guard, loop
from fedprune_core.run.loop import run_experiment

REPO = Path(__file__).resolve().parents[1]
TINY = ["--num_clients", "4", "--clients_per_round", "2", "--local_epochs", "1",
        "--data_fraction", "0.05", "--test_samples", "300", "--num_threads", "1",
        "--progress", "text"]


# No download can succeed, online or not: every URL goes to a closed local port.
OFFLINE = {**os.environ, **{k: "http://127.0.0.1:9" for k in (
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}, "no_proxy": "", "NO_PROXY": ""}


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "fedprune_core", *args], capture_output=True,
                          text=True, **kwargs)


def wait_for(check, process):
    """Until check() holds, for as long as `process` runs (no clock: a slow machine only takes
    longer); a process that ended first fails the test."""
    while not check():
        if process.poll() is not None and not check():
            raise AssertionError(f"the process ended (status {process.returncode}) first")
        time.sleep(0.1)


def test_a_second_process_cannot_touch_a_running_run_and_sigterm_is_logged(tmp_path):
    results = tmp_path / "results"
    run_dir = results / "busy"
    base = ["run", *TINY, "--results_dir", str(results), "--run_name", "busy"]
    first = subprocess.Popen([sys.executable, "-m", "fedprune_core", *base, "--rounds", "40"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run_dir / "checkpoint.pt").exists(), first)
        for extra in (["--overwrite", "--rounds", "2"], ["--resume", "--rounds", "40"]):
            second = cli(*base, *extra)
            assert second.returncode == 2, second.stderr
            assert f"{run_dir} is in use by another process (pid {first.pid})" in second.stderr
            assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first run was not disturbed
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate()
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
        # the data root is the user's input: one line naming it, exit 2, no traceback
        assert out.returncode == 2 and "could not be downloaded" in out.stderr, out.stderr
        assert out.stderr.startswith("error: data_root: ") and "Traceback" not in out.stderr
        assert "already" not in out.stderr
    assert not results.exists()  # the data is checked first: not even the results folder
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
    # resume reads the same definition: tests/test_checkpoint.py ("another experiment's")


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


# --- links: a run never writes through one -----------------------------------------------------

def test_run_files_are_never_written_through_a_link(tmp_path):
    """A link planted at a temporary file, the lock or run.log is refused, naming it; a link at
    a final name is replaced by the rename, not followed. The file it points to is unchanged."""
    from fedprune_core.run import artifacts

    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.csv.tmp").symlink_to(outside)
    with pytest.raises(artifacts.UnsafePathError, match="metrics.csv.tmp: a symbolic link"):
        artifacts.write_atomic(run_dir / "metrics.csv", "round\n1\n")
    with pytest.raises(artifacts.UnsafePathError, match="metrics.csv.tmp"):
        artifacts.save_atomic({"x": 1}, run_dir / "metrics.csv")
    (run_dir / "metrics.csv.tmp").unlink()
    (run_dir / "metrics.csv").symlink_to(outside)  # the final name: replaced, not followed
    artifacts.write_atomic(run_dir / "metrics.csv", "round\n1\n")
    assert not (run_dir / "metrics.csv").is_symlink()
    assert (run_dir / "metrics.csv").read_text() == "round\n1\n"
    (run_dir / "summary.json.tmp").write_text("stale")  # left by a killed writer: replaced
    artifacts.write_atomic(run_dir / "summary.json", "{}")
    assert not (run_dir / "summary.json.tmp").exists()
    (run_dir / "run.log").symlink_to(outside)
    with pytest.raises(artifacts.UnsafePathError, match="run.log: a symbolic link"):
        artifacts.open_log(run_dir, "links", console=False)
    (run_dir / guard.LOCK).symlink_to(outside)
    with pytest.raises(guard.UnsafeLockError, match=r"\.lock is a symbolic link"):
        guard.lock_run_dir(run_dir)
    with pytest.raises(guard.UnsafeLockError, match=r"\.lock is a symbolic link"):
        guard.probe_run_dir(run_dir)
    assert outside.read_text() == "keep me"


def test_run_log_is_opened_without_following_a_link(tmp_path):
    """Even a link that appears after the check (a race): O_NOFOLLOW refuses to open it."""
    from fedprune_core.run import artifacts

    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (tmp_path / "run.log").symlink_to(outside)
    with pytest.raises(OSError):
        artifacts._QuietFileHandler(tmp_path / "run.log", encoding="utf-8")
    assert outside.read_text() == "keep me"


# --- the notebook runner holds the run folder for its kernel -----------------------------------

def test_a_notebook_and_a_cli_run_never_share_a_folder(tmp_path, monkeypatch, capsys):
    """Both directions, with a lock held (no sleeping): the notebook runner is refused while a
    CLI run holds the folder, and writes no notebook there; while the runner executes, its
    kernel (a child that inherits guard.OWNER_ENV) is let in, a CLI run is refused."""
    import papermill

    from fedprune_core.cli import main
    from fedprune_core.run.artifacts import RunExistsError
    from fedprune_core.tools.notebook import execute_experiment

    results = tmp_path / "results"
    cfg = ExperimentConfig(rounds=1, num_clients=4, clients_per_round=2, data_fraction=0.05,
                           results_dir=str(results), run_name="shared", progress="off")
    run_dir = results / "shared"
    cli_run = guard.lock_run_dir(run_dir)  # what a CLI run holds while it works
    with pytest.raises(RunExistsError, match=f"in use by another process \\(pid {os.getpid()}"):
        execute_experiment(cfg)
    assert not (run_dir / "experiment.ipynb").exists()
    cli_run.release()

    seen = {}

    def kernel(notebook, out, **kwargs):  # what papermill does, with a kernel as a child
        seen["owner"] = os.environ.get(guard.OWNER_ENV)
        child = ("import os, sys; from pathlib import Path; from fedprune_core.run import guard\n"
                 "guard.lock_run_dir(Path(sys.argv[1])).release(); print('kernel let in')\n"
                 "del os.environ[guard.OWNER_ENV]\n"
                 "try:\n    guard.lock_run_dir(Path(sys.argv[1]))\n"
                 "except guard.RunLockedError:\n    print('without the variable: refused')\n")
        seen["child"] = subprocess.run([sys.executable, "-c", child, str(run_dir)],
                                       capture_output=True, text=True)
        seen["cli"] = main(["run", *TINY, "--rounds", "1", "--results_dir", str(results),
                            "--run_name", "shared"])
        Path(out).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", kernel)
    execute_experiment(cfg)
    assert seen["owner"] == str(os.getpid())
    assert seen["child"].stdout.split("\n")[:2] == ["kernel let in",
                                                    "without the variable: refused"], seen
    assert seen["cli"] == 2
    assert f"in use by another process (pid {os.getpid()})" in capsys.readouterr().err
    assert guard.OWNER_ENV not in os.environ
    assert sorted(p.name for p in run_dir.iterdir()) == ["experiment.ipynb"]  # lock released


def test_the_owner_variable_lets_in_only_a_descendant_of_the_holder(tmp_path, monkeypatch):
    lock = guard.lock_run_dir(tmp_path)
    try:
        monkeypatch.setenv(guard.OWNER_ENV, str(os.getpid()))  # this process is not its own child
        with pytest.raises(guard.RunLockedError):
            guard.lock_run_dir(tmp_path)
        assert os.getppid() in guard._ancestors() and os.getpid() not in guard._ancestors()
    finally:
        lock.release()


# --- a folder holding something of value is not taken over without --overwrite -----------------

def test_a_finished_run_without_summary_is_kept_and_overwrite_replaces_it(tiny_config, capsys):
    from fedprune_core.cli import main

    cfg = tiny_config(run_name="done", rounds=1, data_fraction=0.05)
    result = run_experiment(cfg)
    (result.run_dir / "summary.json").unlink()
    before = {p.name: p.read_bytes() for p in result.run_dir.iterdir()}
    args = ["run", *TINY, "--rounds", "1", "--results_dir", cfg.results_dir, "--run_name",
            "done"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds metrics.csv, final_model.pt, clients.csv" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in result.run_dir.iterdir()} == before
    assert main([*args, "--overwrite"]) == 0
    assert (result.run_dir / "summary.json").exists()


def test_summary_records_the_config_it_was_run_with(tmp_path):
    import hashlib

    from fedprune_core.run import artifacts

    (tmp_path / "config.json").write_text('{"rounds": 2}')
    artifacts.write_summary({"rounds_completed": 2}, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config_sha256"] == hashlib.sha256(b'{"rounds": 2}').hexdigest()
    assert not artifacts.config_edited(tmp_path)
    cfg = ExperimentConfig(rounds=2, results_dir=str(tmp_path))
    (tmp_path / "config.json").write_text(cfg.to_json(label=cfg.method_label))
    assert artifacts.config_edited(tmp_path)  # a batch or make run is told, not fooled
    assert "config.json was changed after the run" in artifacts.saved_differences(cfg, tmp_path)[0]


# --- Ctrl-C while the data loads ---------------------------------------------------------------

def test_ctrl_c_while_the_data_loads_is_one_line_and_leaves_nothing(tmp_path, monkeypatch,
                                                                    capsys):
    from fedprune_core import cli
    from fedprune_core.run import federation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(federation, "load_dataset", interrupted)
    results = tmp_path / "results"
    code = cli.main(["run", *TINY, "--rounds", "1", "--results_dir", str(results), "--run_name",
                     "x"])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines() == ["interrupted: stopped before a round finished; nothing "
                                        "to resume"]
    assert list(results.iterdir()) == []
    monkeypatch.setattr(cli, "config_from_args", interrupted)  # Ctrl-C before the run started
    assert cli.main(["notebook"]) == 130
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_sigterm_inside_torch_save_stops_the_run_as_sigterm(tmp_path, monkeypatch):
    """SIGTERM landing inside torch.save's zip writer made the writer fail on closing
    ("unexpected pos ..."), and that RuntimeError, not the SIGTERM, ended the run: exit 1 and a
    traceback instead of 143 and the logged stop (seen once under make test). The interrupt
    wins, and no temporary file is left."""
    from fedprune_core.run import artifacts
    from fedprune_core.run.guard import Terminated

    def interrupted_save(obj, f):
        f.write(b"half a checkpoint")
        try:
            raise Terminated(signal.SIGTERM)  # what guard's handler raises
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")

    import torch

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(Terminated):
        artifacts.save_atomic({"x": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []
