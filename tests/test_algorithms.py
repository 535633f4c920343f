"""Properties of pruning, sparsification, the wire format and aggregation, on tiny inputs."""

import numpy as np
import pytest
import torch

from fedprune_core.data.catalog import DATASETS
from fedprune_core.fl import wire
from fedprune_core.fl.client import residual_after
from fedprune_core.fl.training import RoundTraining, train
from fedprune_core.methods.aggregate.fedavg import FedAvg
from fedprune_core.methods.compress.base import num_kept, topk_exact
from fedprune_core.models.net import ParamLayout, TableNet, flat_params, model_from_flat
from fedprune_core.models.zoo import model_spec
from helpers import KINDS, LAYOUT, SPEC, global_vector, method, planner, random_data

SHAPE = SPEC


def compress(delta, residual, segments, kinds, cfg, generator):
    """Error feedback + compression as a client runs them: (sent positions, values, residual)."""
    combined = delta if residual is None else delta + residual
    out = method("compress", **cfg).compress(combined, segments, kinds, generator)
    return out, (residual_after(combined, out) if residual is not None else None)


# --- structured pruning --------------------------------------------------------------------

def test_structured_sub_model_is_smaller_and_ranked_by_l1():
    g = global_vector()
    plan = planner(g, pruning_mode="structured").plan(0.5)
    assert plan.spec.widths == {"conv1": 16, "conv2": 32, "fc1": 128}
    assert len(plan.coords) == ParamLayout(plan.spec).size < LAYOUT.size
    norms = LAYOUT.views(g)["conv2.weight"].abs().flatten(1).sum(1)
    kept = plan.keep["conv2"]
    dropped = torch.tensor([i for i in range(64) if i not in set(kept.tolist())])
    assert norms[kept].min() >= norms[dropped].max()


def test_structured_extract_then_expand_round_trip():
    g = global_vector()
    plan = planner(g).plan(0.4)
    sub = model_from_flat(plan.spec, g[plan.coords])
    # the extracted sub-model's tensors are the global tensors' kept rows/columns
    views = LAYOUT.views(g)
    k1, k2, kh = plan.keep["conv1"], plan.keep["conv2"], plan.keep["fc1"]
    assert torch.equal(sub.conv2.weight.detach(), views["conv2.weight"][k2][:, k1])
    assert torch.equal(sub.fc2.weight.detach(), views["fc2.weight"][:, kh])
    fc1_cols = (k2[:, None] * 49 + torch.arange(49)).flatten()
    assert torch.equal(sub.fc1.weight.detach(), views["fc1.weight"][kh][:, fc1_cols])
    # train-free round trip: expanding the sub-model back leaves every coordinate as it was
    expanded = g.clone()
    expanded[plan.coords] = flat_params(sub)
    assert torch.equal(expanded, g)
    # a changed sub-model changes exactly the kept coordinates
    expanded[plan.coords] = flat_params(sub) + 1.0
    changed = (expanded != g).nonzero().squeeze(1)
    assert torch.equal(changed, torch.sort(plan.coords)[0])


def test_structured_sub_model_computes_what_the_masked_full_model_computes():
    g = global_vector()
    plan = planner(g).plan(0.6)
    masked = torch.zeros_like(g)
    masked[plan.coords] = g[plan.coords]
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        sub_out = model_from_flat(plan.spec, g[plan.coords])(x)
        full_out = model_from_flat(SHAPE, masked)(x)
    torch.testing.assert_close(sub_out, full_out, rtol=1e-4, atol=1e-5)


def test_contribution_mask_covers_exactly_the_kept_coordinates():
    g = global_vector()
    plan = planner(g).plan(0.5)
    update = wire.Decoded(0, 10, plan, plan.coords, torch.ones(len(plan.coords)))
    new, _, trained = FedAvg().aggregate(g, [update], {})
    assert torch.equal(trained.nonzero().squeeze(1), torch.sort(plan.coords)[0])
    moved = (new != g)
    assert moved.sum() == len(plan.coords) == len(torch.unique(plan.coords))
    assert moved[plan.coords].all()


# --- unstructured pruning ------------------------------------------------------------------

