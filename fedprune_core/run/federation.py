"""Everything a run is set up with before its first round: data, partition, model layout,
client profiles, the round deadline, and the methods the configuration names.

This is the one place where the configuration is turned into the federated core's inputs:
each method gets only its own hyper-parameters (methods.registry.build). For models with static
batch norm the test set also carries the training samples evaluation takes its statistics from
(fl/evaluate.py `EvalSet`: the clients' data, or `norm_stats_samples` of it drawn from the
seeded "norm_stats" stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import parse_milestones
from ..config import ExperimentConfig
from ..data.catalog import DATASETS
from ..data.loading import (TensorDataset, class_counts, load_dataset, natural_test_set,
                            natural_writers, partition, subsample)
from ..fl.evaluate import EvalSet
from ..models.plan import kept_units
from ..fl.state import ServerState
from ..fl.store import ClientStates, MemoryStore
from ..fl.systems import auto_deadline, make_profiles, round_times
from ..fl.threads import resolve_threads
from ..fl.training import LocalTraining
from ..fl.types import ClientSlot, Cohort, RoundSetup
from ..methods import build
from ..models.net import ParamLayout, init_flat_params
from ..models.zoo import spec_for
from ..rng import torch_generator
from .widths import width_bins


@dataclass
class Federation:
    cfg: ExperimentConfig
    client_data: list[TensorDataset]
    test: TensorDataset
    counts: np.ndarray  # [client, class] partition table
    layout: ParamLayout
    profiles: list
    full_round_times: np.ndarray  # simulated seconds of a full-model round, per client
    setup: RoundSetup
    width_bins: list  # (ratio, clients) of each deployed width (run/widths.py)
    width_test: TensorDataset  # the test images each width is evaluated on (run/widths.py)

    @property
    def deadline(self) -> float:
        return self.setup.deadline


def method_names(cfg: ExperimentConfig) -> dict[str, str]:
    """The registered method of each kind that the configuration selects."""
    extract = {"none": "none", "unstructured": "magnitude"}.get(cfg.pruning_mode,
                                                               cfg.structured_selection)
    ratio = ("selective" if cfg.participation == "capable"
             else "none" if cfg.pruning_mode == "none" else "levels" if cfg.pruning_levels
             else "online" if cfg.adaptive_ratio_online
             else "warm_start" if cfg.adaptive_ratio else "fixed")
    return {"extract": extract, "compress": cfg.sparsify_method,
            "aggregate": cfg.aggregation, "ratio": ratio, "train": cfg.local_training}


def build_federation(cfg: ExperimentConfig) -> Federation:
    info = DATASETS[cfg.dataset]
    train, test = load_dataset(cfg.dataset, cfg.data_root)
    device = torch.device(cfg.device)
    keep = subsample(train.labels, cfg.data_fraction, cfg.seed)
    groups = None if train.groups is None else train.groups[keep]  # writers (FEMNIST)
    parts = partition(train.labels[keep], cfg.partition, cfg.num_clients, cfg.seed,
                      classes_per_client=cfg.classes_per_client, alpha=cfg.dirichlet_alpha,
                      groups=groups)
    parts = [keep[p] for p in parts]
    if cfg.partition == "natural":
        # LEAF evaluates on the held-out samples of the same users: test the picked writers only.
        # (data_fraction thinned the training samples first; writers it emptied are not picked.)
        test = natural_test_set(test, natural_writers(groups, cfg.num_clients, cfg.seed))
    client_data = [TensorDataset(train.images[p].to(device), train.labels[p].to(device))
                   for p in parts]
    layout = ParamLayout(spec_for(cfg))
    profiles = make_profiles(cfg)
    samples = [len(p) for p in parts]
    deadline = cfg.round_deadline_sec
    if deadline is None:
        deadline = _auto_deadline(cfg, layout, profiles, samples)
    full_times = round_times(profiles, samples, layout.spec.train_flops_per_sample(),
                             layout.size, cfg)
    setup = build_setup(cfg, layout, deadline)
    test = _test_subset(test, cfg.test_samples, cfg.seed)
    norm_data = _norm_data(cfg, layout, client_data)
    test = EvalSet(test.images.to(device), test.labels.to(device), norm_data=norm_data)
    widths = _test_subset(test, cfg.width_test_samples, cfg.seed)
    width_test = test if widths is test else EvalSet(widths.images, widths.labels,
                                                      norm_data=norm_data)
    return Federation(cfg, client_data, test, class_counts(train.labels, parts, info.num_classes),
                      layout, profiles, full_times, setup,
                      _deployed_widths(cfg, setup, full_times), width_test)


def build_setup(cfg: ExperimentConfig, layout: ParamLayout, deadline: float) -> RoundSetup:
    """The round's static side for `cfg`: the methods it names, each given only its own
    hyper-parameters (methods.registry.build). The one way a setup is made: the simulation, a
    deployment's nodes and the benchmark all call this."""
    names = method_names(cfg)
    return RoundSetup(
        layout=layout, info=DATASETS[cfg.dataset], training=build_training(cfg),
        extractor=build("extract", names["extract"], cfg),
        compressor=build("compress", names["compress"], cfg),
        aggregator=build("aggregate", names["aggregate"], cfg),
        ratio_policy=build("ratio", names["ratio"], cfg),
        local_method=build("train", names["train"], cfg),
        error_feedback=cfg.error_feedback and cfg.compression, seed=cfg.seed, deadline=deadline,
        engine=cfg.engine, workers=resolve_threads(cfg.num_threads))


