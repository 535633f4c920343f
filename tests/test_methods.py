"""The methods added through the registry, each on a hand-computed case: FedRolex, FedAvgM,
STC, QSGD; the model tables; the registry agreeing with the configuration's choices."""

import dataclasses

import numpy as np
import pytest
import torch

from fedprune_core.config import ExperimentConfig
from fedprune_core.data.catalog import DATASETS
from fedprune_core.fl import wire
from fedprune_core.models.plan import Plan
from fedprune_core.methods import names
from fedprune_core.methods.aggregate.fedavg import FedAvg
from fedprune_core.methods.aggregate.fedavgm import FedAvgM
from fedprune_core.methods.compress.qsgd import QSGD
from fedprune_core.methods.compress.stc import SparseTernary
from fedprune_core.methods.compress.topk import TopK
from fedprune_core.methods.extract.rolex import RollingWindow
from fedprune_core.models.net import ParamLayout, TableNet, model_from_flat, init_flat_params
from fedprune_core.models.zoo import model_spec
from helpers import LAYOUT, global_vector, method, planner

HEADER = 21  # magic, kind, client, samples, ratio


def one_tensor_plan(n: int) -> Plan:
    return Plan("unstructured", 0.0, LAYOUT.spec, torch.arange(n), [n])


class _Planner:  # decodes a one-tensor message
    def __init__(self, n):
        self.layout, self.device, self._plan = LAYOUT, torch.device("cpu"), one_tensor_plan(n)

    def plan(self, ratio):
        return self._plan


def send(compressor, values: list[float], generator=None):
    x = torch.tensor(values)
    out = compressor.compress(x, [len(x)], ["conv"], generator or torch.Generator())
    msg = wire.encode(one_tensor_plan(len(x)), 1, 10, out.values, out.positions, out.payloads,
                      compressor.codec)
    return out, msg, wire.decode(msg, _Planner(len(x)), compressor=compressor)


# --- FedRolex -------------------------------------------------------------------------------

def test_rolling_window_moves_one_unit_a_round_and_wraps():
    weight = torch.zeros(4, 3)
    rolex = RollingWindow()
    kept = {r: sorted(rolex.unit_order(weight, r)[:2].tolist()) for r in (1, 2, 3, 4, 5)}
    assert kept == {1: [0, 1], 2: [1, 2], 3: [2, 3], 4: [0, 3], 5: [0, 1]}


def test_rolex_plans_roll_over_rounds_in_every_layer():
    g = global_vector()
    keep = {r: planner(g, r, structured_selection="rolex").plan(0.5).keep for r in (1, 2, 32)}
    assert keep[1]["conv1"].tolist() == list(range(16))
    assert keep[2]["conv1"].tolist() == list(range(1, 17))
    assert keep[32]["conv1"].tolist() == list(range(15)) + [31]  # start 31, wraps to 0..14
    assert keep[2]["fc1"].tolist() == list(range(1, 129))
    # l1 ranks by the weights, which do not change between these calls: no rolling
    l1 = [planner(g, r).plan(0.5).keep["conv1"] for r in (1, 2)]
    assert torch.equal(l1[0], l1[1])


# --- width rounding ---------------------------------------------------------------------------

def test_kept_units_round_to_a_multiple_when_asked():
    from fedprune_core.models.plan import kept_units
    # at 0.4: 32 * 0.6 = 19.2 -> 19 exact; 19.2 / 8 = 2.4 -> 2 multiples -> 16
    assert [kept_units(w, 0.4) for w in (32, 64, 256)] == [19, 38, 154]
    assert [kept_units(w, 0.4, 8) for w in (32, 64, 256)] == [16, 40, 152]
    assert kept_units(32, 0.9, 8) == 8  # 3.2 units: never below one multiple
    assert kept_units(14, 0.05, 8) == 14  # 13.3 / 8 = 1.66 -> 16, capped at the layer width


