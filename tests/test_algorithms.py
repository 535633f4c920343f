"""Properties of pruning, sparsification, the wire format and aggregation, on tiny inputs."""

import numpy as np
import pytest
import torch

from fedprune_core.fl import server, wire
from fedprune_core.fl.client import train
from fedprune_core.config import ExperimentConfig
from fedprune_core.data.loading import TensorDataset
from fedprune_core.data.catalog import DATASETS
from fedprune_core.models.layers import ModelShape, ParamLayout, SimpleCNN, flat_params, init_flat_params, model_from_flat
from fedprune_core.fl.pruning import Pruner, initial_ratios, online_ratio
from fedprune_core.fl.sparsification import compress, num_kept, select, topk_exact

SHAPE = ModelShape(1, 28, 10)
LAYOUT = ParamLayout(SHAPE)


def global_vector(seed=0):
    return init_flat_params(SHAPE, seed)


# --- structured pruning --------------------------------------------------------------------

def test_structured_sub_model_is_smaller_and_ranked_by_l1():
    g = global_vector()
    plan = Pruner(LAYOUT, g, ExperimentConfig(pruning_mode="structured")).plan(0.5)
    assert plan.shape.widths == (16, 32, 128)
    assert len(plan.coords) == ParamLayout(plan.shape).size < LAYOUT.size
    norms = LAYOUT.views(g)["conv2.weight"].abs().flatten(1).sum(1)
    kept = plan.keep["conv2"]
    dropped = torch.tensor([i for i in range(64) if i not in set(kept.tolist())])
    assert norms[kept].min() >= norms[dropped].max()


def test_structured_extract_then_expand_round_trip():
    g = global_vector()
    plan = Pruner(LAYOUT, g, ExperimentConfig()).plan(0.4)
    sub = model_from_flat(plan.shape, g[plan.coords])
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
    plan = Pruner(LAYOUT, g, ExperimentConfig()).plan(0.6)
    masked = torch.zeros_like(g)
    masked[plan.coords] = g[plan.coords]
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        sub_out = model_from_flat(plan.shape, g[plan.coords])(x)
        full_out = model_from_flat(SHAPE, masked)(x)
    torch.testing.assert_close(sub_out, full_out, rtol=1e-4, atol=1e-5)


def test_contribution_mask_covers_exactly_the_kept_coordinates():
    g = global_vector()
    plan = Pruner(LAYOUT, g, ExperimentConfig()).plan(0.5)
    update = wire.Decoded(0, 10, plan, plan.coords, torch.ones(len(plan.coords)))
    new = server.masked_fedavg(g, [update], "samples", 1.0)
    moved = (new != g)
    assert moved.sum() == len(plan.coords) == len(torch.unique(plan.coords))
    assert moved[plan.coords].all()


# --- unstructured pruning ------------------------------------------------------------------

def test_unstructured_masks_prune_smallest_weights_and_stay_zero_after_training():
    g = global_vector()
    cfg = ExperimentConfig(pruning_mode="unstructured", local_epochs=2, batch_size=16, lr=0.1,
                           momentum=0.9)
    plan = Pruner(LAYOUT, g, cfg).plan(0.5)
    masks = [plan.masks[s.name] for s in LAYOUT]
    w = LAYOUT.views(g)["fc1.weight"]
    m = plan.masks["fc1.weight"]
    assert int((m == 0).sum()) == int(0.5 * w.numel())
    assert w[m == 0].abs().max() <= w[m == 1].abs().min()
    assert torch.all(plan.masks["fc1.bias"] == 1)
    model = model_from_flat(SHAPE, g)
    data = TensorDataset(torch.randint(0, 255, (64, 1, 28, 28), dtype=torch.uint8),
                         torch.randint(0, 10, (64,)))
    train(model, data, DATASETS["mnist"], cfg, torch.Generator().manual_seed(0), masks)
    for p, mask in zip(model.parameters(), masks):
        assert torch.all(p.detach()[mask == 0] == 0)
        assert torch.any(p.detach()[mask == 1] != 0)
    kept = Pruner(LAYOUT, g, cfg).plan(0.5)
    assert len(kept.coords) == int(sum(mk.sum() for mk in masks))
    seed_mode = Pruner(LAYOUT, g, cfg.replace(unstructured_contribution="all")).plan(0.5)
    assert len(seed_mode.coords) == LAYOUT.size


# --- sparsification ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["topk", "random", "cost_weighted"])
@pytest.mark.parametrize("sparsity", [0.5, 0.95, 0.99])
def test_exactly_k_coordinates_are_sent(method, sparsity):
    cfg = ExperimentConfig(sparsify_method=method, sparsity_ratio=sparsity)
    segments = [s.numel for s in LAYOUT]
    costs = [2.0 if s.is_fc else 1.0 for s in LAYOUT]
    x = torch.randn(LAYOUT.size)
    x[:1000] = 0.5  # many ties
    picked = select(x, segments, costs, cfg, torch.Generator().manual_seed(1))
    if cfg.effective_scope == "model":
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
    cfg = ExperimentConfig(sparsify_method="cost_weighted", sparsity_ratio=0.5, fc_cost=4.0)
    combined = torch.tensor([1.0, 1.0, 3.0, 5.0])  # two conv coords, two fc coords
    picked = select(combined, [2, 2], [1.0, 4.0], cfg, torch.Generator())
    assert picked.tolist() == [0, 3]  # 1/1 = 1 beats 3/4; 5/4 is the best


