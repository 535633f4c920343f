"""Batches: grid expansion, the local and Dask back ends, kill-and-resume, a real SLURM array.

Runs are tiny (1 round, 4 clients, 5% of MNIST) but real: each goes through the experiment
notebook with papermill, in its own `run-one` process, as in a real batch.
"""

import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from fedprune_core.tools import batch
from fedprune_core.cli import main
from fedprune_core.config import ConfigError, ExperimentConfig
from fedprune_core.run.loop import run_experiment
from fedprune_core.run.summary import TIMING_COLUMNS

TINY = ("rounds: 1\nnum_clients: 4\nclients_per_round: 2\nlocal_epochs: 1\ndata_fraction: 0.05\n"
        "test_samples: 300\n")
TIMING = list(TIMING_COLUMNS["metrics"])


@pytest.fixture
def params(tmp_path):
    """Params files: shared tiny settings, a good run, an invalid value, an unknown key, and a
    run the test can make fail (through the FEDPRUNE_BATCH_FAIL hook)."""
    d = tmp_path / "params"
    d.mkdir()
    files = {"_tiny": TINY, "good": "extends: _tiny.yaml\n",
             "bad": "extends: _tiny.yaml\npruning_mode: diagonal\n",
             "typo": "extends: _tiny.yaml\nroundz: 3\n",
             "flaky": "extends: _tiny.yaml\nsparsify_method: topk\n"}
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(text)
    return {name: str(d / f"{name}.yaml") for name in files}


@pytest.fixture
def env(tmp_path):
    faults = tmp_path / "faults"
    faults.mkdir()
    return {**os.environ, batch.FAIL_ENV: str(faults)}


def cli(*args, env, cwd, **kwargs):
    return subprocess.run([sys.executable, "-m", "fedprune_core", "batch", *args], env=env,
                          cwd=cwd, capture_output=True, text=True, **kwargs)


def unit_lines(stderr: str) -> list[str]:
    """The lines a batch writes for its settled units (status.unit_line)."""
    return [line for line in stderr.splitlines() if re.match(r"  \w+_s\d+: ", line)]


def statuses(results, name):
    summary = json.loads((results / name / "batch.json").read_text())
    return {u["run_name"]: u for u in summary["units"]}


# --- the grid ---------------------------------------------------------------------------------

def test_set_values_are_yaml_and_unknown_keys_are_config_errors(capsys):
    assert batch.parse_sets(["rounds=5", "error_feedback=false", "lr=0.02", "label=a b"]) == \
        {"rounds": 5, "error_feedback": False, "lr": 0.02, "label": "a b"}
    with pytest.raises(ConfigError, match="roundz"):
        batch.parse_sets(["roundz=5"])
    with pytest.raises(ConfigError, match="rounds"):
        batch.parse_sets(["rounds=many"])
    assert main(["batch", "run", "--params", "x.yaml", "--set", "roundz=5"]) == 2
    assert "roundz" in capsys.readouterr().err


def test_grid_expansion(params, tmp_path):
    units = batch.expand_grid([params["_tiny"], params["good"], params["typo"]], [0, 3],
                              {"rounds": 2}, tmp_path, threads=1)
    assert [u["run_name"] for u in units] == ["good_s0", "good_s3", "typo_s0", "typo_s3"]
    good = units[1]["config"]
    assert (good["seed"], good["rounds"], good["num_threads"], good["resume"]) == (3, 2, 1, True)
    assert good["results_dir"] == str(tmp_path) and good["run_name"] == "good_s3"
    assert units[2]["config"] is None and "roundz" in units[2]["error"]
    # A user's num_threads wins over the share of the cores; the file's own seed is used.
    (tmp_path / "own.yaml").write_text("extends: params/_tiny.yaml\nseed: 7\nnum_threads: 2\n")
    own = batch.expand_grid([str(tmp_path / "own.yaml")], None, {}, tmp_path, threads=1)[0]
    assert own["run_name"] == "own_s7" and own["config"]["num_threads"] == 2
    with pytest.raises(ConfigError, match="good_s0"):  # two units, one folder
        batch.expand_grid([params["good"], params["good"]], [0], {}, tmp_path, 1)


