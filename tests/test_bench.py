"""Smoke test of the benchmark (benchmarks/bench.py): it runs end to end and writes every number.

No timing is asserted: timings on a shared machine are noise. The naive reference's pieces are
checked against the core on a tiny case, so the speed comparison compares the same algorithm.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"

POSITIVE_KEYS = (
    "matmul_gflops_per_sec", "conv_gflops_per_sec", "ceiling_gflops_per_sec", "data_load_sec",
    "train_full_samples_per_sec", "train_full_gflops_per_sec", "train_full_pct_of_matmul",
    "train_full_pct_of_conv",
    "train_pruned40_samples_per_sec", "train_pruned40_gflops_per_sec",
    "train_pruned40_pct_of_matmul",
    "train_pruned40_x8_gflops_per_sec", "train_pruned40_x16_gflops_per_sec",
    "train_full_samples_per_sec_1thread", "train_full_samples_per_sec_2thread",
    "train_full_samples_per_sec_2proc_1thread_total",
    "eval_samples_per_sec", "eval_10k_sec", "eval_naive_10k_sec",
    "speedup_over_naive_x", "rss_over_naive_x", "peak_rss_mb",
)
METHODS = ("dense", "unstructured", "structured", "topk", "cost_weighted")


def _load(name):
    sys.path.insert(0, str(BENCH_DIR))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_quick_bench_writes_every_number(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench.py"), "--quick", "--threads", "1",
         "--skip", "flower", "busy", "--out", str(out)],
        capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())

    for key in POSITIVE_KEYS:
        assert isinstance(res[key], (int, float)) and math.isfinite(res[key]) and res[key] > 0, key
    assert set(res["client_updates_per_sec"]) == set(METHODS)
    assert all(v > 0 for v in res["client_updates_per_sec"].values())
    assert res["ceiling_gflops_per_sec"] == max(res["matmul_gflops_per_sec"],
                                                res["conv_gflops_per_sec"])
    # SimpleCNN's 32/64/256 units at ratio 0.4: exact 19/38/154 (round(0.6 * width)); rounded
    # to multiples of 8: 16/40/152, of 16: 16/32/160
    assert res["train_pruned40_widths"] == [19, 38, 154]
    assert res["train_pruned40_x8_widths"] == [16, 40, 152]
    assert res["train_pruned40_x16_widths"] == [16, 32, 160]
    assert res["train_full_widths"] == [32, 64, 256]
    assert all(v > 0 for v in res["eval_10k_sec_by_batch"].values())
    assert all(v > 0 for v in res["eval_layout_ablation_10k_sec"].values())
    assert all(v["first_sec"] > 0 and v["second_sec"] > 0 for v in res["first_call"].values())
    for name in ("default", "default_sequential", "fedavg"):  # wall = floor x ratio, split = wall
        f = res[f"floor_{name}"]
        assert f["wall_sec"] > f["floor_sec"] > f["train_floor_sec"] > 0 and f["evaluations"] == 1
        assert f["over_floor_x"] == pytest.approx(f["wall_sec"] / f["floor_sec"])
        assert f["train_floor_sec"] == pytest.approx(f["train_gflops"]
                                                     / res["ceiling_gflops_per_sec"])
        # the practical floor trains at the full model's measured speed, below the ceiling
        assert f["practical_floor_sec"] > f["floor_sec"]
        assert f["over_practical_floor_x"] == pytest.approx(f["wall_sec"] / f["practical_floor_sec"])
        assert sum(f["split_sec"].values()) == pytest.approx(f["wall_sec"])
        assert f["split_sec"]["evaluation"] > 0 and f["split_sec"]["other"] > 0
        assert 0 <= f["tail_accuracy_pct"] <= 100
    # the parallel engine's clients overlap, so its split leaves them in with the rest; at one
    # thread (this bench's) it has one worker and the sequential engine's numbers
    sequential, parallel = res["floor_default_sequential"], res["floor_default"]
    assert set(sequential["split_sec"]) - set(parallel["split_sec"]) == {"training", "update_rest"}
    assert parallel["tail_accuracy_pct"] == sequential["tail_accuracy_pct"]
    assert parallel["train_gflops"] == sequential["train_gflops"]
    assert res["parallel_speedup_x"] == pytest.approx(sequential["wall_sec"] / parallel["wall_sec"])
    assert 0 <= res["naive_default"]["final_accuracy_pct"] <= 100
    assert res["rss_over_naive_x"] == pytest.approx(parallel["peak_rss_mb"]
                                                    / res["naive_default"]["peak_rss_mb"])
    assert "flower_fedavg" not in res and "busy" not in res  # skipped: their own tests below
    small, large = res["federations"]["20"], res["federations"]["200"]
    model_mb = 4 * 824_458 / 1e6
    # a round's checkpoint holds the global model and the cohort's residuals, the store's
    # commit exactly the cohort's residuals: 10 and 20 clients a round here
    assert small["store_commit_mb_per_round"] == pytest.approx(10 * model_mb)
    assert large["store_commit_mb_per_round"] == pytest.approx(20 * model_mb)
    assert 10 * model_mb < small["checkpoint_mb_per_round"] < 13 * model_mb
    assert 20 * model_mb < large["checkpoint_mb_per_round"] < 23 * model_mb
    assert large["peak_rss_mb"] > large["rss_after_imports_mb"] > 0
    for key in ("cpu_b10", "cpu_b64"):
        assert res["engines"][key]["sequential_samples_per_sec"] > 0
        assert res["engines"][key]["cohort_samples_per_sec"] > 0
    machine = res["machine"]
    assert machine["torch_version"] == torch.__version__ and machine["threads"] == 1
    assert machine["cpu_count"] >= 1 and machine["date"]
    assert (tmp_path / "runs" / "bench_default" / "summary.json").is_file()
    assert "default: wall / floor" in proc.stdout


def test_naive_sparsify_matches_core_semantics():
    """Exactly k of the trained coordinates are sent; sent + new residual = delta + old
    residual on trained coordinates; untrained residual is kept (as in the core)."""
    from fedprune_core.config import ExperimentConfig
    from fedprune_core.methods.compress.base import num_kept

    naive = _load("naive_reference")
    torch.manual_seed(0)
    delta = {"conv1.weight": torch.randn(4, 1, 3, 3), "fc1.weight": torch.randn(5, 6)}
    mask = {n: (torch.rand_like(t) > 0.3).float() for n, t in delta.items()}
    delta = {n: t * mask[n] for n, t in delta.items()}
    for method in ("topk", "cost_weighted"):
        cfg = ExperimentConfig(sparsify_method=method, sparsity_ratio=0.8)
        residual = {n: torch.randn_like(t) for n, t in delta.items()}
        old = {n: t.clone() for n, t in residual.items()}
        sent = naive.sparsify(delta, mask, residual, cfg)
        trained = {n: int(m.sum()) for n, m in mask.items()}
        if method == "topk":
            for n in delta:
                assert int((sent[n] != 0).sum()) == num_kept(trained[n], 0.8)
        else:
            assert sum(int((s != 0).sum()) for s in sent.values()) == num_kept(
                sum(trained.values()), 0.8)
        for n in delta:
            on = mask[n] > 0
            assert torch.allclose((sent[n] + residual[n])[on], (delta[n] + old[n])[on])
            assert torch.equal(residual[n][~on], old[n][~on])
            assert torch.all(sent[n][~on] == 0)


def _flat(tensors: dict) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors.values()])


def test_naive_sparsify_matches_core_compressor():
    """On a structured plan's coordinates, the naive per-tensor selection sends what the core's
    compressor sends and keeps the residual that the core's error feedback keeps."""
    from fedprune_core.config import ExperimentConfig
    from fedprune_core.fl.client import residual_after
    from fedprune_core.methods import build
    from helpers import KINDS, LAYOUT, planner

    naive = _load("naive_reference")
    plan = planner(pruning_mode="structured").plan(0.4)
    g = torch.Generator().manual_seed(0)
    combined = torch.randn(len(plan.coords), generator=g)  # delta + old residual
    old = torch.randn(LAYOUT.size, generator=g)
    delta, mask = torch.zeros(LAYOUT.size), torch.zeros(LAYOUT.size)
    delta[plan.coords] = combined - old[plan.coords]
    mask[plan.coords] = 1.0
    for method in ("topk", "cost_weighted"):
        cfg = ExperimentConfig(sparsify_method=method, sparsity_ratio=0.9)
        out = build("compress", method, cfg).compress(combined, plan.segments, KINDS, g)
        expected_sent = torch.zeros(LAYOUT.size)
        expected_sent[plan.coords[out.positions]] = out.values
        expected_residual = old.clone()
        expected_residual[plan.coords] = residual_after(combined, out)
        residual = {n: t.clone() for n, t in LAYOUT.views(old).items()}
        sent = naive.sparsify(LAYOUT.views(delta), LAYOUT.views(mask), residual, cfg)
        assert torch.allclose(_flat(sent), expected_sent, atol=1e-6), method
        assert torch.allclose(_flat(residual), expected_residual, atol=1e-6), method


