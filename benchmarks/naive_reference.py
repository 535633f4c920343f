"""A seed-like ("naive") implementation of one FedPrune-Sparse experiment, for the benchmark.

This is how the seed's original scripts did the same work, written as a reasonable engineer
would, not a strawman: a torchvision MNIST dataset with per-sample PIL transforms
(ToTensor + Normalize) behind a torch DataLoader, a plain NCHW `nn.Module` (conv -> ReLU ->
pool), structured sub-models rebuilt tensor by tensor, dense deltas, per-tensor `torch.topk`
(or one model-wide top-k for cost-weighted selection) with error-feedback dicts, FedAvg as a
loop over tensors, and evaluation through a DataLoader with batch 1000.

It runs the *same* experiment as `fedprune_core.run.loop.run_experiment` for the configs the
benchmark uses (SimpleCNN; structured (l1 or first) or no pruning; top-k or cost-weighted
sparsification, or none; FedAvg): same partition, same initial weights, same client sampling,
same per-client pruning ratios, the same masked-FedAvg semantics (HeteroFL-style, Diao et al.
2021) and the same k. Setup helpers (partition, profiles, ratio policy, seeds) come from the
core, since they are not what is timed, and which layers form a structured group comes from the
model's layer table (models/zoo.py). The batch order differs (the DataLoader's own seeded
shuffle), so accuracies agree only roughly. It writes no artifacts and draws no figures.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedprune_core.config import ExperimentConfig
from fedprune_core.data.loading import partition, resolve_data_root, subsample
from fedprune_core.data.catalog import DATASETS
from fedprune_core.models.plan import kept_units
from fedprune_core.fl.systems import make_profiles, round_times
from fedprune_core.methods import build
from fedprune_core.methods.compress.base import num_kept
from fedprune_core.models.net import ParamLayout, init_flat_params
from fedprune_core.models.table import ModelSpec
from fedprune_core.models.zoo import model_spec
from fedprune_core.rng import derive_seed
from fedprune_core.run.federation import method_names, sample_clients


class NaiveCNN(nn.Module):
    """The seed's CNN as a naive implementation writes it: NCHW, conv -> ReLU -> pool."""

    def __init__(self, widths=(32, 64, 256), in_channels=1, image_size=28, num_classes=10):
        super().__init__()
        c1, c2, h = widths
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * (image_size // 4) ** 2, h)
        self.fc2 = nn.Linear(h, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


def mnist_datasets(cfg: ExperimentConfig):
    """torchvision datasets with per-sample PIL transforms, as the seed loaded them."""
    import torchvision
    from torchvision import transforms

    info = DATASETS[cfg.dataset]
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    cls = getattr(torchvision.datasets, info.torchvision_class)
    root = str(resolve_data_root(cfg.data_root))
    return (cls(root, train=True, download=True, transform=tf),
            cls(root, train=False, download=True, transform=tf))


# --- structured pruning, one tensor at a time ---------------------------------------------------

def choose_units(global_sd: dict, spec: ModelSpec, ratio: float, selection: str) -> dict:
    """Kept filters / neurons per group (L1 norm, ties to the lower index), sorted."""
    keep = {}
    for group in spec.groups:  # a group is a prunable layer's output units
        w = global_sd[f"{group}.weight"]
        n_keep = kept_units(w.shape[0], ratio)
        if selection == "first":
            keep[group] = torch.arange(n_keep)
            continue
        norms = w.abs().reshape(w.shape[0], -1).sum(1)
        order = torch.sort(norms, descending=True, stable=True)[1]
        keep[group] = torch.sort(order[:n_keep])[0]
    return keep


def _index(keep: dict, spec: ModelSpec, name: str):
    """(out indices, in indices or None) of a tensor of the sub-model, in the global tensor."""
    layer = name.split(".")[0]
    i = next(i for i, entry in enumerate(spec.layers) if entry.name == layer)
    in_group = spec.input_group(i)
    out_idx = keep.get(layer)  # None for the output layer (never pruned)
    if name.endswith("bias") or in_group is None:
        return out_idx, None
    in_idx, unit = keep[in_group], spec.unit_size(i)
    if unit > 1:  # a conv channel flattened into a linear layer brings its spatial map
        in_idx = (in_idx[:, None] * unit + torch.arange(unit)[None, :]).flatten()
    return out_idx, in_idx


def extract_submodel(global_sd: dict, keep: dict, spec: ModelSpec) -> dict:
    sub = {}
    for name, tensor in global_sd.items():
        out_idx, in_idx = _index(keep, spec, name)
        t = tensor
        if out_idx is not None:
            t = t.index_select(0, out_idx)
        if in_idx is not None:
            t = t.index_select(1, in_idx)
        sub[name] = t.clone()
    return sub


def expand_to_global(sub_sd: dict, global_sd: dict, keep: dict, spec: ModelSpec):
    """Dense full-shape tensors of the sub-model's values, and the 0/1 trained mask."""
    full, mask = {}, {}
    for name, g in global_sd.items():
        out_idx, in_idx = _index(keep, spec, name)
        rows = out_idx if out_idx is not None else torch.arange(g.shape[0])
        value, m = torch.zeros_like(g), torch.zeros_like(g)
        if in_idx is None:
            value[rows] = sub_sd[name]
            m[rows] = 1.0
        else:
            value[rows[:, None], in_idx[None, :]] = sub_sd[name]
            m[rows[:, None], in_idx[None, :]] = 1.0
        full[name], mask[name] = value, m
    return full, mask


# --- sparsification with error-feedback dicts ---------------------------------------------------

def _scope(cfg: ExperimentConfig) -> str:
    """k over the whole model or per tensor; 'auto' is the model for cost_weighted."""
    if cfg.sparsify_scope != "auto":
        return cfg.sparsify_scope
    return "model" if cfg.sparsify_method == "cost_weighted" else "per_tensor"


def sparsify(delta: dict, mask: dict, residual: dict | None, cfg: ExperimentConfig) -> dict:
    """Dense sent tensors; updates `residual` in place (combined - sent on trained coords)."""
    combined = {n: d + residual[n] * mask[n] if residual is not None else d
                for n, d in delta.items()}
    if not cfg.compression:
        if residual is not None:
            for n in residual:
                residual[n] = residual[n] * (1 - mask[n])
        return combined
    sent = {}
    if _scope(cfg) == "model":  # cost-weighted: one top-k over |value| / cost
        scores, sizes = [], []
        for n, c in combined.items():
            cost = cfg.fc_cost if n.startswith("fc") else cfg.conv_cost
            s = (c.abs() / cost).flatten()
            scores.append(torch.where(mask[n].flatten() > 0, s, torch.full_like(s, -1.0)))
            sizes.append(c.numel())
        allscores = torch.cat(scores)
        k = num_kept(int(sum(m.sum().item() for m in mask.values())), cfg.sparsity_ratio)
        keep = torch.zeros_like(allscores)
        keep[torch.topk(allscores, k).indices] = 1.0
        for (n, c), part in zip(combined.items(), keep.split(sizes)):
            sent[n] = c * part.view_as(c)
    else:
        for n, c in combined.items():
            k = num_kept(int(mask[n].sum().item()), cfg.sparsity_ratio)
            s = torch.where(mask[n] > 0, c.abs(), torch.full_like(c, -1.0)).flatten()
            keep = torch.zeros_like(s)
            keep[torch.topk(s, k).indices] = 1.0
            sent[n] = c * keep.view_as(c)
    if residual is not None:
        for n in residual:
            residual[n] = torch.where(mask[n] > 0, combined[n] - sent[n], residual[n])
    return sent


# --- the experiment -----------------------------------------------------------------------------

def train_local(model: nn.Module, loader, cfg: ExperimentConfig) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    model.train()
    total, steps = 0.0, 0
    for _ in range(cfg.local_epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
    return total / max(steps, 1)


def evaluate(model: nn.Module, test_ds) -> tuple[float, float]:
    loader = torch.utils.data.DataLoader(test_ds, batch_size=1000, shuffle=False)
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    return 100.0 * correct / len(test_ds), loss / len(test_ds)


def _check_covered(cfg: ExperimentConfig) -> None:
    """The naive reference implements only the seed's model and methods."""
    covered = {"model": ("simple_cnn",), "pruning_mode": ("none", "structured"),
               "structured_selection": ("l1", "first"),
               "sparsify_method": ("none", "topk", "cost_weighted"), "aggregation": ("fedavg",),
               "adaptive_ratio_online": (False,)}
    for name, allowed in covered.items():
        if getattr(cfg, name) not in allowed:
            raise NotImplementedError(f"the naive reference covers {name} in {allowed}, "
                                      f"not {getattr(cfg, name)!r}")
    if cfg.sparsify_method == "topk" and cfg.sparsify_scope == "model":
        raise NotImplementedError("the naive reference's model-wide top-k is cost-weighted")


def run(cfg: ExperimentConfig) -> dict:
    """Run the experiment; returns wall times and the final accuracy (no files written)."""
    _check_covered(cfg)
    start = time.perf_counter()
    info = DATASETS[cfg.dataset]
    train_ds, test_ds = mnist_datasets(cfg)
    labels = torch.as_tensor(np.asarray(train_ds.targets))
    keep_idx = subsample(labels, cfg.data_fraction, cfg.seed)
    parts = [keep_idx[p] for p in partition(
        labels[keep_idx], cfg.partition, cfg.num_clients, cfg.seed,
        classes_per_client=cfg.classes_per_client, alpha=cfg.dirichlet_alpha)]
    spec = model_spec(cfg.model, info)
    full_times = round_times(make_profiles(cfg), [len(p) for p in parts],
                             spec.train_flops_per_sample(), ParamLayout(spec).size, cfg)
    ratios = build("ratio", method_names(cfg)["ratio"], cfg).initial(full_times)

    full_widths = tuple(spec.widths.values())
    global_model = NaiveCNN(full_widths, info.channels, info.image_size, info.num_classes)
    layout = ParamLayout(spec)
    flat = init_flat_params(spec, cfg.seed)
    global_sd = {s.name: flat[s.slice].view(s.shape).clone() for s in layout}
    residuals: dict[int, dict] = {}
    setup_sec = time.perf_counter() - start

    accuracy = loss = float("nan")
    round_secs = []
    for r in range(1, cfg.rounds + 1):
        round_start = time.perf_counter()
        numer = {n: torch.zeros_like(t) for n, t in global_sd.items()}
        denom = {n: torch.zeros_like(t) for n, t in global_sd.items()}
        for cid in sample_clients(cfg, r):
            ratio = float(ratios[cid]) if cfg.pruning else 0.0
            if cfg.pruning:
                keep = choose_units(global_sd, spec, ratio, cfg.structured_selection)
                start_sd = extract_submodel(global_sd, keep, spec)
                widths = tuple(len(keep[g]) for g in spec.groups)
            else:
                keep = None
                start_sd = {n: t.clone() for n, t in global_sd.items()}
                widths = full_widths
            model = NaiveCNN(widths, info.channels, info.image_size, info.num_classes)
            model.load_state_dict(start_sd)
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "naive_batches", r, cid))
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(train_ds, parts[cid].tolist()),
                batch_size=cfg.batch_size, shuffle=True, generator=gen)
            train_local(model, loader, cfg)
            local_sd = model.state_dict()
            sub_delta = {n: local_sd[n] - start_sd[n] for n in start_sd}
            if keep is not None:
                delta, mask = expand_to_global(sub_delta, global_sd, keep, spec)
            else:
                delta, mask = sub_delta, {n: torch.ones_like(t) for n, t in global_sd.items()}
            residual = None
            if cfg.compression and cfg.error_feedback:
                residual = residuals.setdefault(
                    cid, {n: torch.zeros_like(t) for n, t in global_sd.items()})
            sent = sparsify(delta, mask, residual, cfg)
            weight = float(len(parts[cid])) if cfg.aggregation_weights == "samples" else 1.0
            for n in global_sd:  # FedAvg, one tensor at a time
                numer[n] += weight * sent[n]
                denom[n] += weight * mask[n]
        for n in global_sd:
            step = torch.where(denom[n] > 0, numer[n] / denom[n].clamp(min=1e-12),
                               torch.zeros_like(numer[n]))
            global_sd[n] = global_sd[n] + cfg.server_lr * step
        if r % cfg.eval_every == 0 or r == cfg.rounds:
            global_model.load_state_dict(global_sd)
            accuracy, loss = evaluate(global_model, test_ds)
        round_secs.append(time.perf_counter() - round_start)
    return {"wall_sec": time.perf_counter() - start, "setup_sec": setup_sec,
            "rounds_sec": sum(round_secs), "round_secs": round_secs,
            "final_accuracy_pct": accuracy, "final_test_loss": loss}