def _test_subset(test: TensorDataset, samples: int, seed: int) -> TensorDataset:
    """`samples` of the test set, stratified and seeded (the set itself for 0 or more)."""
    if samples == 0 or samples >= len(test):
        return test
    keep = subsample(test.labels, samples / len(test), seed).to(test.labels.device)
    return TensorDataset(test.images[keep], test.labels[keep])


def _norm_data(cfg: ExperimentConfig, layout: ParamLayout,
               client_data: list[TensorDataset]):
    """The training samples static batch norm's evaluation statistics come from: every
    client's, or `norm_stats_samples` of them (seeded); None for models without batch norm."""
    if not layout.spec.has_norm("bn"):
        return None
    images = torch.cat([d.images for d in client_data])
    labels = torch.cat([d.labels for d in client_data])
    if 0 < cfg.norm_stats_samples < len(labels):
        pick = torch.randperm(len(labels), generator=torch_generator(cfg.seed, "norm_stats"))
        pick = torch.sort(pick[:cfg.norm_stats_samples])[0].to(labels.device)
        images, labels = images[pick], labels[pick]
    return TensorDataset(images, labels)


def _deployed_widths(cfg: ExperimentConfig, setup: RoundSetup, full_times) -> list:
    """The widths clients train, binned (run/widths.py): their first ratios, or with the
    online controller every ratio it can reach."""
    if cfg.pruning_mode != "structured":
        return []
    if cfg.adaptive_ratio_online:
        steps = int(round((cfg.max_pruning_ratio - cfg.min_pruning_ratio) / cfg.ratio_step))
        return width_bins(np.linspace(cfg.min_pruning_ratio, cfg.max_pruning_ratio, steps + 1))
    return width_bins(setup.initial_ratios(full_times))


def build_training(cfg: ExperimentConfig) -> LocalTraining:
    """The clients' hyper-parameters; a schedule (lr_milestones) is resolved per round by
    LocalTraining.for_round."""
    return LocalTraining(cfg.lr, cfg.momentum, cfg.local_epochs, cfg.batch_size, cfg.masked_ce,
                         cfg.weight_decay, cfg.grad_clip_norm,
                         parse_milestones(cfg.lr_milestones), cfg.lr_gamma)


def _auto_deadline(cfg, layout: ParamLayout, profiles, samples: list[int]) -> float:
    base = layout.spec
    if cfg.pruning_mode == "structured" or cfg.participation == "capable":  # the hybrid's
        base = base.with_widths({g: kept_units(w, cfg.pruning_ratio, cfg.width_multiple)
                                 for g, w in base.widths.items()})
    return auto_deadline(profiles, samples, base.train_flops_per_sample(),
                         ParamLayout(base).size, cfg)


def initial_state(fed: Federation, store=None) -> ServerState:
    """Round 0; client residuals go to `store` (fl.store; default: in memory)."""
    params = init_flat_params(fed.layout.spec, fed.cfg.seed).to(fed.cfg.device)
    ratios = fed.setup.initial_ratios(fed.full_round_times)
    clients = ClientStates(tuple(float(r) for r in ratios), store or MemoryStore(),
                           device=params.device)
    return ServerState(0, params, clients,
                       fed.setup.aggregator.init_state(params),
                       torch.zeros(fed.layout.size, dtype=torch.bool, device=params.device))


def sample_clients(cfg: ExperimentConfig, round_idx: int) -> list[int]:
    perm = torch.randperm(cfg.num_clients, generator=torch_generator(cfg.seed, "sampling",
                                                                     round_idx))
    return sorted(perm[: cfg.clients_per_round].tolist())


def cohort(fed: Federation, round_idx: int) -> Cohort:
    return Cohort(round_idx, tuple(ClientSlot(cid, fed.client_data[cid], fed.profiles[cid])
                                   for cid in sample_clients(fed.cfg, round_idx)))
