"""Numbers a thesis can stand on: the tail headline, never-trained units, diagnostics, the
warm start on simulated time, and the refused all + error-feedback combination."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from fedprune_core.config import ConfigError, ExperimentConfig
from fedprune_core.fl.evaluate import class_report
from fedprune_core.fl.state import ServerState
from fedprune_core.methods.ratio.warm_start import rank_ratios
from fedprune_core.run.diagnostics import never_trained_units
from fedprune_core.run.loop import run_experiment
from fedprune_core.run.summary import tail_accuracy
from helpers import LAYOUT, method


def test_tail_accuracy_is_the_mean_of_the_last_evaluated_rounds():
    nan = float("nan")
    metrics = pd.DataFrame({"round": range(1, 9),
                            "test_accuracy": [10, 20, nan, 64.6, nan, 48.5, 63.8, 70.0]})
    assert tail_accuracy(metrics, 3) == (pytest.approx((48.5 + 63.8 + 70.0) / 3), 3)
    assert tail_accuracy(metrics, 5) == (pytest.approx((20 + 64.6 + 48.5 + 63.8 + 70) / 5), 5)
    assert tail_accuracy(metrics, 50) == (pytest.approx((10 + 20 + 64.6 + 48.5 + 63.8 + 70) / 6),
                                          6)


def test_class_report_on_a_hand_computed_confusion():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = torch.tensor([0, 0, 1, 2, 1, 1, 1, 1, 1, 2])
    recall, share = class_report(predicted, labels, 4)
    np.testing.assert_allclose(recall[:3], [50.0, 100.0, 25.0])
    assert math.isnan(recall[3])  # class 3 is absent from these labels
    np.testing.assert_allclose(share, [20.0, 60.0, 20.0, 0.0])


def test_a_large_federation_partition_is_drawn_as_a_heatmap(tmp_path):
    from fedprune_core.run.plots import partition_plot
    counts = np.zeros((1000, 10), dtype=int)
    counts[np.arange(1000), np.arange(1000) % 10] = 60
    fig = partition_plot(counts)
    ax = fig.axes[0]
    assert len(ax.images) == 1 and len(ax.patches) == 0  # no 10,000 bars
    assert ax.images[0].get_array().shape == (10, 1000)
    assert len(partition_plot(counts[:20]).axes[0].patches) == 200  # bars for a small one


def test_never_trained_units_are_counted_per_layer_and_zero_when_evaluated():
    trained = torch.zeros(LAYOUT.size, dtype=torch.bool)
    views = LAYOUT.views(trained)
    views["conv1.weight"][:30] = True  # units 30, 31 never trained
    views["conv2.weight"][:, :5] = True  # every conv2 unit has some trained weight
    views["fc1.weight"][7] = True  # only unit 7 of fc1
    assert never_trained_units(LAYOUT, trained) == {"conv1": 2, "conv2": 0, "fc1": 255}
    params = torch.randn(LAYOUT.size)
    state = ServerState(3, params, (), {}, trained)
    evaluated = state.evaluated_params()
    assert torch.equal(evaluated[trained], params[trained])
    assert torch.all(evaluated[~trained] == 0)


def test_a_unit_no_client_trains_is_zero_in_the_saved_model(tiny_config):
    # fixed ratio 0.5 with nested sub-models: units 16..31 of conv1 are never trained
    result = run_experiment(tiny_config(run_name="nested", structured_selection="first",
                                        adaptive_ratio=False, pruning_ratio=0.5))
    summary = result.summary
    assert summary["never_trained_units"] == {"conv1": 16, "conv2": 32, "fc1": 128}
    weights = torch.load(result.run_dir / "final_model.pt")["state_dict"]
    assert torch.all(weights["conv1.weight"][16:] == 0) and torch.all(weights["conv1.bias"][16:] == 0)
    assert torch.all(weights["conv1.weight"][:16].abs().sum((1, 2, 3)) > 0)
    assert torch.all(weights["fc2.weight"][:, 128:] == 0)
    log = (result.run_dir / "run.log").read_text()
    assert "Never-trained units (zero in the evaluated model): conv1 16, conv2 32, fc1 128" in log


def test_warm_start_ranks_by_simulated_time_and_keeps_the_mean():
    times = np.array([3.0, 10.0, 1.0, 7.0, 5.0])  # slowest: client 1, fastest: client 2
    ratios = rank_ratios(times, 0.4, 0.1, 0.8)
    assert ratios.argmax() == 1 and ratios.argmin() == 2
    np.testing.assert_allclose(ratios, [0.25, 0.7, 0.1, 0.55, 0.4])  # spread min(0.4, 0.3)
    assert ratios.mean() == pytest.approx(0.4, abs=1e-12)
    policy = method("ratio", pruning_ratio=0.5, min_pruning_ratio=0.2, max_pruning_ratio=0.6)
    assert policy.initial(np.arange(20.0)).mean() == pytest.approx(0.5, abs=1e-12)


def test_warm_start_in_a_run_follows_each_clients_simulated_time(tiny_config):
    from fedprune_core.run.federation import build_federation, initial_state
    cfg = tiny_config(run_name="warm", rounds=1, clients_per_round=4, min_pruning_ratio=0.2)
    fed = build_federation(cfg)
    ratios = np.array([c.ratio for c in initial_state(fed).clients])
    slow_to_fast = np.argsort(-fed.full_round_times)
    assert list(np.argsort(-ratios)) == list(slow_to_fast)
    np.testing.assert_allclose(np.sort(ratios), [0.2, 1 / 3, 7 / 15, 0.6])  # spread 0.2
    result = run_experiment(cfg)
    used = result.clients.set_index("client_id").pruning_ratio.sort_index()
    np.testing.assert_allclose(used.values, ratios)
    assert result.summary["initial_ratio_mean"] == pytest.approx(0.4)
    assert result.summary["initial_ratio_max"] == pytest.approx(0.6)


def test_unstructured_all_with_error_feedback_is_refused():
    with pytest.raises(ConfigError, match="unstructured_contribution: 'all'.*error_feedback"):
        ExperimentConfig(pruning_mode="unstructured", unstructured_contribution="all")
    ok = ExperimentConfig(pruning_mode="unstructured", unstructured_contribution="all",
                          error_feedback=False)
    assert ok.unstructured_contribution == "all"
    ExperimentConfig(pruning_mode="unstructured", unstructured_contribution="all",
                     sparsify_method="none")
