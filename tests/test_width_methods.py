"""The field's width remedies, each on a hand-computed case: HeteroFL's scaler and masked
cross-entropy, FjORD's ordered dropout, Federated Dropout, FedRolex's roll step, FedAvgM on
partial updates; and the accuracy at every deployed width."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from fedprune_core.data.catalog import DatasetInfo
from fedprune_core.data.loading import TensorDataset
from fedprune_core.fl import wire
from fedprune_core.models.plan import output_classes, structured_plan, with_classes
from fedprune_core.fl.training import RoundTraining, train
from fedprune_core.models.net import ParamLayout, TableNet, model_from_flat
from fedprune_core.models.table import Layer, ModelSpec
from fedprune_core.run.widths import evaluation_rounds, width_bins
from helpers import LAYOUT, SPEC, global_vector, method, planner

# A two-layer perceptron on 3 "pixels": hand-computable
TINY_SPEC = ModelSpec("tiny", 3, 1, (Layer("fc1", "linear", 4), Layer("fc2", "linear", 2)))
TINY_INFO = DatasetInfo("", 3, 1, 2, (0.0, 0.0, 0.0), (1.0 / 255, 1.0 / 255, 1.0 / 255), 10)


def _tiny_net(seed=0):
    torch.manual_seed(seed)
    return TableNet(TINY_SPEC)


def test_scaler_divides_each_pruned_layers_output_by_its_kept_fraction_while_training():
    net = _tiny_net()
    x = torch.tensor([[[[1.0]], [[-2.0]], [[0.5]]]])  # [1, 3, 1, 1]
    w1, b1, w2, b2 = (p.detach() for p in net.parameters())
    hidden = torch.relu((w1 @ x.flatten() + b1) / 0.5)
    expected = w2 @ hidden + b2
    net.train()
    assert torch.allclose(net(x, scales=[0.5])[0], expected, atol=1e-6)
    net.eval()  # evaluated without it, as HeteroFL evaluates
    plain = w2 @ torch.relu(w1 @ x.flatten() + b1) + b2
    assert torch.allclose(net(x, scales=[0.5])[0], plain, atol=1e-6)


def test_scaler_method_gives_each_groups_kept_fraction():
    plan = planner(pruning_mode="structured").plan(0.4)  # 19/32, 38/64, 154/256 kept
    scaler = method("train", pruning_mode="structured", local_training="scaler")
    assert scaler.scales(plan) == pytest.approx([19 / 32, 38 / 64, 154 / 256])
    full = planner(pruning_mode="structured").plan(0.0)
    assert scaler.scales(full) is None  # the whole model: nothing to scale
    assert method("train", pruning_mode="structured").scales(plan) is None  # plain SGD


def test_fjord_levels_are_nested_widths_up_to_the_clients_own():
    plan = planner(pruning_mode="structured", structured_selection="first").plan(0.3)
    assert [len(plan.keep[g]) for g in SPEC.groups] == [22, 45, 179]  # round(0.7 * width)
    fjord = method("train", pruning_mode="structured", structured_selection="first",
                   local_training="fjord")
    # p = 0.2, 0.4, 0.6: ceil(p * 32, 64, 256); p = 0.8 is above p_max = 22/32; then its own
    assert fjord.levels(plan) == [[7, 13, 52], [13, 26, 103], [20, 39, 154], [22, 45, 179]]
    draw = fjord.widths(plan, torch.Generator().manual_seed(0))
    seen = {tuple(draw()) for _ in range(200)}
    assert seen == {tuple(w) for w in fjord.levels(plan)}  # uniform over the levels


def test_a_sliced_width_computes_the_nested_sub_model_and_trains_only_its_units():
    flat = global_vector()
    model = model_from_flat(SPEC, flat)
    x = torch.randn(6, 1, 28, 28).to(memory_format=torch.channels_last)
    widths = [10, 20, 100]
    sub_plan = structured_plan(LAYOUT, {g: torch.arange(w) for g, w in zip(SPEC.groups, widths)},
                               0.5)
    sub = model_from_flat(sub_plan.spec, flat[sub_plan.coords]).eval()
    model.eval()
    assert torch.equal(model(x, widths=widths), sub(x))
    masks = [(torch.arange(n) < w).float() for n, w in zip((32, 64, 256), widths)]
    assert torch.allclose(model(x, unit_masks=masks), sub(x), atol=1e-5)  # the cohort's way
    # one SGD step at that width moves no weight outside its units
    model.train()
    data = TensorDataset(torch.randint(0, 255, (8, 1, 28, 28), dtype=torch.uint8),
                         torch.arange(8) % 10)
    from fedprune_core.data.catalog import DATASETS
    train(model, data, DATASETS["mnist"], RoundTraining(lr=0.1, local_epochs=1, batch_size=8),
          torch.Generator().manual_seed(0), widths=lambda: widths)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    outside = torch.ones(LAYOUT.size, dtype=torch.bool)
    outside[sub_plan.coords] = False
    assert torch.equal(after[outside], flat[outside]) and not torch.equal(after, flat)


def test_fjord_flops_count_each_steps_width_and_distillation_the_teacher_too():
    from fedprune_core.data.catalog import DATASETS

    model = model_from_flat(SPEC, global_vector())
    data = TensorDataset(torch.randint(0, 255, (10, 1, 28, 28), dtype=torch.uint8),
                         torch.arange(10))
    hp = RoundTraining(lr=0.01, local_epochs=1, batch_size=4)  # batches of 4, 4, 2
    narrow = [8, 16, 64]
    flops_narrow = SPEC.with_widths(dict(zip(SPEC.groups, narrow))).train_flops_per_sample()
    _, flops = train(model, data, DATASETS["mnist"], hp, torch.Generator().manual_seed(0),
                     widths=lambda: narrow)
    assert flops == 10 * flops_narrow
    _, flops = train(model, data, DATASETS["mnist"], hp, torch.Generator().manual_seed(0),
                     widths=lambda: narrow, distill=True)
    assert flops == 10 * (flops_narrow + SPEC.train_flops_per_sample())


def test_masked_ce_trains_and_sends_only_the_clients_classes_and_decodes_them():
    plan = planner(pruning_mode="structured", structured_selection="first").plan(0.5)
    restricted = with_classes(LAYOUT, plan, torch.tensor([7, 2]))
    assert output_classes(restricted).tolist() == [2, 7]
    assert restricted.spec.layers[-1].width == 2
    fc2 = {s.name: s for s in LAYOUT}["fc2.weight"]
    rows = (restricted.coords[(restricted.coords >= fc2.offset)
                              & (restricted.coords < fc2.offset + fc2.numel)] - fc2.offset) // 256
    assert set(rows.tolist()) == {2, 7}
    assert len(restricted.coords) == len(plan.coords) - 8 * (128 + 1)  # 8 classes' rows gone
    message = wire.encode(restricted, 3, 10, torch.arange(len(restricted.coords),
                                                          dtype=torch.float32))
    decoded = wire.decode(message, planner(pruning_mode="structured",
                                           structured_selection="first"))
    assert torch.equal(decoded.plan.coords, restricted.coords)
    assert output_classes(decoded.plan).tolist() == [2, 7]


def test_masked_ce_maps_labels_onto_the_clients_outputs():
    net = TableNet(TINY_SPEC.with_widths({"fc2": 2}))
    data = TensorDataset(torch.zeros(4, 3, 1, 1, dtype=torch.uint8), torch.tensor([5, 9, 5, 9]))
    info = DatasetInfo("", 3, 1, 10, (0.0,) * 3, (1 / 255,) * 3, 10)
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    loss, _ = train(net, data, info, RoundTraining(lr=0.0, local_epochs=1, batch_size=4),
                    torch.Generator().manual_seed(0), classes=torch.tensor([5, 9]))
    assert loss == pytest.approx(math.log(2))  # zero logits over the client's 2 classes


def test_masked_outputs_are_averaged_over_the_clients_that_have_the_class():
    """Two clients with classes {0, 1} and {1, 2} send deltas 1 and 3 on every coordinate: the
    output rows of class 0 average client A alone (1), of class 1 both (2), of class 2 B (3)."""
    spec = ModelSpec("t", 3, 1, (Layer("fc1", "linear", 2), Layer("fc2", "linear", 3)))
    layout = ParamLayout(spec)
    full = {"fc1": torch.arange(2)}
    plans = [with_classes(layout, structured_plan(layout, full, 0.0), torch.tensor(c))
             for c in ([0, 1], [1, 2])]
    from fedprune_core.methods.aggregate.fedavg import masked_mean

    class U:
        def __init__(self, plan, value):
            self.plan, self.coords, self.num_samples = plan, plan.coords, 1
            self.values = torch.full((len(plan.coords),), value)
    step, trained = masked_mean(torch.zeros(layout.size), [U(plans[0], 1.0), U(plans[1], 3.0)],
                                "samples")
    views = layout.views(step)
    assert views["fc2.weight"][:, 0].tolist() == [1.0, 2.0, 3.0]
    assert views["fc2.bias"].tolist() == [1.0, 2.0, 3.0]
    assert views["fc1.weight"].flatten().tolist() == [2.0] * 6 and bool(trained.all())


def test_federated_dropout_draws_a_sub_model_per_client_and_round():
    kw = dict(pruning_mode="structured", structured_selection="random", seed=3)
    p = planner(round_idx=2, **kw)
    a, b = p.plan(0.5, client=1), p.plan(0.5, client=2)
    assert [len(a.keep[g]) for g in SPEC.groups] == [16, 32, 128]  # kept_units(w, 0.5)
    assert not torch.equal(a.keep["fc1"], b.keep["fc1"])
    again = planner(round_idx=2, **kw).plan(0.5, client=1)
    assert all(torch.equal(a.keep[g], again.keep[g]) for g in SPEC.groups)  # seeded
    assert not torch.equal(planner(round_idx=3, **kw).plan(0.5, client=1).keep["fc1"],
                           a.keep["fc1"])


def test_fedrolex_window_rolls_by_its_step():
    rolex = method("extract", pruning_mode="structured", structured_selection="rolex",
                   rolex_step=3)
    weight = torch.zeros(8, 2)
    assert rolex.unit_order(weight, 1).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert rolex.unit_order(weight, 3).tolist() == [6, 7, 0, 1, 2, 3, 4, 5]  # 3 * 2 = 6
    paper = method("extract", pruning_mode="structured", structured_selection="rolex")
    assert paper.unit_order(weight, 3).tolist()[:2] == [2, 3]  # one unit a round


@pytest.mark.parametrize("untrained, expected", [("hold", [1.0, 1.0, 1.0]),
                                                 ("drift", [1.9, 2.71, 3.439])])
def test_fedavgm_on_partial_updates(untrained, expected):
    """A coordinate no client trains for three rounds, with momentum 1.0 already built up:
    held, it neither moves nor decays; drifting, it moves on the old momentum."""
    agg = method("aggregate", aggregation="fedavgm", server_momentum=0.9,
                 momentum_untrained=untrained)
    params, state = torch.tensor([1.0, 0.0]), {"momentum": torch.tensor([1.0, 0.0])}

    class Update:  # trains coordinate 1 only, by +0.5
        plan = type("P", (), {"coords": torch.tensor([1])})()
        coords, values, num_samples = torch.tensor([1]), torch.tensor([0.5]), 1
    values = []
    for _ in range(3):
        params, state, trained = agg.aggregate(params, [Update()], state)
        values.append(round(float(params[0]), 4))
        assert trained.tolist() == [False, True]
    assert values == pytest.approx(expected, abs=1e-4)
    assert float(state["momentum"][0]) == pytest.approx(1.0 if untrained == "hold" else 0.729)


def test_width_bins_by_hand():
    assert width_bins([0.3, 0.1, 0.3]) == [(0.1, 1), (0.3, 2)]
    many = np.linspace(0.1, 0.7, 20)  # 20 ratios in 8 equal-width bins of 0.075
    bins = width_bins(many)
    assert len(bins) == 8 and sum(n for _, n in bins) == 20
    assert bins[0] == (pytest.approx(np.mean(many[:3])), 3)
    assert evaluation_rounds(20, 1, 5, "tail") == {16, 17, 18, 19, 20}
    assert evaluation_rounds(20, 3, 2, "tail") == {18, 20}  # evaluated: 3, 6, ..., 18, 20
    assert evaluation_rounds(5, 2, 5, "every") == {2, 4, 5}
    assert evaluation_rounds(5, 1, 5, "off") == set()


@pytest.mark.figures
def test_each_deployed_width_is_evaluated_beside_the_full_width(tiny_config):
    from fedprune_core.run.loop import run_experiment

    result = run_experiment(tiny_config(run_name="widths", rounds=3, tail_rounds=2,
                                        test_samples=300, local_training="scaler"))
    widths = pd.read_csv(result.run_dir / "widths.csv")
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    assert sorted(widths["round"].unique()) == [2, 3]  # the tail's evaluations
    full = widths[widths.ratio == 0].set_index("round").test_accuracy
    assert full.to_dict() == metrics.set_index("round").test_accuracy.loc[[2, 3]].to_dict()
    ratios = sorted(widths[widths.ratio > 0].ratio.unique())
    assert ratios == pytest.approx([0.1, 0.3, 0.5, 0.7])  # the 4 clients' ratios, 4 widths
    by_width = {w["ratio"]: w for w in result.summary["widths"]}
    for ratio, group in widths.groupby("ratio"):
        assert by_width[ratio]["tail_test_accuracy"] == pytest.approx(group.test_accuracy.mean())
    assert by_width[0.0]["tail_test_accuracy"] == pytest.approx(
        result.summary["tail_test_accuracy"])
    best = result.summary["best_width"]
    assert best["selected_on_test_set"] and best["tail_test_accuracy"] == max(
        w["tail_test_accuracy"] for w in result.summary["widths"])
    clients = pd.read_csv(result.run_dir / "clients.csv")
    assert result.summary["compression_x_trained"] == pytest.approx(
        4 * clients.trained_params.sum() / clients.uplink_bytes.sum())
    assert (result.run_dir / "width_accuracy.png").is_file()
    assert "Tail accuracy at each width" in (result.run_dir / "run.log").read_text()
