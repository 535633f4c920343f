"""What a batch shows while it runs (tools/batch/status.py): the exact lines, from fake unit
states, records and metrics.csv files with a fake clock; no run, no timing."""

import io
import json
import os
from pathlib import Path

import pytest

from fedprune_core.cli import main
from fedprune_core.tools import batch
from fedprune_core.tools.batch.grid import new_record, run_dir
from fedprune_core.tools.batch.status import CLEAR, BatchStatus, follow


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def screen(text: str) -> list[str]:
    """What a terminal shows of `text`: each line as its last carriage return left it."""
    return [line.split("\r")[-1].replace(CLEAR, "") for line in text.split("\n")]


def fake_units(tmp_path, rounds=(3, 3, 3), invalid=1) -> list[dict]:
    results = tmp_path / "results" / "abl"
    units = [{"index": i, "run_name": f"{name}_s0", "params": f"{name}.yaml", "seed": 0,
              "config": {"rounds": r, "results_dir": str(results)}, "error": None}
             for i, (name, r) in enumerate(zip("abc", rounds))]
    units += [{"index": len(units) + k, "run_name": f"bad{k}_s0", "params": "bad.yaml",
               "seed": 0, "config": None, "error": "ConfigError: rounds: -1"}
              for k in range(invalid)]
    return units


def rounds_done(unit: dict, seconds: list[float], at: float) -> None:
    """The unit's metrics.csv after len(seconds) rounds of these wall times, written at `at`."""
    path = Path(unit["config"]["results_dir"]) / unit["run_name"] / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("round,test_accuracy,wall_time_sec\n" + "".join(
        f"{r + 1},90.0,{s}\n" for r, s in enumerate(seconds)))
    os.utime(path, (at, at))


def record(unit: dict, status: str, seconds=0.0, error=None) -> dict:
    return {"unit": unit["index"], "run_name": unit["run_name"], "status": status,
            "seconds": seconds, "error": error}