def test_unstructured_masks_prune_smallest_weights_and_stay_zero_after_training():
    g = global_vector()
    hp = RoundTraining(local_epochs=2, batch_size=16, lr=0.1, momentum=0.9)
    plan = planner(g, pruning_mode="unstructured").plan(0.5)
    masks = [plan.masks[s.name] for s in LAYOUT]
    w = LAYOUT.views(g)["fc1.weight"]
    m = plan.masks["fc1.weight"]
    assert int((m == 0).sum()) == int(0.5 * w.numel())
    assert w[m == 0].abs().max() <= w[m == 1].abs().min()
    assert torch.all(plan.masks["fc1.bias"] == 1)
    model = model_from_flat(SHAPE, g)
    train(model, random_data(64), DATASETS["mnist"], hp, torch.Generator().manual_seed(0), masks)
    for p, mask in zip(model.parameters(), masks):
        assert torch.all(p.detach()[mask == 0] == 0)
        assert torch.any(p.detach()[mask == 1] != 0)
    assert len(plan.coords) == int(sum(mk.sum() for mk in masks))
    seed_mode = planner(g, pruning_mode="unstructured", unstructured_contribution="all",
                        error_feedback=False).plan(0.5)
    assert len(seed_mode.coords) == LAYOUT.size


# --- sparsification ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["topk", "random", "cost_weighted", "stc"])
@pytest.mark.parametrize("sparsity", [0.5, 0.95, 0.99])
def test_exactly_k_coordinates_are_sent(name, sparsity):
    segments = [s.numel for s in LAYOUT]
    x = torch.randn(LAYOUT.size)
    x[:1000] = 0.5  # many ties
    picked = method("compress", sparsify_method=name, sparsity_ratio=sparsity).compress(
        x, segments, KINDS, torch.Generator().manual_seed(1)).positions
    if name == "cost_weighted":
        expected = num_kept(LAYOUT.size, sparsity)
    else:
        expected = sum(num_kept(n, sparsity) for n in segments)
    assert len(picked) == expected == len(torch.unique(picked))
    assert torch.all(picked[1:] > picked[:-1])


def test_topk_breaks_ties_by_index_and_keeps_the_largest():
    scores = torch.tensor([1.0, 3.0, 2.0, 2.0, 2.0, 0.0])
    assert topk_exact(scores, 3).tolist() == [1, 2, 3]
    assert topk_exact(scores, 1).tolist() == [1]
    assert topk_exact(scores, 6).tolist() == list(range(6))


def test_cost_weighted_needs_fc_coordinates_to_be_larger():
    cw = method("compress", sparsify_method="cost_weighted", sparsity_ratio=0.5, fc_cost=4.0)
    combined = torch.tensor([1.0, 1.0, 3.0, 5.0])  # two conv coords, two fc coords
    picked = cw.compress(combined, [2, 2], ["conv", "linear"], torch.Generator()).positions
    assert picked.tolist() == [0, 3]  # 1/1 = 1 beats 3/4; 5/4 is the best


@pytest.mark.parametrize("name", ["topk", "random", "cost_weighted", "stc", "qsgd", "none"])
def test_error_feedback_conserves_mass(name):
    cfg = dict(sparsify_method=name, sparsity_ratio=0.9)
    segments, kinds = [30, 70], ["conv", "linear"]
    delta, residual = torch.randn(100), torch.randn(100)
    out, left = compress(delta, residual, segments, kinds, cfg, torch.Generator().manual_seed(0))
    sent = torch.zeros(100)
    sent[slice(None) if out.positions is None else out.positions] = out.values
    torch.testing.assert_close(sent + left, delta + residual, rtol=0, atol=1e-6)
    if name in ("topk", "random", "cost_weighted"):  # exact values sent: nothing left there
        torch.testing.assert_close(sent + left, delta + residual, rtol=0, atol=0)
        assert torch.all(left[out.positions] == 0)


# --- wire format ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode, sparsity, name", [
    ("structured", 0.95, "topk"), ("unstructured", 0.9, "topk"), ("structured", 0.0, "none"),
    ("none", 0.99, "topk"), ("structured", 0.9, "stc"), ("unstructured", 0.9, "qsgd"),
    ("none", 0.0, "none")])
def test_wire_round_trip_is_exact_and_bytes_are_the_message(mode, sparsity, name):
    g = global_vector()
    cfg = dict(pruning_mode=mode, sparsify_method=name, sparsity_ratio=sparsity)
    plans = planner(g, **cfg)
    plan = plans.plan(0.35)
    delta = torch.randn(len(plan.coords))
    compressor = method("compress", **cfg)
    out = compressor.compress(delta, plan.segments, KINDS, torch.Generator())
    msg = wire.encode(plan, 7, 1234, out.values, out.positions, out.payloads, compressor.codec)
    dec = wire.decode(msg, plans, compressor=compressor)
    assert (dec.client_id, dec.num_samples) == (7, 1234)
    expected_coords = plan.coords if out.positions is None else plan.coords[out.positions]
    assert torch.equal(dec.coords, expected_coords)
    assert torch.equal(dec.values, out.values)
    assert torch.equal(dec.plan.coords, plan.coords)
    # the count is what is sent: float32 values are 4 bytes each, plus indices and headers
    if name in ("topk", "none"):
        assert len(msg) >= 4 * len(out.values)
    if name == "none" and mode == "none":
        assert len(msg) - 4 * LAYOUT.size < 100


