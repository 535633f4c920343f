"""Every hostile input a tester tried is an `error: <parameter>: ...` with exit status 2, before
any work: no traceback, no file written, nothing the user had damaged.

Each case is the command line, the files it is given, and the parameter its error must name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--rounds", "1", "--num_clients", "4", "--clients_per_round", "2", "--local_epochs", "1",
        "--data_fraction", "0.05", "--num_threads", "1", "--progress", "off"]
BINARY = bytes(range(256)) * 4

# name: (command after `python -m fedprune_core`, files to create, text the error must name)
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
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_a_clear_error_before_any_work(case, tmp_path, readonly):
    args, files, named = CASES[case]
    d = tmp_path / "in"
    d.mkdir()
    for name, content in files.items():
        path = d / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    before = snapshot(tmp_path)
    args = [a.format(d=d, readonly=readonly) for a in args]
    out = subprocess.run([sys.executable, "-m", "fedprune_core", *args], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and named in last, last
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