@pytest.mark.parametrize("method", ["topk", "random", "cost_weighted"])
def test_error_feedback_conserves_mass(method):
    cfg = ExperimentConfig(sparsify_method=method, sparsity_ratio=0.9)
    segments, costs = [30, 70], [1.0, 2.0]
    delta, residual = torch.randn(100), torch.randn(100)
    out = compress(delta, residual, segments, costs, cfg, torch.Generator().manual_seed(0))
    sent = torch.zeros(100)
    sent[out.positions] = out.values
    torch.testing.assert_close(sent + out.residual, delta + residual, rtol=0, atol=0)
    assert torch.all(out.residual[out.positions] == 0)
    no_ef = compress(delta, None, segments, costs, cfg.replace(error_feedback=False),
                     torch.Generator().manual_seed(0))
    assert no_ef.residual is None


# --- wire format ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode, sparsity", [("structured", 0.95), ("unstructured", 0.9),
                                            ("structured", 0.0), ("none", 0.99)])
def test_wire_round_trip_is_exact_and_bytes_are_the_message(mode, sparsity):
    g = global_vector()
    cfg = ExperimentConfig(pruning=mode != "none", pruning_mode=mode if mode != "none" else "structured",
                           sparsify_method="topk", sparsity_ratio=sparsity,
                           sparsification=sparsity > 0)
    pruner = Pruner(LAYOUT, g, cfg)
    plan = pruner.plan(0.35)
    delta = torch.randn(len(plan.coords))
    out = compress(delta, None, plan.segments, [1.0] * len(plan.segments), cfg, torch.Generator())
    msg = wire.encode(plan, 7, 1234, out.values, out.positions)
    dec = wire.decode(msg, pruner)
    assert (dec.client_id, dec.num_samples) == (7, 1234)
    expected_coords = plan.coords if out.positions is None else plan.coords[out.positions]
    assert torch.equal(dec.coords, expected_coords)
    assert torch.equal(dec.values, out.values)
    assert torch.equal(dec.plan.coords, plan.coords)
    # the count is what is sent: values are 4 bytes each, plus indices and headers
    assert len(msg) >= 4 * len(out.values)
    if sparsity == 0 and mode == "none":
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
        wire.decode(b"XXXX" + bytes(40), Pruner(LAYOUT, global_vector(), ExperimentConfig()))


# --- aggregation ---------------------------------------------------------------------------

def test_masked_fedavg_matches_a_hand_computed_mean():
    g = torch.tensor([1.0, 1.0, 1.0, 1.0])

    def upd(n, trained, sent, values):
        class P:  # only the trained coordinates matter to aggregation
            coords = torch.tensor(trained)
        return wire.Decoded(0, n, P, torch.tensor(sent), torch.tensor(values))

    a = upd(100, [0, 1, 2], [0, 2], [1.0, 3.0])  # trained 0,1,2; sent 0 and 2
    b = upd(300, [0, 1], [0, 1], [5.0, -2.0])   # trained 0,1
    new = server.masked_fedavg(g, [a, b], "samples", 1.0)
    expected = [1 + (100 * 1 + 300 * 5) / 400, 1 + (100 * 0 + 300 * -2) / 400, 1 + 3.0, 1.0]
    torch.testing.assert_close(new, torch.tensor(expected))
    uniform = server.masked_fedavg(g, [a, b], "uniform", 0.5)
    torch.testing.assert_close(uniform, torch.tensor([1 + 0.5 * 3, 1 + 0.5 * -1, 1 + 0.5 * 3, 1]))


# --- adaptive ratios -----------------------------------------------------------------------

def test_warm_start_gives_weak_clients_high_ratios():
    cfg = ExperimentConfig(pruning_ratio=0.4, min_pruning_ratio=0.1, max_pruning_ratio=0.8)
    ratios = initial_ratios(np.array([5.0, 1.0, 3.0]), cfg)
    np.testing.assert_allclose(ratios, [0.1, 0.8, 0.4])
    assert np.all(initial_ratios(np.ones(3), cfg.replace(adaptive_ratio=False)) == 0.4)
    assert np.all(initial_ratios(np.ones(3), cfg.replace(pruning=False)) == 0.0)


def test_online_controller_steps_toward_the_deadline():
    cfg = ExperimentConfig(ratio_step=0.05)
    assert online_ratio(0.4, 12.0, 10.0, cfg) == pytest.approx(0.45)
    assert online_ratio(0.4, 5.0, 10.0, cfg) == pytest.approx(0.35)
    assert online_ratio(0.4, 9.8, 10.0, cfg) == pytest.approx(0.4)
    assert online_ratio(0.8, 99.0, 10.0, cfg) == pytest.approx(0.8)


def test_model_shapes_and_flops():
    model = SimpleCNN(SHAPE)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert LAYOUT.size == sum(p.numel() for p in model.parameters()) == 824_458
    cifar = ModelShape.for_dataset(DATASETS["cifar10"])
    assert SimpleCNN(cifar)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    small = SHAPE.with_widths({"conv1": 16, "conv2": 32, "fc1": 128})
    assert small.train_flops_per_sample() < 0.3 * SHAPE.train_flops_per_sample()
    assert SHAPE.forward_macs() == 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 3136 * 256 + 2560


def test_training_never_writes_into_the_received_vector():
    """Every layer's delta is real: the local model owns a copy of what it received."""
    g = global_vector()
    received = g.clone()
    model = model_from_flat(SHAPE, received)
    data = TensorDataset(torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8),
                         torch.randint(0, 10, (32,)))
    train(model, data, DATASETS["mnist"], ExperimentConfig(local_epochs=1, batch_size=16, lr=0.1),
          torch.Generator().manual_seed(0))
    assert torch.equal(received, g)
    delta = LAYOUT.views(flat_params(model) - g)
    for name, d in delta.items():
        assert d.abs().sum() > 0, name