def test_width_multiple_gives_every_structured_method_rounded_sub_models():
    g = global_vector()
    for selection in ("l1", "first", "rolex"):
        plan = planner(g, 3, structured_selection=selection, width_multiple=8).plan(0.4)
        assert plan.spec.widths == {"conv1": 16, "conv2": 40, "fc1": 152}
    assert planner(g, 3).plan(0.4).spec.widths == {"conv1": 19, "conv2": 38, "fc1": 154}
    assert method("extract", width_multiple=8).width_multiple == 8


def test_width_multiple_needs_structured_pruning():
    from fedprune_core.config import ConfigError
    with pytest.raises(ConfigError, match="width_multiple: .*structured"):
        ExperimentConfig(pruning_mode="unstructured", width_multiple=8)
    with pytest.raises(ConfigError, match="width_multiple: .*>= 1"):
        ExperimentConfig(width_multiple=0)
    assert "x8" in ExperimentConfig(width_multiple=8).method_label


# --- FedAvgM --------------------------------------------------------------------------------

def test_fedavgm_momentum_by_hand():
    class P:
        coords = torch.tensor([0, 1])

    def upd(values):
        return wire.Decoded(0, 5, P, torch.tensor([0, 1]), torch.tensor(values))

    agg = FedAvgM("samples", 1.0, 0.9)
    params = torch.tensor([1.0, 1.0])
    state = agg.init_state(params)
    assert torch.equal(state["momentum"], torch.zeros(2))
    params, state, _ = agg.aggregate(params, [upd([1.0, -2.0])], state)
    torch.testing.assert_close(params, torch.tensor([2.0, -1.0]))
    params, state, _ = agg.aggregate(params, [upd([1.0, 0.0])], state)
    torch.testing.assert_close(state["momentum"], torch.tensor([1.9, -1.8]))
    torch.testing.assert_close(params, torch.tensor([3.9, -2.8]))
    # momentum 0 is FedAvg, bit for bit
    plain = FedAvg("samples", 0.5).aggregate(params, [upd([0.3, 0.7])], {})[0]
    zero = FedAvgM("samples", 0.5, 0.0).aggregate(params, [upd([0.3, 0.7])],
                                                  {"momentum": torch.zeros(2)})[0]
    assert torch.equal(plain, zero)


# --- STC ------------------------------------------------------------------------------------

def test_stc_sends_sign_times_mean_magnitude_with_one_bit_a_value():
    stc = SparseTernary(sparsity_ratio=0.5)
    out, msg, dec = send(stc, [0.5, -2.0, 0.1, 3.0])
    assert out.positions.tolist() == [1, 3]
    assert out.values.tolist() == [-2.5, 2.5]  # mu = (2 + 3) / 2
    assert dec.coords.tolist() == [1, 3] and dec.values.tolist() == [-2.5, 2.5]
    # header + index set (u8 mode, u32 count, 1-byte bitmap) + mu (f32) + 2 sign bits (1 byte)
    assert len(msg) == HEADER + 5 + 1 + 4 + 1
    _, topk_msg, _ = send(TopK(sparsity_ratio=0.5), [0.5, -2.0, 0.1, 3.0])
    assert len(topk_msg) == HEADER + 5 + 1 + 2 * 4


def test_stc_uplink_is_well_below_topk_at_the_same_sparsity():
    g = global_vector()
    plan = planner(g, pruning_mode="none").plan(0.0)
    delta = torch.randn(len(plan.coords))
    sizes = {}
    for c in (SparseTernary(sparsity_ratio=0.95), TopK(sparsity_ratio=0.95)):
        out = c.compress(delta, plan.segments, [s.kind for s in LAYOUT], torch.Generator())
        sizes[c.name] = len(wire.encode(plan, 0, 1, out.values, out.positions, out.payloads,
                                        c.codec))
    k = sum(_kept_per_tensor(0.95))
    # STC saves 31 of every 32 value bits, paying one float per tensor
    assert sizes["topk"] - sizes["stc"] == 4 * k - sum((n + 7) // 8 + 4 for n in
                                                       _kept_per_tensor(0.95))
    assert sizes["stc"] < 0.6 * sizes["topk"]


