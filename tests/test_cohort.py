"""The cohort engine (fl/cohort.py) against the sequential `client.train`, client by client.

Tiny synthetic MNIST-shaped data; client sizes chosen so that clients take different numbers of
steps and end their epochs on short batches. Tolerance: atol 1e-5 on parameters (the batched
convolutions sum in another order), 1e-5 relative on the mean loss.
"""

import pytest
import torch

from fedprune_core.config import ExperimentConfig
from fedprune_core.data.catalog import DATASETS
from fedprune_core.data.loading import TensorDataset
from fedprune_core.fl.client import DivergenceError, train
from fedprune_core.fl.cohort import CohortJob, train_cohort
from fedprune_core.fl.pruning import Pruner
from fedprune_core.models.layers import (ModelShape, ParamLayout, SimpleCNN, flat_params,
                                         init_flat_params, model_from_flat)
from fedprune_core.rng import torch_generator

INFO = DATASETS["mnist"]
SHAPE = ModelShape(1, 28, 10)
LAYOUT = ParamLayout(SHAPE)
SIZES = (21, 13, 5)  # at batch 8: 3, 2 and 1 steps per epoch, each epoch ending short
ATOL = 1e-5


def synthetic(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
                         torch.randint(0, 10, (n,), generator=g))


def config(**changes) -> ExperimentConfig:
    return ExperimentConfig(**{"lr": 0.05, "momentum": 0.0, "local_epochs": 2, "batch_size": 8,
                               **changes})


def sequential(shape, start, data, cfg, client, masks=None):
    """`client.train` on a model of `shape` holding `start`: (trained flat, loss, generator)."""
    generator = torch_generator(0, "batches", 0, client)
    model = model_from_flat(shape, start)
    loss = train(model, data, INFO, cfg, generator, masks)
    return flat_params(model), loss, generator


def cohort(jobs_in, cfg):
    """train_cohort on (start, mask, data) triples, with the same generators as `sequential`."""
    jobs = [CohortJob(start, mask, data, torch_generator(0, "batches", 0, k))
            for k, (start, mask, data) in enumerate(jobs_in)]
    out = train_cohort(SimpleCNN(SHAPE), jobs, cfg.lr, cfg.momentum, cfg.local_epochs,
                       cfg.batch_size, INFO)
    return out, [job.generator for job in jobs]


def assert_same_client(cohort_flat, cohort_loss, cohort_gen, seq_flat, seq_loss, seq_gen, start):
    assert (seq_flat - start).abs().max() > 100 * ATOL  # the comparison is not vacuous
    torch.testing.assert_close(cohort_flat, seq_flat, rtol=0, atol=ATOL)
    assert cohort_loss == pytest.approx(seq_loss, rel=1e-5)
    assert torch.equal(cohort_gen.get_state(), seq_gen.get_state())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_dense_clients_of_different_sizes_match_sequential(momentum):
    cfg = config(momentum=momentum)
    datas = [synthetic(n, k) for k, n in enumerate(SIZES)]
    starts = [init_flat_params(SHAPE, k) for k in range(len(SIZES))]
    out, gens = cohort([(s, None, d) for s, d in zip(starts, datas)], cfg)
    for k, (start, data) in enumerate(zip(starts, datas)):
        assert_same_client(*out[k], gens[k], *sequential(SHAPE, start, data, cfg, k), start)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_unstructured_masks_match_sequential(momentum):
    cfg = config(momentum=momentum, pruning_mode="unstructured")
    start = init_flat_params(SHAPE, 0)
    pruner = Pruner(LAYOUT, start, cfg)
    plans = [pruner.plan(r) for r in (0.3, 0.7)]
    datas = [synthetic(n, k) for k, n in enumerate(SIZES[:2])]
    masks = [torch.cat([p.masks[s.name].flatten() for s in LAYOUT]) for p in plans]
    out, gens = cohort([(start, m, d) for m, d in zip(masks, datas)], cfg)
    for k, (plan, mask, data) in enumerate(zip(plans, masks, datas)):
        seq = sequential(SHAPE, start, data, cfg, k, [plan.masks[s.name] for s in LAYOUT])
        assert_same_client(*out[k], gens[k], *seq, start)
        assert (out[k][0][mask == 0] == 0).all()  # pruned weights stay zero


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_structured_sub_models_as_masked_full_width_match_the_real_sub_models(momentum):
    """Two structured clients and a dense one in one cohort; each structured client's
    full-width result at plan.coords is its real sub-model's trained parameters."""
    cfg = config(momentum=momentum, pruning_mode="structured")
    glob = init_flat_params(SHAPE, 0)
    pruner = Pruner(LAYOUT, glob, cfg)
    plans = [pruner.plan(0.4), pruner.plan(0.7), pruner.full_plan()]
    datas = [synthetic(n, k) for k, n in enumerate(SIZES)]
    starts, masks = [], []
    for plan in plans:
        start, mask = torch.zeros_like(glob), torch.zeros_like(glob)
        start[plan.coords], mask[plan.coords] = glob[plan.coords], 1.0
        starts.append(start)
        masks.append(None if plan.kind == "none" else mask)
    out, gens = cohort(list(zip(starts, masks, datas)), cfg)
    for k, (plan, start, data) in enumerate(zip(plans, starts, datas)):
        seq_flat, seq_loss, seq_gen = sequential(plan.shape, glob[plan.coords], data, cfg, k)
        flat, loss = out[k]
        assert_same_client(flat[plan.coords], loss, gens[k], seq_flat, seq_loss, seq_gen,
                           glob[plan.coords])
        untrainable = torch.ones_like(glob, dtype=torch.bool)
        untrainable[plan.coords] = False
        assert torch.equal(flat[untrainable], start[untrainable])


def test_one_epoch_and_a_batch_larger_than_every_client():
    cfg = config(local_epochs=1, batch_size=32)
    datas = [synthetic(n, k) for k, n in enumerate(SIZES)]
    start = init_flat_params(SHAPE, 0)
    out, gens = cohort([(start, None, d) for d in datas], cfg)
    for k, data in enumerate(datas):
        assert_same_client(*out[k], gens[k], *sequential(SHAPE, start, data, cfg, k), start)


def test_a_diverging_client_raises_like_train():
    cfg = config()
    start = init_flat_params(SHAPE, 0)
    broken = start.clone()
    broken[0] = float("nan")
    datas = [synthetic(n, k) for k, n in enumerate(SIZES[:2])]
    with pytest.raises(DivergenceError):
        sequential(SHAPE, broken, datas[1], cfg, 1)
    with pytest.raises(DivergenceError, match="job 1"):
        cohort([(start, None, datas[0]), (broken, None, datas[1])], cfg)
