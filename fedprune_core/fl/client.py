"""One local update, step by step: receive -> train -> delta -> error feedback + compression
-> encode. A client's state comes in and its new state goes out; nothing is mutated."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from ..methods.compress.base import Compressed
from ..models.net import flat_params, model_from_flat
from ..rng import torch_generator
from . import wire
from .plan import Plan
from .state import ClientState
from .training import DivergenceError, train


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


def local_update(setup, slot, round_idx: int, broadcast: bytes, planner,
                 state: ClientState) -> tuple[ClientResult, ClientState]:
    """`setup` is the round's static side (fl.round.RoundSetup), `slot` the client."""
    start = time.perf_counter()
    received = wire.decode(broadcast, planner, slot.data.images.device)
    plan = received.plan if setup.extractor.kind != "unstructured" else planner.plan(state.ratio)
    delta, loss = _train_delta(setup, slot, round_idx, received.values, plan)
    residual = _residual_at(setup, state, plan)
    combined = delta if residual is None else delta + residual
    out = setup.compressor.compress(combined, plan.segments, [s.kind for s in setup.layout],
                                    torch_generator(setup.seed, "sparsify", round_idx,
                                                    slot.client_id))
    if residual is not None:
        state = _after_error_feedback(state, plan, combined, out, setup.layout.size)
    message = wire.encode(plan, slot.client_id, len(slot.data), out.values, out.positions,
                          out.payloads, setup.compressor.codec)
    samples = len(slot.data) * setup.training.local_epochs
    return ClientResult(
        client_id=slot.client_id, message=message, plan=plan, num_samples=len(slot.data),
        sent=len(out.values), train_loss=loss,
        train_flops=plan.spec.train_flops_per_sample() * samples,
        dense_train_flops=setup.layout.spec.train_flops_per_sample() * samples,
        update_time_sec=time.perf_counter() - start), state


def _train_delta(setup, slot, round_idx: int, received: torch.Tensor,
                 plan: Plan) -> tuple[torch.Tensor, float]:
    """Train the plan's model from the received values; the delta at the plan's coords."""
    model = model_from_flat(plan.spec, received, received.device)
    masks = None
    if plan.kind == "unstructured":
        masks = [plan.masks[s.name] for s in setup.layout]
    generator = torch_generator(setup.seed, "batches", round_idx, slot.client_id)
    try:
        loss = train(model, slot.data, setup.info, setup.training, generator, masks)
    except DivergenceError as err:
        raise DivergenceError(f"round {round_idx}, client {slot.client_id}: {err}. Lower lr "
                              f"(now {setup.training.lr}) or check the data.") from None
    local = flat_params(model)
    if plan.kind == "structured":  # the sub-model's flatten order is the plan's coords order
        return local - received, loss
    return local[plan.coords] - received[plan.coords], loss


def _residual_at(setup, state: ClientState, plan: Plan) -> Optional[torch.Tensor]:
    if not setup.error_feedback:
        return None
    if state.residual is None:
        return torch.zeros(len(plan.coords), device=plan.coords.device)
    return state.residual[plan.coords]


def residual_after(combined: torch.Tensor, out: Compressed) -> torch.Tensor:
    """Error feedback (Stich et al. 2018): what the server will not decode stays with the
    client, so sent + new residual == delta + old residual."""
    if out.positions is None:
        return combined - out.values
    left = combined.clone()
    left[out.positions] = combined[out.positions] - out.values
    return left


def _after_error_feedback(state: ClientState, plan: Plan, combined: torch.Tensor,
                          out: Compressed, size: int) -> ClientState:
    full = (torch.zeros(size, device=combined.device) if state.residual is None
            else state.residual.clone())
    full[plan.coords] = residual_after(combined, out)
    return ClientState(state.ratio, full)