def test_array_spec_and_sbatch_script(tmp_path):
    assert batch.array_spec([0, 1, 2, 3], 2) == "0-3%2"
    assert batch.array_spec([3, 7, 9], 4) == "3,7,9%4"
    assert batch.array_spec([0, 1, 2, 5, 7, 8], 1) == "0-2,5,7-8%1"
    grid = tmp_path / "results" / "abl" / "grid.jsonl"
    grid.parent.mkdir(parents=True)
    settings = {"jobs": 3, "time": "01:30:00", "partition": "short", "cpus": 4, "force": False}
    text = batch.write_sbatch(grid, [0, 1, 2, 3, 4], settings, "array.sbatch").read_text()
    assert "#SBATCH --array=0-4%3\n" in text
    assert f"#SBATCH --output={grid.parent}/slurm/logs/unit_%a.out\n" in text
    assert "#SBATCH --cpus-per-task=4\n#SBATCH --time=01:30:00\n#SBATCH --partition=short\n" in text
    assert (grid.parent / "slurm" / "logs").is_dir()
    assert f"cd {batch.REPO_ROOT}\n" in text
    assert (f"{sys.executable} -m fedprune_core batch run-one --grid {grid} --index "
            f'"$SLURM_ARRAY_TASK_ID"; }}\n') in text
    assert Path(sys.executable).is_absolute()


# --- local and Dask: failures reported, a flaky unit retried, finished units skipped -----------