def test_wire_picks_the_smaller_index_encoding():
    n = 10_000
    few = np.array([3, 500, 9000])
    many = np.arange(0, n, 2)
    assert len(wire._encode_index_set(few, n)) == 5 + 3 * 2  # u16 list
    assert len(wire._encode_index_set(many, n)) == 5 + n // 8  # bitmap
    for positions in (few, many):
        decoded, _ = wire._decode_index_set(memoryview(wire._encode_index_set(positions, n)), 0, n)
        assert np.array_equal(decoded, positions)


def test_wire_rejects_garbage():
    with pytest.raises(wire.WireError):
        wire.decode(b"XXXX" + bytes(40), planner())


# --- aggregation ---------------------------------------------------------------------------

def test_masked_fedavg_matches_a_hand_computed_mean():
    g = torch.tensor([1.0, 1.0, 1.0, 1.0])

    def upd(n, trained, sent, values):
        class P:  # only the trained coordinates matter to aggregation
            coords = torch.tensor(trained)
        return wire.Decoded(0, n, P, torch.tensor(sent), torch.tensor(values))

    a = upd(100, [0, 1, 2], [0, 2], [1.0, 3.0])  # trained 0,1,2; sent 0 and 2
    b = upd(300, [0, 1], [0, 1], [5.0, -2.0])   # trained 0,1
    new, state, trained = FedAvg("samples", 1.0).aggregate(g, [a, b], {})
    assert state == {} and trained.tolist() == [True, True, True, False]
    expected = [1 + (100 * 1 + 300 * 5) / 400, 1 + (100 * 0 + 300 * -2) / 400, 1 + 3.0, 1.0]
    torch.testing.assert_close(new, torch.tensor(expected))
    uniform = FedAvg("uniform", 0.5).aggregate(g, [a, b], {})[0]
    torch.testing.assert_close(uniform, torch.tensor([1 + 0.5 * 3, 1 + 0.5 * -1, 1 + 0.5 * 3, 1]))


# --- adaptive ratios -----------------------------------------------------------------------

def test_warm_start_gives_slow_clients_high_ratios():
    cfg = dict(pruning_ratio=0.4, min_pruning_ratio=0.1, max_pruning_ratio=0.8)
    ratios = method("ratio", **cfg).initial(np.array([1.0, 5.0, 3.0]))  # simulated seconds
    np.testing.assert_allclose(ratios, [0.1, 0.7, 0.4])
    assert np.all(method("ratio", **cfg, adaptive_ratio=False).initial(np.ones(3)) == 0.4)
    assert np.all(method("ratio", **cfg, pruning_mode="none").initial(np.ones(3)) == 0.0)


def test_online_controller_steps_toward_the_deadline():
    online = method("ratio", ratio_step=0.05, adaptive_ratio_online=True)
    assert online.next(0.4, 12.0, 10.0) == pytest.approx(0.45)
    assert online.next(0.4, 5.0, 10.0) == pytest.approx(0.35)
    assert online.next(0.4, 9.8, 10.0) == pytest.approx(0.4)
    assert online.next(0.8, 99.0, 10.0) == pytest.approx(0.8)
    assert method("ratio").next(0.4, 99.0, 10.0) == 0.4  # warm start alone never moves


def test_model_shapes_and_flops():
    model = TableNet(SHAPE)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert LAYOUT.size == sum(p.numel() for p in model.parameters()) == 824_458
    cifar = model_spec("simple_cnn", DATASETS["cifar10"])
    assert TableNet(cifar)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    small = SHAPE.with_widths({"conv1": 16, "conv2": 32, "fc1": 128})
    assert small.train_flops_per_sample() < 0.3 * SHAPE.train_flops_per_sample()
    assert SHAPE.forward_macs() == 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 3136 * 256 + 2560


def test_training_never_writes_into_the_received_vector():
    """Every layer's delta is real: the local model owns a copy of what it received."""
    g = global_vector()
    received = g.clone()
    model = model_from_flat(SHAPE, received)
    train(model, random_data(32), DATASETS["mnist"],
          RoundTraining(local_epochs=1, batch_size=16, lr=0.1), torch.Generator().manual_seed(0))
    assert torch.equal(received, g)
    delta = LAYOUT.views(flat_params(model) - g)
    for name, d in delta.items():
        assert d.abs().sum() > 0, name