@pytest.mark.parametrize("selection", ["l1", "first"])
def test_naive_submodel_matches_core_plan(selection):
    """The naive per-tensor sub-model extraction picks the coordinates the core's plan does."""
    from helpers import LAYOUT, SPEC, global_vector, planner

    naive = _load("naive_reference")
    flat = global_vector()
    global_sd = LAYOUT.views(flat)
    plan = planner(flat, pruning_mode="structured", structured_selection=selection).plan(0.4)
    keep = naive.choose_units(global_sd, SPEC, 0.4, selection)
    assert all(torch.equal(keep[g], plan.keep[g]) for g in keep)
    sub = naive.extract_submodel(global_sd, keep, SPEC)
    assert torch.equal(_flat(sub), flat[plan.coords])
    full, mask = naive.expand_to_global(sub, global_sd, keep, SPEC)
    flat_mask = torch.cat([m.flatten() for m in mask.values()])
    assert torch.equal(flat_mask.nonzero().squeeze(1), torch.sort(plan.coords)[0])
    assert torch.equal(torch.cat([t.flatten() for t in full.values()])[plan.coords],
                       flat[plan.coords])


def test_flower_reference_trains_fedavg_on_flowers_simulation_engine():
    """One round of the bench's Flower app (4 SuperNodes, 2 trained) on Flower's own engine:
    the global model it returns was trained (the suite's partition, initial weights)."""
    from fedprune_core.config import ExperimentConfig

    flower = _load("flower_reference")
    cfg = ExperimentConfig(rounds=1, num_clients=4, clients_per_round=2, local_epochs=1,
                           data_fraction=0.02, pruning_mode="none", sparsify_method="none",
                           adaptive_ratio=False)
    parts = flower._partition(cfg)  # 2% of 60,000 (stratified by class) over 4 clients
    assert len(parts) == 4 and sum(map(len, parts)) == 1199 and min(map(len, parts)) >= 299
    out = flower.run(cfg)
    assert len(out["accuracy_pct"]) == 1 and len(out["rounds_sec"]) == 1
    assert out["trained_rounds"] == 1  # the ClientApps trained (a failed one is only logged)
    assert 0 <= out["accuracy_pct"][0] <= 100
    assert out["accuracy_pct"][0] != out["initial_accuracy_pct"]  # the global model moved
    assert out["wall_sec"] > out["rounds_sec"][0] > 0


