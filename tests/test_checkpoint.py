"""`--resume` reads only what a run wrote: the checkpoint loads without running code, and a
checkpoint or client-state store that is damaged, crafted, replaced or from another thread count
is refused (exit status 2, one line naming what is wrong) before any work."""

import os
import pickle
import random
import shutil
import zlib

import pandas as pd
import pytest
import torch

from fedprune_core.cli import main
from fedprune_core.run.loop import run_experiment
from fedprune_core.run.summary import TIMING_COLUMNS

ARGS = ["--rounds", "3", "--num_clients", "4", "--clients_per_round", "2", "--local_epochs",
        "1", "--data_fraction", "0.05", "--progress", "off", "--test_samples", "200",
        "--sparsify_method", "topk"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped after round 2 of 3 (its checkpoint and store kept), on the sequential
    engine with 1 thread, and the same run finished, for comparison."""
    from fedprune_core.cli import build_parser, config_from_args

    root = tmp_path_factory.mktemp("ckpt")
    cfg = config_from_args(build_parser().parse_args(
        ["run", *ARGS, "--engine", "sequential", "--num_threads", "1", "--results_dir",
         str(root)]))
    full = run_experiment(cfg.replace(run_name="full"))

    def stop(r, row):
        if r == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg.replace(run_name="cut"), on_round_end=stop)
    return root, full


def _copy(interrupted, tmp_path):
    root, _ = interrupted
    shutil.copytree(root / "cut", tmp_path / "cut")
    return tmp_path / "cut"


def _resume(tmp_path, *extra, threads="1", capsys=None):
    code = main(["run", *ARGS, "--engine", "sequential", "--num_threads", threads,
                 "--results_dir", str(tmp_path), "--run_name", "cut", "--resume", *extra])
    return code, capsys.readouterr().err if capsys else ""


class Exploit:
    """Pickled, it runs `touch <path>` when unpickled by a loader that allows any global."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _crafted(path, tmp_path):
    torch.save({"format": 2, "state": Exploit(tmp_path / "PWNED")}, path)


def _old_format(path, tmp_path):  # what earlier versions wrote: a pickled object graph
    torch.save({"config": {}, "state": pd.DataFrame({"a": [1]})}, path)


def _wrong_size(path, tmp_path):
    data = torch.load(path, weights_only=True)
    data["state"]["params"] = data["state"]["params"][:10]
    torch.save(data, path)


def _other_experiment(path, tmp_path):
    data = torch.load(path, weights_only=True)
    data["config"]["lr"] = 0.5
    torch.save(data, path)


CORRUPTIONS = {
    "crafted pickle that runs code": (_crafted, "not a checkpoint this run can continue"),
    "empty": (lambda p, t: p.write_bytes(b""), "unreadable"),
    "truncated": (lambda p, t: p.write_bytes(p.read_bytes()[:1000]), "unreadable"),
    # seeded, so the case is the same on every run; the unpickler raises anything on bytes
    # like these (a bare STOP opcode: IndexError), and each must be the same clear error
    "garbage": (lambda p, t: p.write_bytes(random.Random(0).randbytes(4096)), "unreadable"),
    "a bare stop opcode": (lambda p, t: p.write_bytes(b"\x80\x02."), "unreadable"),
    "a plain pickle": (lambda p, t: p.write_bytes(pickle.dumps([1, 2, 3])),
                       "not a checkpoint this run can continue"),
    "an earlier version's object graph": (_old_format, "not a checkpoint this run can continue"),
    "a model of another size": (_wrong_size, "global model"),
    "another experiment's": (_other_experiment, "lr=0.5 (now 0.01)"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_bad_checkpoint_is_refused_before_any_work(case, interrupted, tmp_path, capsys):
    run_dir = _copy(interrupted, tmp_path)
    spoil, named = CORRUPTIONS[case]
    spoil(run_dir / "checkpoint.pt", tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    code, err = _resume(tmp_path, capsys=capsys)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: resume:") and named in last, last
    assert not (tmp_path / "PWNED").exists()  # the crafted file ran nothing
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing touched


def _flip_a_residual(path):
    """One byte of a row the checkpoint does not rewrite (committed before the last round)."""
    state = torch.load(path.parent / "checkpoint.pt", weights_only=True)["state"]
    cid = min(set(state["clients"]["committed"]) - set(state["clients"]["overlay"]))
    data = bytearray(path.read_bytes())
    data[cid * 4 * len(state["params"]) + 2] ^= 0xFF
    path.write_bytes(bytes(data))


STORE_DAMAGE = {
    "deleted": (lambda p: p.unlink(), "is missing"),
    "truncated": (lambda p: os.truncate(p, p.stat().st_size // 2), "truncated or replaced"),
    "edited": (_flip_a_residual, "is not the one the run wrote"),
}


@pytest.mark.parametrize("case", list(STORE_DAMAGE))
def test_a_damaged_client_state_store_is_refused(case, interrupted, tmp_path, capsys):
    run_dir = _copy(interrupted, tmp_path)
    damage, named = STORE_DAMAGE[case]
    damage(run_dir / "client_states.f32")
    code, err = _resume(tmp_path, capsys=capsys)
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: resume:") and named in last, last
    assert not (run_dir / "summary.json").exists()


def test_checksums_cover_every_committed_row(interrupted):
    root, _ = interrupted
    data = torch.load(root / "cut" / "checkpoint.pt", weights_only=True)
    committed = data["state"]["clients"]["committed"]
    raw = (root / "cut" / "client_states.f32").read_bytes()
    row = 4 * len(data["state"]["params"])
    overlay = data["state"]["clients"]["overlay"]
    # rows committed before the last round: the store holds them, as their CRC says
    for cid, crc in committed.items():
        if cid not in overlay:
            assert zlib.crc32(raw[cid * row:(cid + 1) * row]) == crc


def test_resume_with_another_thread_count_is_refused_where_it_changes_numbers(
        interrupted, tmp_path, capsys):
    _copy(interrupted, tmp_path)
    code, err = _resume(tmp_path, threads="2", capsys=capsys)
    assert code == 2
    assert "num_threads: the run was computed on 1 torch thread(s)" in err and "--num_threads 1" \
        in err


def test_an_intact_checkpoint_resumes_to_the_uninterrupted_numbers(interrupted, tmp_path,
                                                                   capsys):
    _, full = interrupted
    run_dir = _copy(interrupted, tmp_path)
    code, err = _resume(tmp_path, capsys=capsys)
    assert code == 0, err
    timing = list(TIMING_COLUMNS["metrics"])
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "metrics.csv").drop(columns=timing),
                                  pd.read_csv(full.run_dir / "metrics.csv").drop(columns=timing))
    assert not (run_dir / "checkpoint.pt").exists()