def _kept_per_tensor(sparsity):
    from fedprune_core.methods.compress.base import num_kept
    return [num_kept(s.numel, sparsity) for s in LAYOUT]


# --- QSGD -----------------------------------------------------------------------------------

def test_qsgd_levels_bits_and_unbiasedness_by_hand():
    qsgd = QSGD(qsgd_levels=2, qsgd_bucket=0)  # 2 levels: 1 sign bit + 2 level bits a coordinate
    out, msg, dec = send(qsgd, [3.0, -4.0], torch.Generator().manual_seed(0))
    # norm 5: |3|/5*2 = 1.2 -> level 1 or 2 (2.5 or 5); |-4|/5*2 = 1.6 -> -2.5 or -5
    assert out.values[0].item() in (2.5, 5.0) and out.values[1].item() in (-2.5, -5.0)
    assert torch.equal(dec.values, out.values) and out.positions is None
    assert len(msg) == HEADER + 5 + 4 + 1  # index set 'all', norm f32, 6 bits -> 1 byte
    draws = torch.stack([QSGD(qsgd_levels=2, qsgd_bucket=0).compress(
        torch.tensor([3.0, -4.0]), [2], ["conv"], torch.Generator().manual_seed(i)).values
        for i in range(4000)])
    torch.testing.assert_close(draws.mean(0), torch.tensor([3.0, -4.0]), atol=0.1, rtol=0)
    # P(level 2) for the first coordinate is 0.2
    assert abs((draws[:, 0] == 5.0).float().mean().item() - 0.2) < 0.03


def test_qsgd_message_length_is_exact_for_16_levels():
    x = torch.randn(100)
    out, msg, dec = send(QSGD(qsgd_levels=16, qsgd_bucket=0), x.tolist())
    assert len(msg) == HEADER + 5 + 4 + (100 * (1 + 5) + 7) // 8  # ceil(log2 17) = 5 bits
    assert torch.equal(dec.values, out.values)
    assert torch.all((out.values.abs() / torch.linalg.vector_norm(x) * 16 - (
        out.values.abs() / torch.linalg.vector_norm(x) * 16).round()).abs() < 1e-4)


def test_qsgd_buckets_have_one_norm_each():
    # buckets of 2: [3, -4] has norm 5, [0, 1] norm 1, [6] norm 6 (a short last bucket)
    qsgd = QSGD(qsgd_levels=1, qsgd_bucket=2)  # 1 level: a coordinate is 0 or +-norm
    out, msg, dec = send(qsgd, [3.0, -4.0, 0.0, 1.0, 6.0], torch.Generator().manual_seed(0))
    assert out.values[0].item() in (0.0, 5.0) and out.values[1].item() in (0.0, -5.0)
    assert out.values[2:].tolist() == [0.0, 1.0, 6.0]  # |v| == norm: level 1 for sure
    assert torch.equal(dec.values, out.values)
    # three float32 norms, then 5 coordinates x (sign + 1 level bit) = 10 bits -> 2 bytes
    assert len(msg) == HEADER + 5 + 3 * 4 + 2
    big = torch.randn(2000, generator=torch.Generator().manual_seed(1))
    for bucket, norms in ((0, 1), (512, 4), (2000, 1)):
        _, msg, _ = send(QSGD(qsgd_levels=16, qsgd_bucket=bucket), big.tolist())
        assert len(msg) == HEADER + 5 + 4 * norms + (2000 * 6 + 7) // 8


def test_qsgd_buckets_cut_the_quantisation_error_of_a_large_tensor():
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(2))
    errors = {}
    for bucket in (0, 512):
        out, _, _ = send(QSGD(qsgd_levels=16, qsgd_bucket=bucket), x.tolist(),
                         torch.Generator().manual_seed(3))
        errors[bucket] = (torch.linalg.vector_norm(out.values - x) / torch.linalg.vector_norm(x))
    # stochastic rounding's error^2 ~ E|x| x step = 0.8 sqrt(bucket) / s of the signal's: about
    # 4 for one norm over 100k coordinates, at most 1 (0.58 measured) for buckets of 512
    assert 3 < errors[0] < 5 and errors[512] < 0.7