def test_fair_share_of_a_busy_machine_by_hand():
    busy = _load("busy")
    # 2 threads on 2 cores beside 2 one-thread hogs: 4 runnable threads, 1 core for the run
    assert busy.fair_share_sec(10.0, threads=2, cores=2, hogs=2) == pytest.approx(20.0)
    # 1 thread beside 2 hogs on 2 cores: 2/3 of a core
    assert busy.fair_share_sec(10.0, threads=1, cores=2, hogs=2) == pytest.approx(15.0)
    # 8 threads on 2 cores alone use 2 cores; beside 2 hogs they get 1.6
    assert busy.fair_share_sec(10.0, threads=8, cores=2, hogs=2) == pytest.approx(12.5)


@pytest.mark.parametrize("argv", [["--quick"], ["--threads", "3", "--out", "x.json"]])
def test_bench_options_parse(argv):
    bench = _load("bench")
    args = bench.parse_args(argv)
    assert args.quick == ("--quick" in argv)
    assert args.threads == (3 if "--threads" in argv else 0)


STUB_SEED = '''"""A stand-in for the seed's run_simulation.py: its command line, a second of work."""
import argparse, pathlib, time
p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int); p.add_argument("--data_root"); p.add_argument("--results_dir")
a = p.parse_args()
pathlib.Path(a.results_dir).mkdir(parents=True, exist_ok=True)
block = bytearray(64 * 2**20)  # 64 MB resident: the peak the benchmark must see
for i in range(0, len(block), 4096):
    block[i] = 1
(pathlib.Path(a.results_dir) / "done").write_text(str(a.rounds))
'''