@pytest.fixture(autouse=True)
def terminal_env(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")


def test_a_log_gets_a_line_per_settled_unit_with_counts_rounds_and_eta(tmp_path):
    """Not a terminal: nothing is redrawn, each settled unit gets one line with the batch's
    state after it. 3 units of 3 rounds, 2 slots; the ETA spreads the rounds left, at the mean
    seconds per round so far, over the slots."""
    a, b, c, bad = units = fake_units(tmp_path)
    out, clock = io.StringIO(), Clock(100.0)
    status = BatchStatus(tmp_path / "grid.jsonl", units, 2, "abl", stream=out, clock=clock)
    status.settle_all([record(bad, "failed", error=bad["error"])])
    status.start(0), status.start(1)
    status.poll()  # no round done: no ETA yet
    assert status.text() == ("0/4 done, 1 failed, 2 running, 1 queued | rounds 0/9 | ETA ? | "
                             "a_s0 0/3, b_s0 0/3")
    rounds_done(a, [10, 10], at=120)
    rounds_done(b, [10], at=110)
    clock.now = 125.0
    status.poll()
    # 10 s a round; a: 1 left, 5 s into it (5 s); b: 2 left, 15 s into one, held at one (10 s);
    # c waits for a's slot: 5 + 30 s
    assert status.text() == ("0/4 done, 1 failed, 2 running, 1 queued | rounds 3/9 | "
                             "ETA 00:00:35 | a_s0 2/3, b_s0 1/3")
    assert out.getvalue().count("\n") == 1  # polls write nothing to a log

    rounds_done(a, [10, 10, 10], at=130)
    clock.now = 134.0
    status.start(2)  # the pool gives a's slot to c as a settles
    status.settle(record(a, "finished", 34.0))
    # a spent 34 - 30 s outside its rounds: c, just started, has as much ahead of it too:
    # 4 + 3 rounds of 10 s (b: 2 rounds left, held at one)
    rounds_done(b, [10, 20, 15], at=150)
    rounds_done(c, [5, 5, 5], at=150)
    clock.now = 155.0
    status.settle(record(b, "finished", 55.0))
    status.settle(record(c, "failed", 21.0, "RuntimeError: out of memory\nmore lines"))
    assert out.getvalue().splitlines() == [
        "  bad0_s0: failed (0.0 s): ConfigError: rounds: -1 | 0/4 done, 1 failed, 0 running, "
        "3 queued | rounds 0/9 | ETA ?",
        "  a_s0: finished (34.0 s) | 1/4 done, 1 failed, 2 running, 0 queued | rounds 4/9 | "
        "ETA 00:00:34 | b_s0 1/3, c_s0 0/3",
        "  b_s0: finished (55.0 s) | 2/4 done, 1 failed, 1 running, 0 queued | rounds 9/9 | "
        "ETA 00:00:00 | c_s0 3/3",
        "  c_s0: failed (21.0 s): RuntimeError: out of memory | 2/4 done, 2 failed, 0 running, "
        "0 queued | rounds 6/6 | ETA 00:00:00"]
    status.close()
    assert out.getvalue().count("\n") == 4


def test_the_eta_counts_down_between_rounds_and_a_slow_round_holds_it(tmp_path):
    a, = units = fake_units(tmp_path, rounds=(4,), invalid=0)
    clock = Clock(0.0)
    status = BatchStatus(tmp_path / "grid.jsonl", units, 1, "abl", stream=io.StringIO(),
                         clock=clock)
    status.start(0)
    rounds_done(a, [10], at=10)
    seen = []
    for now in (10, 11, 12, 15, 20, 25, 40):  # round 2 is late: it took 30 s
        clock.now = now
        status.poll()
        seen.append(status.eta(now))
    assert seen == [30, 29, 28, 25, 20, 20, 20]
    rounds_done(a, [10, 30], at=40)
    status.poll()
    assert status.eta(40) == 40  # the running mean, 20 s a round, for the 2 rounds left
    assert status.eta(45) == 35
    resumed = BatchStatus(tmp_path / "grid.jsonl", units, 1, "abl", stream=io.StringIO(),
                          clock=clock)
    assert resumed.text(45) == "0/1 done, 0 failed, 0 running, 1 queued | rounds 2/4 | ETA " \
                               "00:00:40"  # a resumed unit's rounds are done already


def test_the_eta_holds_the_time_a_try_spends_outside_its_rounds(tmp_path):
    """a, 2 rounds of 10 s, settles 25 s after it started, 5 s after its last round: b, after
    it, has 5 s of start-up and closing ahead of its rounds, then its closing after them."""
    a, b = units = fake_units(tmp_path, rounds=(2, 2), invalid=0)
    clock = Clock(0.0)
    status = BatchStatus(tmp_path / "grid.jsonl", units, 1, "abl", stream=io.StringIO(),
                         clock=clock)
    status.start(0)
    rounds_done(a, [10, 10], at=20)
    clock.now = 25.0
    status.start(1)
    status.settle(record(a, "finished", 25.0))
    seen = []
    for now, rounds in ((25, []), (30, []), (38, [10]), (40, [10]), (48, [10, 10]),
                        (50, [10, 10]), (60, [10, 10])):
        if rounds:
            rounds_done(b, rounds, at=max(38, 10 * len(rounds) + 28))
        clock.now = now
        status.poll()
        seen.append(status.eta(now))
    assert seen == [25, 20, 15, 13, 5, 3, 0]


def test_a_terminal_gets_one_live_line_redrawn_in_place(tmp_path):
    """On a terminal: the line is redrawn in place (carriage return, erase to the end), cut
    to the terminal's width; settled units are written above it; it stays at the end."""
    a, b, c, _ = units = fake_units(tmp_path, invalid=1)
    out, clock = Terminal(), Clock(100.0)
    status = BatchStatus(tmp_path / "grid.jsonl", units[:3], 1, "abl", stream=out,
                         clock=clock, width=100)
    status.start(0)
    rounds_done(a, [10], at=110)
    clock.now = 112.0
    status.poll()
    live = ("abl 00:00:12 | 0/3 done, 0 failed, 1 running, 2 queued | rounds 1/9 | "
            "ETA 00:01:18 | a_s0 1/3")
    assert out.getvalue() == f"\r{live}{CLEAR}"
    status.width = 40
    status.poll()
    assert screen(out.getvalue()) == ["abl 00:00:12 | 0/3 done, 0 failed, 1..."]

    status.width = 100
    rounds_done(a, [10, 10, 10], at=130)
    clock.now = 131.0
    status.start(1)
    status.settle(record(a, "finished", 31.0))
    clock.now = 140.0
    status.poll()
    status.close()
    assert screen(out.getvalue()) == [
        "  a_s0: finished (31.0 s)",
        "abl 00:00:40 | 1/3 done, 0 failed, 1 running, 1 queued | rounds 3/9 | ETA 00:00:53 | "
        "b_s0 0/3", ""]
    status.close()  # once only
    assert out.getvalue().count("\n") == 2


def test_dask_finds_the_running_units_from_their_records(tmp_path):
    """A unit runs once its record says a try began in this batch: a record left `running`
    by an earlier, killed batch does not count."""
    grid = tmp_path / "results" / "abl" / "grid.jsonl"
    a, b, c, _ = units = fake_units(tmp_path, invalid=1)
    batch.save_record(grid, new_record(grid, a, "running", attempt=1))  # an old batch's
    status = BatchStatus(grid, units[:3], 2, "abl", stream=io.StringIO(), clock=Clock())
    status.watch_records()
    status.poll()
    assert status.text().startswith("0/3 done, 0 failed, 0 running, 3 queued")
    batch.save_record(grid, new_record(grid, b, "running", attempt=1))
    (grid.parent / "units" / "2.json").write_text("garbage")  # unreadable: quietly not running
    status.poll()
    assert status.text().endswith("1 running, 2 queued | rounds 0/9 | ETA ? | b_s0 0/3")
    batch.save_record(grid, new_record(grid, a, "running", attempt=2))
    status.poll()
    assert status.text().endswith("2 running, 1 queued | rounds 0/9 | ETA ? | a_s0 0/3, b_s0 0/3")


def test_status_of_a_slurm_array_once_and_followed(tmp_path, capsys):
    """`batch status` prints the status line a batch shows; `--follow` writes a line per unit
    that settles, from the records and run folders alone, until none is pending."""
    (tmp_path / "good.yaml").write_text("rounds: 2\nnum_clients: 4\nclients_per_round: 2\n")
    results = tmp_path / "results"
    units = batch.expand_grid([str(tmp_path / "good.yaml")], [0, 1, 2], {}, results / "s", 1)
    grid = results / "s" / "grid.jsonl"
    batch.write_grid(units, grid)
    (grid.parent / "slurm").mkdir()
    (grid.parent / "slurm" / "settings.json").write_text('{"jobs": 2}')

    def finished(unit, seconds):
        (run_dir(unit) / "config.json").write_text(json.dumps(unit["config"]))
        (run_dir(unit) / "summary.json").write_text("{}")
        batch.save_record(grid, new_record(grid, unit, "finished", seconds, attempt=1))

    def started(unit, at):
        batch.save_record(grid, new_record(grid, unit, "running", attempt=1))
        os.utime(grid.parent / "units" / f"{unit['index']}.json", (at, at))

    batch.save_record(grid, new_record(grid, units[0], "running", attempt=1))
    rounds_done(units[0], [4.0], at=os.path.getmtime(grid) + 4)
    assert main(["batch", "status", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:4] == ["0", "good_s0", "partial", "1/2"]  # the rounds column
    assert out[-1].startswith("s: 0/3 done, 0 failed, 1 running, 2 queued | rounds 1/6 | ETA ")
    assert out[-1].endswith(" | good_s0 1/2")

    steps = iter([lambda: (rounds_done(units[0], [4.0, 4.0], 0), finished(units[0], 9.5),
                           started(units[1], at=1000.0)),
                  lambda: (rounds_done(units[1], [4.0, 4.0], 0), finished(units[1], 9.0),
                           rounds_done(units[2], [4.0, 4.0], 0), finished(units[2], 9.0))])
    log = io.StringIO()
    status = BatchStatus(grid, units, 2, "s", stream=log, clock=Clock(1000.0))
    follow(grid, units, status, sleep=lambda seconds: next(steps)())
    assert log.getvalue().splitlines() == [
        "  good_s0: finished (9.5 s) | 1/3 done, 0 failed, 1 running, 1 queued | rounds 2/6 | "
        "ETA 00:00:08 | good_s1 0/2",
        "  good_s1: finished (9.0 s) | 3/3 done, 0 failed, 0 running, 0 queued | rounds 6/6 | "
        "ETA 00:00:00",
        "  good_s2: finished (9.0 s) | 3/3 done, 0 failed, 0 running, 0 queued | rounds 6/6 | "
        "ETA 00:00:00"]
