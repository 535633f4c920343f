"""The published tables, rerun: the McMahan batch end to end at a tiny scale, every reproduce
parameter file for one round on a few samples, and each paper's table beside its numbers on
hand-made runs."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedprune_core.analysis import RunTable, reproduce_table, write_reproduce
from fedprune_core.analysis.reproduce import PAPERS, heterofl_mix
from fedprune_core.config import ExperimentConfig
from fedprune_core.run.loop import run_experiment
from test_models import write_cifar10

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params" / "reproduce"


def _runs(hits: dict[str, list[float]], epochs: int) -> RunTable:
    summaries = pd.DataFrame([{
        "run_name": name, "label": "FedAvg", "seed": i, "model": "mcmahan_cnn",
        "pruning_mode": "none", "sparsify_method": "none", "local_epochs": epochs,
        "batch_size": 10, "lr": 0.1, "rounds_completed": len(acc),
        "tail_test_accuracy": sum(acc[-2:]) / 2} for i, (name, acc) in enumerate(hits.items())])
    metrics = pd.DataFrame([{"run_name": name, "round": 100 * (r + 1), "test_accuracy": a}
                            for name, acc in hits.items() for r, a in enumerate(acc)])
    return RunTable(summaries, metrics, pd.DataFrame(), pd.DataFrame())


def test_table_sits_beside_the_paper_and_counts_the_seeds_that_reached_99():
    runs = _runs({"a": [97.0, 99.1, 99.0], "b": [96.0, 98.0, 98.9]}, epochs=5)
    row = reproduce_table(runs).iloc[0]
    assert (row["E"], row["B"], row["Seeds"], row["Rounds run"]) == (5, 10, 2, 3)
    assert row["Rounds to 99% (ours)"] == "200 (1/2 seeds)"  # b never reached 99%
    assert row["Rounds to 99% (paper)"] == 229
    assert row["Tail acc. (%)"].startswith("99.05 ± ") or row["Tail acc. (%)"].startswith("98.")
    assert reproduce_table(runs, "mcmahan").equals(reproduce_table(runs))


def _heterofl_runs() -> RunTable:
    rows = []
    for i, (width, levels, partition, tail, best) in enumerate([
            (1.0, "", "iid", 90.0, 91.0), (1.0, "", "iid", 92.0, 92.5),
            (1.0, "0,0.5,0.75,0.875,0.9375", "shards", 60.0, 62.0),
            (0.0625, "", "shards", 50.0, 51.0)]):
        rows.append({"run_name": f"r{i}", "label": "x", "seed": i, "model": "preresnet18",
                     "dataset": "cifar10", "partition": partition, "classes_per_client": 2,
                     "model_width": width, "pruning_levels": levels,
                     "level_assignment": "dynamic" if levels else "fixed",
                     "rounds_completed": 400, "tail_test_accuracy": tail,
                     "best_test_accuracy": best})
    return RunTable(pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame(), pd.DataFrame())


def test_heterofl_table_has_the_global_accuracy_per_mix_beside_paper_and_flower():
    table = reproduce_table(_heterofl_runs(), "heterofl")
    assert list(table["Model mix"]) == ["a", "a-b-c-d-e", "e"]
    assert list(table["Data"]) == ["IID", "non-IID (2 classes)", "non-IID (2 classes)"]
    a = table.iloc[0]
    assert a["Seeds"] == 2 and a["Global acc. (%) (ours, tail)"].startswith("91.00 ± ")
    assert a["Best acc. (%) (ours)"].startswith("91.75 ± ")
    assert (a["Global acc. (%) (paper)"], a["Global acc. (%) (Flower)"]) == (91.19, 90.83)
    mix = table.iloc[1]
    assert mix["Global acc. (%) (ours, tail)"] == "60.00"  # one seed: no interval
    assert (mix["Global acc. (%) (paper)"], mix["Global acc. (%) (Flower)"]) == (61.64, 45.08)
    assert (table.iloc[2]["Global acc. (%) (paper)"], table.iloc[2]["Global acc. (%) (Flower)"]
            ) == (54.16, "–")
    assert heterofl_mix(1.0, "0,0.5", "fixed") == "a-b (fix)"
    assert heterofl_mix(0.3, "") == "0.3"


def test_fjord_table_has_the_accuracy_at_each_width_over_seeds():
    def widths(base):  # summary.json's `widths`: ratio 0 is the full width (p = 1)
        return [{"ratio": r, "tail_test_accuracy": base + 10 * (1 - r)}
                for r in (0.0, 0.2, 0.4, 0.6, 0.8)]
    summaries = pd.DataFrame([
        {"run_name": f"s{seed}{kd}", "label": "x", "seed": seed, "model": "resnet18",
         "local_training": "fjord", "fjord_distill": kd, "rounds_completed": 500,
         "widths": widths(70.0 + seed + (5 if kd else 0))}
        for seed in range(3) for kd in (False, True)])
    summaries.loc[len(summaries)] = {"run_name": "other", "label": "y", "seed": 0,
                                     "model": "resnet18", "local_training": "sgd",
                                     "fjord_distill": False, "rounds_completed": 1,
                                     "widths": widths(0.0)}
    table = reproduce_table(RunTable(summaries, pd.DataFrame(), pd.DataFrame(),
                                     pd.DataFrame()), "fjord")
    assert list(table["Method"]) == ["FjORD"] * 5 + ["FjORD + KD"] * 5
    assert list(table["p"]) == [0.2, 0.4, 0.6, 0.8, 1.0] * 2
    assert (table["Seeds"] == 3).all()
    p02 = table.iloc[0]  # seeds 70, 71, 72 + 10 * 0.2
    assert p02["Acc. (%) (ours, tail)"].startswith("73.00 ± ")
    assert p02["Acc. (%) (Flower baseline)"] == 83.9
    assert table.iloc[9]["Acc. (%) (Flower baseline)"] == 85.9
    with pytest.raises(ValueError, match="paper: 'x'"):
        reproduce_table(RunTable(summaries, pd.DataFrame(), pd.DataFrame(), pd.DataFrame()),
                        "x")


def test_every_paper_has_its_parameter_files_and_they_parse():
    for paper in PAPERS:
        files = sorted(p for p in (PARAMS / paper).glob("*.yaml") if not p.name.startswith("_"))
        assert files, paper
        for path in files:
            ExperimentConfig.from_yaml(path)
    assert ExperimentConfig.from_yaml(PARAMS / "mcmahan" / "fedavg_e5_b10.yaml"
                                      ).target_accuracy == 99
    assert not list(PARAMS.glob("*.yaml"))  # moved into params/reproduce/mcmahan/


# The heterofl and fjord files for one round on tiny CIFAR-10 files: few clients, one local
# epoch, a 1/8-width ResNet, each on the engine its file names (HeteroFL's: the cohort engine,
# which trains with each round's lr).
SMALL = dict(rounds=1, num_clients=3, clients_per_round=2, local_epochs=1, test_samples=0,
             eval_every=1, progress="off", num_threads=1)


@pytest.mark.parametrize("path", sorted(str(p.relative_to(PARAMS)) for paper in
                                        ("heterofl", "fjord")
                                        for p in (PARAMS / paper).glob("[!_]*.yaml")))
def test_each_reproduce_file_runs_one_round_on_a_few_samples(tmp_path, path):
    write_cifar10(tmp_path / "data")
    cfg = ExperimentConfig.from_yaml(PARAMS / path)
    small = dict(SMALL, model_width=min(cfg.model_width, 0.125), batch_size=8,
                 data_root=str(tmp_path / "data"), results_dir=str(tmp_path / "results"),
                 run_name=Path(path).stem, classes_per_client=1)
    result = run_experiment(cfg.replace(**small))
    assert result.summary["rounds_completed"] == 1
    if cfg.pruning_levels:  # every level evaluated (at most the 3 clients' levels)
        assert len(result.summary["widths"]) >= 2


def test_reproduce_batch_end_to_end_at_a_tiny_scale(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "fedprune_core", "batch", "run", "--params",
         *sorted(map(str, (PARAMS / "mcmahan").glob("*.yaml"))), "--name", "reproduce_mcmahan",
         "--jobs", "2", "--results_dir", str(results), "--set", "rounds=1", "--set",
         "data_fraction=0.02", "--set", "eval_every=1", "--set",
         "test_samples=300"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    paths = write_reproduce(results / "reproduce_mcmahan", paper="mcmahan")
    assert paths["csv"] == results / "reproduce_mcmahan" / "reproduce.csv"
    table = pd.read_csv(paths["csv"])
    assert sorted(table["E"]) == [1, 5, 20] and set(table["B"]) == {10}
    assert dict(zip(table["E"], table["Rounds to 99% (paper)"])) == {1: 350, 5: 229, 20: 173}
    assert (table["Rounds to 99% (ours)"] == "not reached (0/1 seeds)").all()  # after 1 round
    assert "Rounds to 99% (paper)" in paths["md"].read_text()


def test_make_reproduce_heterofl_mnist_runs_every_row_for_one_round(tmp_path):
    """`make reproduce PAPER=heterofl_mnist` (Flower's setting, every row of its table) for one
    round on a few MNIST samples: the batch, then the table beside Flower's numbers."""
    small = ("num_clients=4 clients_per_round=4 data_fraction=0.005 local_epochs=1 batch_size=32 "
             "test_samples=100 norm_stats_samples=50 eval_every=1")
    proc = subprocess.run(["make", "--no-print-directory", "reproduce", "PAPER=heterofl_mnist",
                           "ROUNDS=1", f"SET={small}", f"RESULTS={tmp_path / 'results'}",
                           "JOBS=2"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results" / "reproduce_heterofl_mnist" / "reproduce.csv")
    assert list(table["Model mix"]) == ["a", "a-e", "a-b-c-d-e", "b", "c", "d", "e"]
    assert list(table["Global acc. (%) (Flower)"]) == [98.87, 98.9, 98.5, 98.81, 97.14, 97.58,
                                                      96.5]
    assert (table["Rounds run"] == 1).all() and (table["Seeds"] == 1).all()
    ours = pd.to_numeric(table["Global acc. (%) (ours, tail)"])  # one seed: a number, no +-
    assert ours.between(0, 100).all() and (ours.round(2) == ours).all()