def test_the_seed_benchmark_runs_both_sides_alternated_and_reports_each(tmp_path, capsys):
    """benchmarks/seed.py on 1 round, with a stub where the seed's checkout goes: both programs
    run, each measured as its own process (never timed here)."""
    seed = _load("seed")
    assert seed.main(["--seed-repo", str(tmp_path / "nowhere"), "--out",
                      str(tmp_path / "x.json")]) == 0  # absent: one line, how to get it
    assert capsys.readouterr().out.splitlines() == [
        f"seed comparison skipped: SEED_REPO names no checkout of the seed "
        f"({tmp_path / 'nowhere'}); {seed.HOW_TO_GET}"]
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "run_simulation.py").write_text(STUB_SEED)
    res = seed.compare(tmp_path / "stub", rounds=(1,), pairs=2,
                       suite_args=("--data_fraction", "0.05", "--test_samples", "200",
                                   "--num_clients", "4", "--clients_per_round", "2",
                                   "--local_epochs", "1", "--num_threads", "1"))
    row = res["rounds"]["1"]
    assert len(row["runs"]["seed"]) == len(row["runs"]["suite"]) == 2
    assert row["seed"]["peak_rss_mb"] >= 64  # the stub's own peak, not the benchmark's
    assert row["suite"]["cpu_sec"] > 0 and row["wall_ratio"] > 0
    assert row["wall_ratio"] == row["seed"]["wall_sec"] / row["suite"]["wall_sec"]
    assert seed.table(res).splitlines()[2].startswith("| 1 | ")


def test_alternate_runs_the_pairs_in_both_orders_and_takes_medians(tmp_path):
    """common.alternate: A/B then B/A, one fresh process a run, medians of each side's runs."""
    common = _load("common")
    log = tmp_path / "order"
    step = ("import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
            "p.write_text(p.read_text() + sys.argv[2] if p.exists() else sys.argv[2])")
    sides = lambda: {s: ([sys.executable, "-c", step, str(log), s], tmp_path) for s in "ab"}
    row = common.alternate(sides, pairs=3, env=dict(os.environ))
    assert log.read_text() == "abbaab"
    assert [len(row["runs"][s]) for s in "ab"] == [3, 3]
    walls = sorted(r["wall_sec"] for r in row["runs"]["a"])
    assert row["a"]["wall_sec"] == walls[1] and row["a"]["peak_rss_mb"] > 0


def test_side_by_side_names_the_commands_it_compares(tmp_path):
    """benchmarks/side_by_side.py's commands (run for real by make bench-side, not here): the
    suite's FedAvg beside Flower's app on the same params file, make run's notebook beside
    the deployment on the default parameters, a new run name every time."""
    side = _load("side_by_side")
    flower = side.flower_commands(3, tmp_path)
    assert flower["suite"][0][1:5] == ["-m", "fedprune_core", "run", "--params"]
    assert flower["flower"][0][1].endswith("benchmarks/flower_reference.py")
    assert flower["suite"][0][5] == flower["flower"][0][3] == str(side.FEDAVG)
    deploy = side.deploy_commands(3, tmp_path)
    assert deploy["simulation"][0][3] == "notebook" and deploy["deployment"][0][3] == "deploy"
    for argv, _ in deploy.values():
        assert argv[argv.index("--rounds") + 1] == "3"
        assert argv[argv.index("--params") + 1] == str(side.DEFAULT)
    again = side.deploy_commands(3, tmp_path)
    assert again["deployment"][0][-1] != deploy["deployment"][0][-1]
