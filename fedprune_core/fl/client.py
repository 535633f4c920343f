"""One local update: prune -> train -> delta -> error feedback + selection -> encode.

A client's persistent state (its error-feedback residual and pruning ratio) lives in
`ClientState`; the simulation owns one per client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from . import wire
from ..config import ExperimentConfig
from ..data.loading import TensorDataset, normalize
from ..data.catalog import DatasetInfo
from ..models.layers import ParamLayout, flat_params, model_from_flat
from .pruning import Plan, Pruner
from ..rng import torch_generator
from .sparsification import compress


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass
class ClientState:
    ratio: float
    residual: Optional[torch.Tensor] = None  # global flat size; created on first use


@dataclass
class ClientResult:
    client_id: int
    message: bytes
    plan: Plan
    num_samples: int
    sent: int
    train_loss: float
    train_flops: int
    dense_train_flops: int
    update_time_sec: float


def train(model: torch.nn.Module, data: TensorDataset, info: DatasetInfo, cfg: ExperimentConfig,
          generator: torch.Generator, masks: Optional[list[torch.Tensor]] = None) -> float:
    """Local SGD; masked weights stay zero (weights and gradients masked every step).
    Returns the mean training loss over all steps."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    params = list(model.parameters())
    if masks is not None:
        with torch.no_grad():
            for p, m in zip(params, masks):
                p.mul_(m)
    total, steps = torch.zeros((), device=data.images.device), 0
    model.train()
    for _ in range(cfg.local_epochs):
        order = torch.randperm(len(data), generator=generator).to(data.images.device)
        for batch in order.split(cfg.batch_size):
            loss = F.cross_entropy(model(normalize(data.images[batch], info)), data.labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if masks is not None:
                for p, m in zip(params, masks):
                    p.grad.mul_(m)
            opt.step()
            if masks is not None:
                with torch.no_grad():
                    for p, m in zip(params, masks):
                        p.mul_(m)
            total += loss.detach()
            steps += 1
        if not torch.isfinite(total):  # one sync per epoch, not per step
            raise DivergenceError(f"training loss became {total.item()}")
    return total.item() / max(steps, 1)


def local_update(client_id: int, round_idx: int, broadcast: bytes, pruner: Pruner,
                 state: ClientState, data: TensorDataset, info: DatasetInfo,
                 layout: ParamLayout, cfg: ExperimentConfig) -> ClientResult:
    start = time.perf_counter()
    device = data.images.device
    received = wire.decode(broadcast, pruner, device)  # the model this client starts from
    plan = pruner.plan(state.ratio) if pruner.mode == "unstructured" else received.plan
    model = model_from_flat(received.plan.shape, received.values, device)
    masks = None
    if plan.kind == "unstructured":
        masks = [plan.masks[s.name] for s in layout]
    try:
        loss = train(model, data, info, cfg, torch_generator(cfg.seed, "batches", round_idx,
                                                             client_id), masks)
    except DivergenceError as err:
        raise DivergenceError(f"round {round_idx}, client {client_id}: {err}. Lower lr "
                              f"(now {cfg.lr}) or check the data.") from None
    local = flat_params(model)
    if plan.kind == "structured":  # the sub-model's flatten order is the plan's coords order
        delta = local - received.values
    else:
        delta = local[plan.coords] - received.values[plan.coords]

    residual = None
    if cfg.error_feedback and cfg.sparsification:
        if state.residual is None:
            state.residual = torch.zeros(layout.size, device=device)
        residual = state.residual[plan.coords]
    costs = [cfg.fc_cost if s.is_fc else cfg.conv_cost for s in layout]
    out = compress(delta, residual, plan.segments, costs, cfg,
                   torch_generator(cfg.seed, "sparsify", round_idx, client_id))
    if out.residual is not None and state.residual is not None:
        state.residual[plan.coords] = out.residual

    message = wire.encode(plan, client_id, len(data), out.values, out.positions)
    samples = len(data) * cfg.local_epochs
    return ClientResult(
        client_id=client_id, message=message, plan=plan, num_samples=len(data),
        sent=len(out.values), train_loss=loss,
        train_flops=plan.shape.train_flops_per_sample() * samples,
        dense_train_flops=layout.shape.train_flops_per_sample() * samples,
        update_time_sec=time.perf_counter() - start)
