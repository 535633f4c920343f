"""End-to-end runs on real MNIST (10% of it, a few clients): artifacts, determinism, safety."""

import json
import math

import pandas as pd
import pytest
import torch
from PIL import Image

from fedprune_core.run.artifacts import RunExistsError
from fedprune_core.fl.training import DivergenceError
from fedprune_core.config import ConfigError
from fedprune_core.run.loop import run_experiment
from fedprune_core.run.summary import TIMING_COLUMNS

METRIC_COLUMNS = ["round", "test_accuracy", "test_loss", "train_loss", "avg_transmitted_ratio",
                  "avg_pruning_ratio", "avg_round_time_sec", "uplink_bytes", "uplink_dense_bytes",
                  "cumulative_uplink_bytes", "downlink_bytes", "client_train_flops",
                  "simulated_round_time_sec"]
TIMING = list(TIMING_COLUMNS["metrics"])
FILES = ["config.json", "metrics.csv", "clients.csv", "diagnostics.csv", "widths.csv",
         "partition.csv", "run.log", "summary.json",
         "final_model.pt", "accuracy_curve.png", "compression_pruning_curve.png",
         "round_time_curve.png", "experiment_dashboard.png", "partition.png"]


@pytest.mark.figures
def test_two_round_run_writes_every_artifact(tiny_config):
    result = run_experiment(tiny_config(run_name="hybrid"))
    d = result.run_dir
    for name in FILES:
        assert (d / name).stat().st_size > 0, name
    assert not (d / "checkpoint.pt").exists()
    m = pd.read_csv(d / "metrics.csv")
    assert list(m["round"]) == [1, 2] and set(METRIC_COLUMNS) <= set(m.columns)
    assert m.test_accuracy.between(0, 100).all()
    # 2 rounds under the default tail of 5: the tail is both rounds, and the run says so
    summary = json.loads((d / "summary.json").read_text())
    assert (summary["tail_rounds"], summary["tail_rounds_asked"],
            summary["tail_shorter_than_asked"]) == (2, 5, True)
    assert summary["tail_test_accuracy"] == pytest.approx(m.test_accuracy.mean())
    assert "fewer than tail_rounds = 5" in (d / "run.log").read_text()
    assert (m.cumulative_uplink_bytes == m.uplink_bytes.cumsum()).all()
    assert (m.uplink_dense_bytes == 2 * 4 * 824_458).all()
    assert (m.uplink_bytes < m.uplink_dense_bytes / 10).all()  # 95% sparsity
    c = pd.read_csv(d / "clients.csv")
    assert len(c) == 4 and c.groupby("round").uplink_bytes.sum().tolist() == m.uplink_bytes.tolist()
    assert (c.train_flops < c.dense_train_flops).all()  # structured pruning saves compute
    summary = json.loads((d / "summary.json").read_text())
    assert summary["final_test_accuracy"] == pytest.approx(m.test_accuracy.iloc[-1])
    assert summary["tail_test_accuracy"] == pytest.approx(m.test_accuracy.mean())  # 2 rounds <= 5
    assert summary["tail_rounds"] == 2 and summary["best_is_selected_on_test_set"]
    diag = pd.read_csv(d / "diagnostics.csv")
    assert list(diag.columns) == ["round", "metric", "class", "value"]  # classes alone
    assert set(diag.metric) == {"class_recall", "predicted_share"}
    shares = diag[diag.metric == "predicted_share"].groupby("round").value.sum()
    assert shares.round(6).tolist() == [100.0, 100.0]
    widths = pd.read_csv(d / "widths.csv")  # a 2-round run's tail is both rounds: every
    # client's ratio (4 clients, 0.1 to 0.7), the ones that trained among them
    assert set(widths[widths.ratio > 0].ratio.round(6)) == {0.1, 0.3, 0.5, 0.7}
    assert set(c.pruning_ratio.round(6)) <= {0.1, 0.3, 0.5, 0.7}
    assert (widths[widths.ratio == 0].test_accuracy.tolist() == m.test_accuracy.tolist())
    assert summary["total_uplink_mb"] == pytest.approx(m.uplink_bytes.sum() / 1e6)
    assert summary["compression_x"] > 10
    assert all((d / p).exists() or (d.parent.parent / p).exists() or
               __import__("pathlib").Path(p).exists() for p in summary["artifacts"].values())
    config = json.loads((d / "config.json").read_text())
    assert config["sparsity_ratio"] == 0.95 and "torch" in config["_meta"]
    with Image.open(d / "experiment_dashboard.png") as img:
        assert round(img.info["dpi"][0]) == 300
    log = (d / "run.log").read_text()
    assert "Round   2/2" in log and "client" in log and "Finished" in log
    model = torch.load(d / "final_model.pt")
    assert model["state_dict"]["fc2.weight"].shape == (10, 256)


def _numbers(path):
    return pd.read_csv(path).drop(columns=TIMING, errors="ignore")


@pytest.mark.parametrize("method", [dict(), dict(pruning_mode="unstructured", sparsify_method="random")])
def test_same_seed_same_metrics(tiny_config, method):
    a = run_experiment(tiny_config(run_name="a", **method))
    b = run_experiment(tiny_config(run_name="b", **method))
    pd.testing.assert_frame_equal(_numbers(a.run_dir / "metrics.csv"), _numbers(b.run_dir / "metrics.csv"))
    c = run_experiment(tiny_config(run_name="c", seed=1, **method))
    assert not _numbers(a.run_dir / "metrics.csv").equals(_numbers(c.run_dir / "metrics.csv"))


