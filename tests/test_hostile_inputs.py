"""Every hostile input a tester tried is an `error: <parameter>: ...` with exit status 2, before
any work: no traceback, no file written, nothing the user had damaged.

Each case is the command line, the files it is given, the text its error must name, and the
environment it runs in. Cases run in this process (`fedprune_core.cli.main`): each would cost a
subprocess's ~3 s of importing torch otherwise.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--rounds", "1", "--num_clients", "4", "--clients_per_round", "2", "--local_epochs", "1",
        "--data_fraction", "0.05", "--test_samples", "1000", "--num_threads", "1",
        "--progress", "off"]
BINARY = bytes(range(256)) * 4
BAD = "\nrm -rf ~"  # a shell command after a newline, as a value of a job-script line


class Link(str):
    """A symbolic link to this path (relative to the link's folder), in a case's files."""


# A grid.jsonl of one invalid unit, as batch run writes it.
GRID = json.dumps({"index": 0, "params": "p.yaml", "seed": 0, "config": None,
                   "error": "ConfigError: rounds: ...", "run_name": "p_s0"}) + "\n"
# A finished run whose summary.json was deleted: rows, a model, clients.
NO_SUMMARY = {"r/x/config.json": "{}", "r/x/metrics.csv": "round,test_accuracy\n1,50.0\n",
              "r/x/final_model.pt": "weights", "r/x/clients.csv": "round,client_id\n1,0\n"}
NOTEBOOK = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
# YAML aliases nested 9 deep: 9**9 strings if expanded (PyYAML shares them; a repr would not).
ALIAS_BOMB = "label: [" + ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9) if i else 'lol'}]"
                                    for i in range(10)) + "]\n"
RUN = ["run", "--results_dir", "{d}/r"]
BATCH = ["batch", "run", "--params", "{d}/p.yaml", "--results_dir", "{d}/r"]
SLURM = [*BATCH, "--backend", "slurm", "--name", "s"]
P = {"p.yaml": "rounds: 1\n"}

# name: (command after `python -m fedprune_core`, files to create, text the error must name[,
# environment variables])
CASES = {
    "yaml unclosed bracket": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "rounds: [1\n"},
                              "p.yaml is not valid YAML"),
    "yaml tab indentation": (["run", "--params", "{d}/p.yaml"],
                             {"p.yaml": "rounds: 2\n\tlr: 0.1\n"}, "p.yaml is not valid YAML"),
    "binary params file": (["run", "--params", "{d}/p.yaml"], {"p.yaml": BINARY},
                           "p.yaml is not a text file"),
    "empty params file": (["run", "--params", "{d}/p.yaml"], {"p.yaml": ""},
                          "p.yaml holds no parameters"),
    "comments-only params file": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "# nothing\n"},
                                  "p.yaml holds no parameters"),
    "extends cycle": (["run", "--params", "{d}/a.yaml"],
                      {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\nrounds: 2\n"},
                      "extends: cycle"),
    "extends itself": (["run", "--params", "{d}/a.yaml"], {"a.yaml": "extends: a.yaml\n"},
                       "extends: cycle"),
    "quoted yes for a boolean": (["run", "--params", "{d}/p.yaml"],
                                 {"p.yaml": 'error_feedback: "yes"\n'}, "error_feedback:"),
    "list for a string": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "label: [a, b]\n"},
                          "label:"),
    "results_dir is a file": (["run", "--results_dir", "{d}/file", *TINY], {"file": "keep me"},
                              "results_dir:"),
    "results_dir under a file": (["run", "--results_dir", "{d}/file/sub", *TINY],
                                 {"file": "keep me"}, "results_dir:"),
    "results_dir read-only": (["run", "--results_dir", "{readonly}/results", *TINY], {},
                              "results_dir:"),
    "300-character run_name": (["run", "--run_name", "x" * 300, "--results_dir", "{d}/r", *TINY],
                               {}, "run_name:"),
    "run_name with a separator": (["run", "--run_name", "../escape", "--results_dir", "{d}/r",
                                   *TINY], {}, "run_name:"),
    "run_name with a control character": (["run", "--run_name", "a\tb", "--results_dir",
                                           "{d}/r", *TINY], {}, "run_name:"),
    "more clients than samples": (["run", "--data_fraction", "0.001", "--num_clients", "1000",
                                   "--clients_per_round", "10", "--results_dir", "{d}/r"], {},
                                  "num_clients:"),
    "notebook with a broken params file": (["notebook", "--params", "{d}/p.yaml", "--results_dir",
                                            "{d}/r"], {"p.yaml": "rounds: [1\n"},
                                           "p.yaml is not valid YAML"),
    "batch --set broken YAML": (["batch", "run", "--params", "{d}/p.yaml", "--set", "rounds=[1",
                                 "--results_dir", "{d}/r"], {"p.yaml": "rounds: 1\n"}, "rounds:"),
    "batch --name escaping results_dir": (["batch", "run", "--params", "{d}/p.yaml", "--name",
                                           "../../escape", "--results_dir", "{d}/r"],
                                          {"p.yaml": "rounds: 1\n"}, "--name:"),
    "batch --name too long": (["batch", "run", "--params", "{d}/p.yaml", "--name", "b" * 300,
                               "--results_dir", "{d}/r"], {"p.yaml": "rounds: 1\n"}, "--name:"),
    "batch results_dir is a file": (["batch", "run", "--params", "{d}/p.yaml", "--results_dir",
                                     "{d}/file"], {"p.yaml": "rounds: 1\n", "file": "keep me"},
                                    "results_dir:"),
    # --- SLURM: nothing reaches the job script unchecked (a newline was a shell command)
    "slurm time with a newline": ([*SLURM, "--slurm-time", "04:00:00" + BAD], P, "--slurm-time:"),
    "slurm time in another format": ([*SLURM, "--slurm-time", "4h"], P, "--slurm-time:"),
    "slurm partition with a newline": ([*SLURM, "--slurm-partition", "short" + BAD], P,
                                       "--slurm-partition:"),
    "slurm cpus with a newline": ([*SLURM, "--slurm-cpus", "2" + BAD], P, "--slurm-cpus:"),
    "slurm cpus negative": ([*SLURM, "--slurm-cpus", "-3"], P, "--slurm-cpus:"),
    "slurm jobs 0": ([*SLURM, "--jobs", "0"], P, "jobs:"),
    "slurm jobs with a newline": ([*SLURM, "--jobs", "2" + BAD], P, "jobs:"),
    "slurm batch folder with a space": ([*BATCH, "--backend", "slurm", "--name", "my batch"], P,
                                        "--results_dir:"),
    "resubmit time with a newline": (["batch", "resubmit-missing", "--grid", "{d}/r/b/grid.jsonl",
                                      "--slurm-time", "1:00" + BAD], {"r/b/grid.jsonl": GRID},
                                     "--slurm-time:"),
    "resubmit with corrupt settings": (["batch", "resubmit-missing", "--grid",
                                        "{d}/r/b/grid.jsonl"],
                                       {"r/b/grid.jsonl": GRID, "r/b/slurm/settings.json": "{"},
                                       "settings.json is unreadable"),
    "resubmit with crafted settings": (["batch", "resubmit-missing", "--grid",
                                        "{d}/r/b/grid.jsonl"],
                                       {"r/b/grid.jsonl": GRID, "r/b/slurm/settings.json":
                                        json.dumps({"time": "1:00" + BAD})}, "--slurm-time:"),
    # --- links: a run never writes through one (its pid, its log, its CSVs went elsewhere)
    ".lock is a symbolic link": ([*RUN, "--run_name", "x", *TINY],
                                 {"outside": "keep me", "r/x/.lock": Link("../../outside")},
                                 ".lock is a symbolic link"),
    "metrics.csv.tmp is a symbolic link": ([*RUN, "--run_name", "x", *TINY],
                                           {"outside": "keep me",
                                            "r/x/metrics.csv.tmp": Link("../../outside")},
                                           "metrics.csv.tmp: a symbolic link"),
    "run.log is a symbolic link": ([*RUN, "--run_name", "x", *TINY],
                                   {"outside": "keep me", "r/x/run.log": Link("../../outside")},
                                   "run.log: a symbolic link"),
    "experiment.ipynb is a symbolic link": (["notebook", "--results_dir", "{d}/r", "--run_name",
                                             "x", *TINY], {"outside": "keep me",
                                                           "r/x/experiment.ipynb":
                                                           Link("../../outside")},
                                            "experiment.ipynb: a symbolic link"),
    # --- nothing of value replaced without --overwrite
    "summary.json deleted, plain rerun": ([*RUN, "--run_name", "x", *TINY], NO_SUMMARY,
                                          "metrics.csv, final_model.pt, clients.csv"),
    "summary.json deleted, notebook rerun": (["notebook", "--results_dir", "{d}/r", "--run_name",
                                              "x", *TINY], NO_SUMMARY, "metrics.csv"),
    "summary and config deleted": ([*RUN, "--run_name", "x", *TINY],
                                   {k: v for k, v in NO_SUMMARY.items() if "config" not in k},
                                   "final_model.pt"),
    "batch name holding another grid": ([*BATCH, "--name", "b"], {**P, "r/b/grid.jsonl": GRID},
                                        "--name:"),
    "batch status of a crafted grid": (["batch", "status", "--grid", "{d}/g.jsonl"],
                                       {"g.jsonl": '[1, 2]\n'}, "--grid:"),
    "run-one of a unit not in the grid": (["batch", "run-one", "--grid", "{d}/g.jsonl",
                                           "--index", "5"], {"g.jsonl": GRID}, "--index:"),
    "run-one of a grid that is not JSON": (["batch", "run-one", "--grid", "{d}/g.jsonl",
                                            "--index", "0"], {"g.jsonl": "{"}, "--grid:"),
    # --- null, lists, infinities and huge numbers where a number belongs
    **{f"null for {name}": (["run", "--params", "{d}/p.yaml"], {"p.yaml": f"{name}: null\n"},
                            f"{name}: expected")
       for name in ("rounds", "lr", "num_clients", "data_fraction", "seed", "device",
                    "results_dir", "error_feedback", "num_threads")},
    "null through --set": ([*BATCH, "--set", "lr=null"], P, "lr: expected float, got null"),
    "list for rounds": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "rounds: [1, 2]\n"},
                        "rounds: expected int"),
    "list for run_name": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "run_name: [a]\n"},
                          "run_name: expected str"),
    "mapping for lr": ([*BATCH, "--set", "lr={{a: 1}}"], P, "lr: expected float"),
    ".inf for lr": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "lr: .inf\n"},
                    "lr: expected a finite float"),
    "inf for lr on the command line": (["run", "--lr", "inf"], {}, "lr: expected a finite float"),
    "1e400 for lr": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "lr: 1e400\n"},
                     "lr: expected a finite float"),
    "inf for rounds": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "rounds: inf\n"},
                       "rounds: expected int"),
    "rounds beyond 64 bits": (["run", "--rounds", str(2 ** 70)], {}, "rounds: expected a 64-bit"),
    "rounds not a number on the command line": (["run", "--rounds", "many"], {},
                                                "rounds: expected int"),
    "choice not offered": (["run", "--aggregation", "median"], {}, "aggregation:"),
    "num_threads absurd": ([*RUN, "--num_threads", str(10 ** 9)], {}, "num_threads:"),
    "alias bomb for a string": (["run", "--params", "{d}/p.yaml"],
                                {"p.yaml": ALIAS_BOMB}, "label:"),
    "label with a line break": ([*RUN, "--label", "a\nb", *TINY], {}, "label:"),
    "a number as a key": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "1: 2\n"},
                          "unknown parameter(s) 1"),
    # --- params files that are not one
    "duplicate key": (["run", "--params", "{d}/p.yaml"], {"p.yaml": "rounds: 2\nlr: 0.1\n"
                                                                     "rounds: 3\n"},
                      "rounds is given twice (lines 1 and 3)"),
    "duplicate key in a shared file": (["run", "--params", "{d}/p.yaml"],
                                       {"p.yaml": "extends: _s.yaml\n",
                                        "_s.yaml": "lr: 0.1\nlr: 0.2\n"}, "lr is given twice"),
    "params file a loop of links": (["run", "--params", "{d}/a.yaml"],
                                    {"a.yaml": Link("b.yaml"), "b.yaml": Link("a.yaml")},
                                    "a loop of symbolic links"),
    "extends a loop of links": (["run", "--params", "{d}/p.yaml"],
                                {"p.yaml": "extends: a.yaml\n", "a.yaml": Link("b.yaml"),
                                 "b.yaml": Link("a.yaml")}, "a loop of symbolic links"),
    "params file name too long": (["run", "--params", "{d}/" + "p" * 300 + ".yaml"], {},
                                  "File name too long"),
    "params file a folder": (["run", "--params", "{d}"], {}, "is not a file"),
    "params file of 2 MiB": (["run", "--params", "{d}/p.yaml"],
                             {"p.yaml": "# " + "x" * (2 << 20) + "\n"}, "larger than 1 MiB"),
    # --- a run_name with a control character, by every route
    "notebook run_name with a newline": (["notebook", "--run_name", "a\nb", "--results_dir",
                                          "{d}/r", *TINY], {}, "run_name:"),
    "run_name not UTF-8": ([*RUN, "--run_name", os.fsdecode(b"run\xff"), *TINY], {},
                           "run_name:"),
    "batch --name with a newline": ([*BATCH, "--name", "a\nb"], P, "--name:"),
    "batch --set run_name": ([*BATCH, "--set", "run_name=a\nb"], P, "--set run_name:"),
    "batch --set results_dir": ([*BATCH, "--set", "results_dir=/elsewhere"], P,
                                "--set results_dir:"),
    "batch --set seed with --seeds": ([*BATCH, "--set", "seed=3", "--seeds", "1"], P,
                                      "--set seed:"),
    "batch whose every unit is invalid": ([*BATCH, "--set", "rounds=-3"], P, "--params:"),
    "results_dir with a newline": (["run", "--results_dir", "{d}/a\nb", *TINY], {},
                                   "results_dir:"),
    # --- a setting of the PDF export, found before the run it was to report on
    "PDF timeout not a number": (["notebook", "--report", "pdf", "--results_dir", "{d}/r", *TINY],
                                 {}, "FEDPRUNE_PDF_TIMEOUT:", {"FEDPRUNE_PDF_TIMEOUT": "soon"}),
    "PDF timeout negative, reports CLI": (["reports", "pdf", "{d}/n.ipynb"], {"n.ipynb": NOTEBOOK},
                                          "FEDPRUNE_PDF_TIMEOUT:",
                                          {"FEDPRUNE_PDF_TIMEOUT": "-5"}),
}


@pytest.fixture
def readonly(tmp_path):
    """A folder this process cannot write: chmod 555, or (as root, who ignores modes) a path
    under /proc, where nothing can be created."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_text("")
    except OSError:
        yield folder
    else:
        (folder / "probe").unlink()
        candidate = Path("/proc/fedprune_no_such_dir")
        try:
            candidate.mkdir()
        except OSError:
            yield candidate
        else:  # pragma: no cover - an unusual system
            candidate.rmdir()
            pytest.skip("no folder this user cannot write")
    finally:
        folder.chmod(0o755)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under root: a file's sha256, a link's target, or 'dir' (links not followed)."""
    def entry(p: Path) -> str:
        mode = p.lstat().st_mode
        if stat.S_ISLNK(mode):
            return f"link to {os.readlink(p)}"
        return hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(mode) else "dir"
    return {str(p.relative_to(root)): entry(p) for p in sorted(root.rglob("*"))}


def make_files(d: Path, files: dict) -> None:
    for name, content in files.items():
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            path.symlink_to(content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def main(args: list[str]) -> int:
    """The command line in this process: its exit status (argparse's errors exit)."""
    from fedprune_core import cli
    from fedprune_core.tools import reports

    try:
        return reports.main(args[1:]) if args[0] == "reports" else cli.main(args)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_a_clear_error_before_any_work(case, tmp_path, readonly, monkeypatch,
                                                        capsys):
    args, files, named, *env = CASES[case]
    d = tmp_path / "in"
    d.mkdir()
    make_files(d, files)
    for key, value in (env[0] if env else {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code = main([a.format(d=d, readonly=readonly) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(("error: ", "reports: error: ")) and named in last, last
    assert "allowed" in last or "expected" in last, last
    assert snapshot(tmp_path) == before  # nothing written, nothing damaged


def test_a_full_disk_is_an_error_and_leaves_no_temporary_checkpoint(tmp_path, monkeypatch,
                                                                    capsys):
    """torch.save into a full disk: the CLI says so (exit 2) and removes checkpoint.pt.tmp,
    which would otherwise stay behind and keep the disk full."""
    import torch

    from fedprune_core.cli import main

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if hasattr(f, "write"):  # the checkpoint: half written, then ENOSPC
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(f, "name", None))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    results = tmp_path / "results"
    code = main(["run", *TINY, "--results_dir", str(results), "--run_name", "full"])
    err = capsys.readouterr().err
    assert code == 2 and "results_dir" in err and "No space left on device" in err, err
    assert "Traceback" not in err
    assert not list(results.rglob("*.tmp"))
    assert (results / "full" / "config.json").exists()  # what was written before is kept


def test_batch_with_a_broken_params_file_fails_only_its_units(tmp_path):
    from fedprune_core.tools import batch

    (tmp_path / "good.yaml").write_text("rounds: 1\n")
    (tmp_path / "broken.yaml").write_text("rounds: [1\n")
    (tmp_path / "binary.yaml").write_bytes(BINARY)
    units = batch.expand_grid([str(tmp_path / n) for n in ("good.yaml", "broken.yaml",
                                                          "binary.yaml")],
                              [0, 1], {}, tmp_path / "r", threads=1)
    assert [u["run_name"] for u in units] == ["good_s0", "good_s1", "broken_s0", "broken_s1",
                                              "binary_s0", "binary_s1"]
    assert all(u["error"] is None for u in units[:2])
    assert "not valid YAML" in units[2]["error"] and "not a text file" in units[4]["error"]


def test_a_tilde_is_the_home_folder_not_a_folder_named_tilde(tmp_path, monkeypatch):
    from fedprune_core.config import ExperimentConfig

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text('results_dir: "~"\ndata_root: ~/data\n')
    cfg = ExperimentConfig.from_yaml(tmp_path / "p.yaml")
    assert (cfg.results_dir, cfg.data_root) == (str(tmp_path / "home"),
                                                str(tmp_path / "home" / "data"))
    assert ExperimentConfig(results_dir="~/r").results_dir == str(tmp_path / "home" / "r")
    from fedprune_core.checks import check_results_dir

    assert check_results_dir("~/batches") == tmp_path / "home" / "batches"
    assert not (tmp_path / "~").exists()