@pytest.mark.parametrize("backend", ["local", "dask"])
def test_batch_reports_failures_retries_and_skips_finished(backend, params, env, tmp_path):
    (Path(env[batch.FAIL_ENV]) / "flaky_s0").touch()  # its first try fails
    results = tmp_path / "results"
    args = ["run", "--params", params["_tiny"], params["good"], params["bad"], params["typo"],
            params["flaky"], "--jobs", "2", "--backend", backend, "--results_dir", str(results),
            "--name", "b"]
    out = cli(*args, env=env, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert re.search(r"unit\s+run_name\s+status\s+seconds\s+tail acc \(%\)\s+uplink \(MB\)"
                     r"\s+error\s+log", out.stdout)
    # stderr is not a terminal: a line per unit as it settles, the batch's state after it
    lines = unit_lines(out.stderr)
    assert len(lines) == 4, out.stderr
    invalid = r"failed \(0\.0 s\): ConfigError: .* \| 0/4 done, 2 failed, 0 running, 2 queued " \
              r"\| rounds 0/2 \| ETA \?"
    assert re.fullmatch(rf"  bad_s0: {invalid}", lines[0]), lines
    assert re.fullmatch(rf"  typo_s0: {invalid}", lines[1]), lines
    first, last = sorted(lines[2:4], key=lambda line: "2/4 done" in line)
    running = "1 running, 0 queued" if backend == "local" else "[01] running, [01] queued"
    assert re.fullmatch(r"  (good|flaky)_s0: finished \([0-9.]+ s\) \| 1/4 done, 2 failed, "
                        rf"{running} \| rounds [12]/2 \| ETA [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}"
                        r"( \| (good|flaky)_s0 [01]/1)?", first), lines
    assert re.fullmatch(r"  (good|flaky)_s0: finished \([0-9.]+ s\) \| 2/4 done, 2 failed, "
                        r"0 running, 0 queued \| rounds 2/2 \| ETA 00:00:00", last), lines
    units = statuses(results, "b")
    assert {k: u["status"] for k, u in units.items()} == {
        "good_s0": "finished", "bad_s0": "failed", "typo_s0": "failed", "flaky_s0": "finished"}
    assert "pruning_mode" in units["bad_s0"]["error"] and "roundz" in units["typo_s0"]["error"]
    assert units["flaky_s0"]["attempt"] == 2
    assert "injected failure" in (results / "b" / "logs" / "flaky_s0.log").read_text()
    for name in ("good_s0", "flaky_s0"):  # a batch's runs live in its own folder
        assert (results / "b" / name / "summary.json").exists()
    if backend == "dask":  # skipping finished units is the unit's own (unit.py): once is enough
        return
    notebooks = {n: (results / "b" / n / "experiment.ipynb").stat().st_mtime_ns
                 for n in ("good_s0", "flaky_s0")}

    again = cli(*args, env=env, cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    units = statuses(results, "b")
    assert units["good_s0"]["status"] == units["flaky_s0"]["status"] == "skipped"
    settled = "| 2/4 done, 2 failed, 0 running, 0 queued | rounds 2/2 | ETA 00:00:00"
    lines = unit_lines(again.stderr)
    assert lines[0] == f"  good_s0: skipped (0.0 s) {settled}", lines
    assert lines[3] == f"  flaky_s0: skipped (0.0 s) {settled}", lines
    assert len(lines) == 4 and all(line.endswith(settled) for line in lines), lines
    assert units["bad_s0"]["status"] == "failed"
    assert notebooks == {n: (results / "b" / n / "experiment.ipynb").stat().st_mtime_ns
                         for n in notebooks}


def test_dask_killed_worker_is_that_units_failure(params, env, tmp_path):
    """A worker that dies mid-unit fails the unit with KilledWorker, and takes the unit's
    process with it (no orphan left writing the run folder)."""
    env = {**env, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedprune_core", "batch", "run", "--params", params["good"],
         "--backend", "dask", "--results_dir", str(results), "--name", "k"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    unit = _wait_for(lambda: next((p for p in psutil.Process(proc.pid).children(recursive=True)
                                   if "run-one" in p.cmdline()), None),
                     lambda: proc.poll() is None)
    unit.parent().send_signal(signal.SIGKILL)  # the Dask worker running it
    stdout, stderr = proc.communicate()
    assert proc.returncode == 1, stderr
    record = statuses(results, "k")["good_s0"]
    assert record["status"] == "failed" and record["error"].startswith("KilledWorker"), record
    psutil.wait_procs([unit])
    assert not unit.is_running()


def _wait_for(find, alive=lambda: True):
    """find()'s first true result, waiting for as long as `alive()` (no clock: a slow machine
    only takes longer); what `alive` watches ending first fails the test."""
    while True:
        try:
            found = find()
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # a process ended while we looked
            found = None
        if found:
            return found
        if not alive():
            raise AssertionError("what the test waited on ended first")
        time.sleep(0.05)


# --- a unit killed midway is redone to the same result -----------------------------------------

def test_killed_unit_resumes_to_the_same_metrics(params, env, tmp_path):
    results = tmp_path / "results"
    units = batch.expand_grid([params["good"]], [0], {"rounds": 3}, results, threads=1)
    grid = results / "kill" / "grid.jsonl"
    batch.write_grid(units, grid)
    run_dir = results / "good_s0"
    one = [sys.executable, "-m", "fedprune_core", "batch", "run-one", "--grid", str(grid),
           "--index", "0"]
    proc = subprocess.Popen(one, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL)
    _wait_for(lambda: (run_dir / "checkpoint.pt").exists(), lambda: proc.poll() is None)
    kernel = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(kernel)  # the kernel notices its parent is gone
    assert not (run_dir / "summary.json").exists()
    assert len(pd.read_csv(run_dir / "metrics.csv")) < 3

    assert subprocess.run(one, env=env, cwd=tmp_path, capture_output=True).returncode == 0
    record = batch.load_record(grid, 0)
    assert (record["status"], record["attempt"]) == ("finished", 2)
    assert "Resuming after round" in (run_dir / "run.log").read_text()
    reference = run_experiment(ExperimentConfig.from_dict(
        {**units[0]["config"], "run_name": "reference", "progress": "off"}))
    pd.testing.assert_frame_equal(
        pd.read_csv(run_dir / "metrics.csv").drop(columns=TIMING, errors="ignore"),
        pd.read_csv(reference.run_dir / "metrics.csv").drop(columns=TIMING, errors="ignore"))


# --- SLURM: a real single-node cluster when its binaries are installed -------------------------

SLURM_BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm(tmp_path_factory):
    """munged + slurmctld + slurmd from a private config (own ports, sockets, state): a
    one-node cluster that exists only for this test."""
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM binaries absent ({', '.join(missing)}): apt-get install slurm-wlm "
                    f"munge to run the SLURM back end for real")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir()
    subprocess.run(["mungekey", "--create", f"--keyfile={d}/munge.key"], check=True)
    subprocess.run(["munged", "-f", f"--key-file={d}/munge.key", f"--socket={d}/munge.sock",
                    f"--log-file={d}/log/munged.log", f"--pid-file={d}/munged.pid",
                    f"--seed-file={d}/munge.seed"], check=True)
    host, user = socket.gethostname().split(".")[0], getpass.getuser()
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=fedprunetest
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ReturnToService=2
MpiDefault=none
NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], env=env, check=True)
        _wait_for(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env,
                                                   capture_output=True, text=True).stdout,
                  lambda: _running(d / "slurmctld.pid") and _running(d / "slurmd.pid"))
        yield env
    finally:
        subprocess.run(["scancel", "-u", user], env=env, capture_output=True)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            try:
                os.kill(int((d / pid_file).read_text()), signal.SIGTERM)
            except (OSError, ValueError):  # it did not start, or has stopped
                pass


