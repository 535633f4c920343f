"""A researcher's first hour: the lines a user sees, their count and the order of the checks.

Each case runs the command line in this process (fedprune_core.cli.main) and reads what it
printed: a typo in a params file leads with the closest parameter, the inputs are checked
before the run folder, a finished run with the same parameters is skipped by every route and
one with other parameters names them, a missing dataset is one line, progress is one live bar
a round with a steady ETA, and deployment logs carry no colour codes."""

import io
import json

import pytest

from fedprune_core.cli import main
from fedprune_core.deploy.supervisor import plain
from fedprune_core.run import progress as progress_module
from fedprune_core.run.progress import LiveLines, Progress

TINY = ["--rounds", "1", "--num_clients", "4", "--clients_per_round", "2", "--local_epochs", "1",
        "--data_fraction", "0.05", "--test_samples", "200", "--progress", "off",
        "--num_threads", "1"]


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line]


def test_a_typo_key_in_a_params_file_leads_with_the_closest_parameter(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("sparsity_ration: 0.9\n")
    assert main(["run", "--params", str(params)]) == 2
    err = _lines(capsys.readouterr().err)
    assert err == [f"error: params file {params}: unknown parameter(s) sparsity_ration; "
                   f"did you mean sparsity_ratio?"]


def test_a_choice_not_offered_is_two_lines_with_the_closest_choice(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--sparsify_method", "top-k"])
    err = _lines(capsys.readouterr().err)
    assert stop.value.code == 2 and len(err) == 2
    assert err[1] == ("error: sparsify_method: 'top-k' is not allowed; allowed: none, topk, "
                      "random, cost_weighted, stc, qsgd (did you mean topk?)")


def test_inputs_are_checked_before_the_run_folder_and_finished_runs_skip_or_name_changes(
        tmp_path, capsys):
    results = str(tmp_path / "results")
    run = ["run", *TINY, "--results_dir", results, "--run_name", "r"]
    assert main(run) == 0
    capsys.readouterr()
    # the same parameters again: skipped, as `make run`, `notebook` and batches skip it
    assert main(run) == 0
    out = capsys.readouterr().out
    assert _lines(out)[-1] == (f"{tmp_path / 'results' / 'r'} is already finished with these "
                               f"parameters; skipping it (--overwrite to redo it)")
    # other parameters: refused, naming what differs
    assert main([*run, "--rounds", "2"]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "rounds=1 (now 2)" in err[0] and err[0].startswith("error: run_name:")
    # a missing dataset is said first (not the folder), in one line, without torchvision's noise
    assert main([*run, "--data_root", str(tmp_path / "nowhere")]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: data_root: dataset 'mnist' is not under")
    assert "Tried http" not in err[0] and "already" not in err[0]
    summary = json.loads((tmp_path / "results" / "r" / "summary.json").read_text())
    assert summary["rounds_completed"] == 1  # the finished run untouched


def _fake_clock(monkeypatch, steps):
    times = iter(steps)
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(times))


def test_the_eta_is_a_running_mean_without_the_first_updates_warm_up(monkeypatch):
    # updates finish at t = 10 (the first: 10 s of warm-up), then one a second
    _fake_clock(monkeypatch, [10.0, 11.0, 12.0, 13.0])
    p = Progress("off", "r", rounds=2, per_round=3, start_round=1)
    etas = []
    for k in range(4):
        p.client_done({"round": 1 + k // 3, "client_id": k, "status": "ok", "train_loss": 0.1})
        etas.append(p.eta())
    # after the 2nd, 3rd and 4th update: 1 s an update times 4, 3 and 2 updates left
    assert etas == ["?", "00:00:04", "00:00:03", "00:00:02"]


def test_one_live_bar_a_round_gives_way_to_the_round_line():
    """The kernel's lines as papermill streams them (chunks, not lines): on a terminal the
    client-update lines become the live bar and only the round lines stay; in a log every line
    passes."""
    kernel = ("  round 1/2: client 1/2 done (client 3, loss 0.5000); ETA ?\n  round 1/2: cli"
              "ent 2/2 done (client 0, loss 0.4000); ETA 00:00:05\nRound   1/2 | acc 50.00%\n"
              "  round 2/2: client 1/2 done (client 1, loss 0.3000); ETA 00:00:02\n"
              "Round   2/2 | acc 60.00%\n")
    log = io.StringIO()
    live = LiveLines(log, terminal=False)
    for chunk in (kernel[:30], kernel[30:95], kernel[95:]):
        live.write(chunk)
    assert log.getvalue() == kernel
    screen = io.StringIO()
    live = LiveLines(screen, terminal=True)
    for chunk in (kernel[:30], kernel[30:95], kernel[95:]):
        live.write(chunk)
    live.close()
    shown = screen.getvalue()
    assert "client 1/2 done" not in shown  # no line per client update
    assert "round 1/2" in shown and "updates, ETA 00:00:05" in shown  # the live bar
    # what stays on the screen: the round lines (the bar is cleared with \r and spaces)
    kept = [line.split("\r")[-1].strip() for line in shown.split("\n")]
    assert [line for line in kept if line] == ["Round   1/2 | acc 50.00%",
                                               "Round   2/2 | acc 60.00%"]


def test_deployment_logs_carry_no_colour_codes():
    assert plain("\x1b[92mINFO \x1b[0m:      Starting Flower SuperLink") == (
        "INFO :      Starting Flower SuperLink")