# --- models from a layer table --------------------------------------------------------------

def test_mcmahan_cnn_matches_the_paper():
    spec = model_spec("mcmahan_cnn", DATASETS["mnist"])
    model = TableNet(spec)
    assert sum(p.numel() for p in model.parameters()) == ParamLayout(spec).size == 1_663_370
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert [tuple(p.shape) for p in model.parameters()][::2] == [
        (32, 1, 5, 5), (64, 32, 5, 5), (512, 3136), (10, 512)]
    assert spec.forward_macs() == 28 * 28 * 32 * 25 + 14 * 14 * 64 * 32 * 25 + 3136 * 512 + 5120


def test_vgg_table_gets_structured_extraction_for_free():
    spec = model_spec("vgg_cifar", DATASETS["cifar10"])
    layout = ParamLayout(spec)
    g = init_flat_params(spec, 0)
    cfg = ExperimentConfig(model="vgg_cifar", dataset="cifar10")
    plan = method("extract", **cfg.to_dict()).for_round(layout, g, 1).plan(0.5)
    assert plan.spec.widths == {"conv1": 16, "conv2": 16, "conv3": 32, "conv4": 32,
                                "conv5": 64, "conv6": 64, "fc1": 128}
    masked = torch.zeros_like(g)
    masked[plan.coords] = g[plan.coords]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model_from_flat(plan.spec, g[plan.coords])(x),
                                   model_from_flat(spec, masked)(x), rtol=1e-4, atol=1e-5)


# --- registry and configuration -------------------------------------------------------------

def test_config_choices_are_the_registered_methods():
    from fedprune_core.checks import choices as allowed
    choices = {f.name: set(allowed(f)) for f in dataclasses.fields(ExperimentConfig)}
    assert choices["method"] == {"", *names("method")}
    assert {"fedavg", "hybrid", "heterofl", "fjord", "fedrolex", "federated_dropout",
            "sparsify"} <= choices["method"]
    assert choices["sparsify_method"] == set(names("compress"))
    assert choices["aggregation"] == set(names("aggregate"))
    assert choices["structured_selection"] | {"none", "magnitude"} == set(names("extract"))


def test_each_method_gets_only_its_own_hyperparameters():
    stc = method("compress", sparsify_method="stc", sparsity_ratio=0.9)
    assert dataclasses.asdict(stc) == {"sparsity_ratio": 0.9, "sparsify_scope": "auto"}
    agg = method("aggregate", aggregation="fedavgm", server_momentum=0.5)
    assert dataclasses.asdict(agg) == {"aggregation_weights": "samples", "server_lr": 1.0,
                                       "server_momentum": 0.5, "momentum_untrained": "hold"}
    fjord = method("train", pruning_mode="structured", structured_selection="first",
                   local_training="fjord", fjord_levels=4)
    assert dataclasses.asdict(fjord) == {"fjord_levels": 4, "fjord_distill": False}


@pytest.mark.parametrize("old, hint", [("pruning", "pruning_mode"),
                                       ("sparsification", "sparsify_method"),
                                       ("diagnostic_test_samples", "test_samples")])
def test_replaced_parameters_get_a_clear_error(old, hint):
    from fedprune_core.config import ConfigError
    with pytest.raises(ConfigError, match=f"{old}: .*{hint}"):
        ExperimentConfig.from_dict({old: False})


def test_a_model_that_does_not_fit_the_inputs_is_refused():
    from fedprune_core.config import ConfigError
    np.testing.assert_equal(ExperimentConfig(model="vgg_cifar", dataset="mnist").model,
                            "vgg_cifar")  # 28 -> 14 -> 7 -> 3: fits
    with pytest.raises(ConfigError, match="qsgd_levels"):
        ExperimentConfig(qsgd_levels=0)
