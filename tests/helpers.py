"""Small builders the method tests share: the SimpleCNN layout, planners and compressors."""

import torch

from fedprune_core.config import ExperimentConfig
from fedprune_core.data.catalog import DATASETS
from fedprune_core.data.loading import TensorDataset
from fedprune_core.methods import build
from fedprune_core.models.net import ParamLayout, init_flat_params
from fedprune_core.models.zoo import model_spec
from fedprune_core.run.federation import method_names

SPEC = model_spec("simple_cnn", DATASETS["mnist"])
LAYOUT = ParamLayout(SPEC)
KINDS = [s.kind for s in LAYOUT]


def global_vector(seed=0):
    return init_flat_params(SPEC, seed)


def method(kind: str, **params):
    """The method of `kind` that a configuration with `params` selects."""
    cfg = ExperimentConfig(**params)
    return build(kind, method_names(cfg)[kind], cfg)


def planner(params=None, round_idx=1, **cfg):
    params = global_vector() if params is None else params
    return method("extract", **cfg).for_round(LAYOUT, params, round_idx)


def random_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randint(0, 255, (n, 1, 28, 28), dtype=torch.uint8, generator=g),
                         torch.randint(0, 10, (n,), generator=g))