def test_ablations_share_clients_and_data_order(tiny_config):
    """Common random numbers: the method changes, the sampled clients do not."""
    a = run_experiment(tiny_config(run_name="hyb"))
    b = run_experiment(tiny_config(run_name="fedavg", pruning_mode="none", sparsify_method="none"))
    assert a.clients.client_id.tolist() == b.clients.client_id.tolist()
    assert (b.clients.transmitted_ratio == 1.0).all()
    assert b.summary["compression_x"] == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("method", [
    {}, dict(aggregation="fedavgm", structured_selection="rolex", sparsify_method="stc")])
def test_resume_after_interruption_reproduces_the_result(tiny_config, method):
    tiny = lambda **kw: tiny_config(**method, **kw)  # noqa: E731
    full = run_experiment(tiny(run_name="full", rounds=3))

    def interrupt(r, row):
        if r == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_experiment(tiny(run_name="cut", rounds=3), on_round_end=interrupt)
    cut = full.run_dir.parent / "cut"
    assert (cut / "checkpoint.pt").exists() and not (cut / "summary.json").exists()
    # tensors and plain values only: it loads without unpickling any object
    state = torch.load(cut / "checkpoint.pt", weights_only=True)["state"]
    assert state["round"] == 2 and len(state["clients"]["ratios"]) == 4
    assert set(state["aggregator"]) == ({"momentum"} if method else set())
    assert state["clients"]["overlay"]  # the residuals of round 2's cohort
    assert len(pd.read_csv(cut / "metrics.csv")) == 2  # what it had written is kept
    with pytest.raises(RunExistsError, match="--resume"):
        run_experiment(tiny(run_name="cut", rounds=3))
    with pytest.raises(ConfigError, match="lr"):
        run_experiment(tiny(run_name="cut", rounds=3, resume=True, lr=0.1))
    resumed = run_experiment(tiny(run_name="cut", rounds=3, resume=True))
    pd.testing.assert_frame_equal(_numbers(full.run_dir / "metrics.csv"), _numbers(cut / "metrics.csv"))
    assert "Resuming after round 2" in (cut / "run.log").read_text()
    assert resumed.summary["final_test_accuracy"] == full.summary["final_test_accuracy"]


def test_finished_run_is_never_overwritten_silently(tiny_config):
    first = run_experiment(tiny_config(run_name="keep", rounds=1))
    before = (first.run_dir / "summary.json").read_text()
    with pytest.raises(RunExistsError, match="--overwrite"):
        run_experiment(tiny_config(run_name="keep", rounds=1, seed=5))
    assert (first.run_dir / "summary.json").read_text() == before
    again = run_experiment(tiny_config(run_name="keep", rounds=1, seed=5, overwrite=True))
    assert json.loads((again.run_dir / "summary.json").read_text())["seed"] == 5


def test_divergence_stops_with_a_clear_message_and_keeps_files(tiny_config):
    with pytest.raises(DivergenceError, match="lr"):
        run_experiment(tiny_config(run_name="boom", lr=1e6, rounds=3, pruning_mode="none",
                                   sparsify_method="none"))
    d = tiny_config().results_dir
    run_dir = __import__("pathlib").Path(d) / "boom"
    assert (run_dir / "config.json").exists() and not (run_dir / "summary.json").exists()
    assert "diverged" in (run_dir / "run.log").read_text()


@pytest.mark.parametrize("changes", [
    dict(partition="dirichlet", dirichlet_alpha=0.5),
    dict(partition="iid", pruning_mode="unstructured", unstructured_contribution="all",
         error_feedback=False),
    dict(adaptive_ratio_online=True, sparsify_method="topk", eval_every=2),
    dict(pruning_mode="none", sparsify_method="random", error_feedback=False),
    dict(sparsify_method="qsgd", qsgd_levels=4, structured_selection="first"),
    dict(model="mcmahan_cnn", pruning_mode="none", sparsify_method="stc", batch_size=10),
])
def test_variants_run(tiny_config, changes):
    result = run_experiment(tiny_config(run_name="v", **changes))
    m = result.metrics
    assert len(m) == 2 and not math.isnan(m.test_accuracy.iloc[-1])
    if changes.get("eval_every") == 2:
        assert math.isnan(m.test_accuracy.iloc[0])



def test_a_run_stops_at_its_first_evaluated_round_at_the_target(tiny_config):
    """target_accuracy ends a run at the first *evaluated* round at or above it (round 1 is not
    evaluated at eval_every=2, round 2 is, and any trained model beats 1%); summary.json
    records the round. A target never reached runs to `rounds` and says it was not reached."""
    res = run_experiment(tiny_config(run_name="reached", rounds=6, eval_every=2,
                                     target_accuracy=1.0))
    metrics = pd.read_csv(res.run_dir / "metrics.csv")
    assert metrics["round"].tolist() == [1, 2]
    assert math.isnan(metrics.test_accuracy[0]) and metrics.test_accuracy[1] >= 1.0
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert (summary["target_round"], summary["stopped_at_target"],
            summary["rounds_completed"]) == (2, True, 2)
    assert "Target accuracy 1% reached at round 2" in (res.run_dir / "run.log").read_text()

    res = run_experiment(tiny_config(run_name="not_reached", rounds=2, target_accuracy=100.0))
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert (summary["target_round"], summary["stopped_at_target"],
            summary["rounds_completed"]) == (None, False, 2)


def test_run_metadata_names_torchvision_without_importing_it():
    """config.json records torchvision's version (build label included) read from its
    version.py: importing torchvision kept ~190 MB resident through the run, its peak memory."""
    import subprocess
    import sys

    import torchvision

    code = ("import sys; from fedprune_core.run.artifacts import run_metadata; "
            "print(run_metadata()['torchvision'], 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [torchvision.__version__, "False"]