def _running(pid_file: Path) -> bool:
    """Is the daemon whose pid the file holds alive (a file not written yet: still starting)?"""
    try:
        return psutil.pid_exists(int(pid_file.read_text()))
    except (OSError, ValueError):
        return True


def _wait_for_job(job: str, env):
    _wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True,
                                     text=True).stdout.strip() == "")


def test_slurm_array_runs_and_resubmits_missing(slurm, params, tmp_path):
    env = {**slurm, batch.FAIL_ENV: str(tmp_path)}
    (tmp_path / "good_s1").write_text("2")  # fails the array task's try and retry
    results = tmp_path / "results"
    out = cli("run", "--params", params["good"], params["bad"], "--seeds", "0", "1",
              "--backend", "slurm", "--jobs", "2", "--slurm-cpus", "1", "--slurm-time",
              "00:10:00", "--results_dir", str(results), "--name", "s", env=env, cwd=tmp_path)
    assert out.returncode == 1, out.stderr  # the bad file's units are invalid
    script = (results / "s" / "slurm" / "array.sbatch").read_text()
    assert "#SBATCH --array=0-1%2\n" in script  # the invalid units 2, 3 are not submitted
    _wait_for_job(re.search(r"job array (\d+)", out.stdout).group(1), env)

    grid = str(results / "s" / "grid.jsonl")
    status = cli("status", "--grid", grid, env=env, cwd=tmp_path)
    assert status.returncode == 1
    rows = {line.split()[1]: line.split()[2] for line in status.stdout.splitlines()[1:5]}
    assert rows == {"good_s0": "finished", "good_s1": "not", "bad_s0": "invalid",
                    "bad_s1": "invalid"}, status.stdout
    assert "finished" in (results / "s" / "slurm" / "logs" / "unit_0.out").read_text()
    assert {k: u["status"] for k, u in statuses(results, "s").items()} == {
        "good_s0": "finished", "good_s1": "failed", "bad_s0": "failed", "bad_s1": "failed"}
    assert "injected failure" in statuses(results, "s")["good_s1"]["error"]

    again = cli("resubmit-missing", "--grid", grid, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "#SBATCH --array=1%2\n" in (results / "s" / "slurm" / "resubmit.sbatch").read_text()
    _wait_for_job(re.search(r"job array (\d+)", again.stdout).group(1), env)
    assert (results / "s" / "good_s1" / "summary.json").exists()
    assert batch.load_record(Path(grid), 1)["attempt"] == 3
    assert cli("status", "--grid", grid, env=env, cwd=tmp_path).returncode == 1  # bad_s*
    assert statuses(results, "s")["good_s1"]["status"] == "finished"
    assert "nothing to resubmit" in cli("resubmit-missing", "--grid", grid, env=env,
                                        cwd=tmp_path).stdout


# --- one batch a name: a lock while it runs, one grid a name -----------------------------------

def test_a_second_batch_of_the_same_name_stops_at_once_naming_the_first(params, tmp_path,
                                                                        capsys):
    """A local (or Dask) batch holds its folder's lock while it runs: a second one with the
    same --name exits 2 naming the holder's pid, and rewrites nothing."""
    from fedprune_core.run import guard

    results = tmp_path / "results"
    first = guard.lock_run_dir(results / "b")  # what the running batch holds
    try:
        code = main(["batch", "run", "--params", params["good"], "--results_dir", str(results),
                     "--name", "b"])
    finally:
        first.release()
    err = capsys.readouterr().err
    assert code == 2 and f"in use by another process (pid {os.getpid()})" in err, err
    assert "--name" in err.strip().splitlines()[-1]
    assert not (results / "b" / "grid.jsonl").exists()


def test_a_batch_name_holds_one_grid(params, tmp_path, monkeypatch, capsys):
    """The same grid is reused (a rerun resumes it); another grid under the name is refused
    without --force, so the units of a queued SLURM array never change under it. SLURM values
    that are good give the script as before."""
    from fedprune_core.tools.batch import slurm

    monkeypatch.setattr(slurm, "submit", lambda grid, script: 0)
    results = tmp_path / "results"
    args = ["batch", "run", "--params", params["good"], "--backend", "slurm", "--results_dir",
            str(results), "--name", "s", "--slurm-time", "1-02:30", "--slurm-partition",
            "short,long", "--slurm-cpus", "2", "--jobs", "3"]
    assert main(args) == 0
    grid = results / "s" / "grid.jsonl"
    script = (results / "s" / "slurm" / "array.sbatch").read_text()
    assert ("#SBATCH --array=0%3\n"
            f"#SBATCH --output={grid.parent}/slurm/logs/unit_%a.out\n"
            "#SBATCH --cpus-per-task=2\n#SBATCH --time=1-02:30\n"
            "#SBATCH --partition=short,long\n") in script
    written = grid.read_text()
    (results / "s" / "units").mkdir()
    (results / "s" / "units" / "9.json").write_text("{}")
    assert main(args) == 0  # the same grid: reused, its records kept
    assert grid.read_text() == written and (results / "s" / "units" / "9.json").exists()
    capsys.readouterr()
    other = [*args, "--set", "rounds=3"]  # the same run with other parameters
    assert main(other) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: --name: {grid} holds the same runs with other "
                          f"parameters"), err
    assert grid.read_text() == written
    # more seeds extend the grid: the old unit keeps its index (and its record), the new follows
    assert main([*args, "--seeds", "1", "0"]) == 0
    assert [(u["index"], u["run_name"]) for u in batch.read_grid(grid)] == [
        (0, "good_s0"), (1, "good_s1")]
    assert (results / "s" / "units" / "9.json").exists()
    assert main([*other, "--force"]) == 0
    assert len(batch.read_grid(grid)) == 1 and not (results / "s" / "units" / "9.json").exists()


def test_status_of_a_batch_with_damaged_records_is_a_note(params, tmp_path, capsys):
    results = tmp_path / "results"
    units = batch.expand_grid([params["good"], params["bad"]], [0], {}, results, threads=1)
    grid = results / "d" / "grid.jsonl"
    batch.write_grid(units, grid)
    (grid.parent / "units").mkdir()
    (grid.parent / "units" / "0.json").write_text("garbage")
    (grid.parent / "units" / "1.json").write_text('{"status": 3}')
    assert main(["batch", "status", "--grid", str(grid)]) == 1  # bad_s0 is invalid
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err.count("is not a unit record") == 2, err
    assert re.search(r"good_s0\s+not started", out) and re.search(r"bad_s0\s+invalid", out)
    assert batch.load_record(grid, 0) is None
