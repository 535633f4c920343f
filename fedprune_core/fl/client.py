"""One local update, step by step: prepare (receive, plan, the round's settings, start values)
-> train -> finish (delta, error feedback + compression, encode, the client's next ratio). A
client's state comes in and its new state goes out; nothing is mutated.

The steps are separate so that the training engines share everything but the training:
`local_update` runs them for one client (the sequential and parallel engines, and a deployment's
node); fl/cohort.py trains a whole cohort's prepared clients at once and hands each one's result
to the same `finish`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from ..methods.compress.base import Compressed
from ..models.net import flat_params, model_from_flat
from ..models.plan import Plan, output_classes, with_classes
from ..rng import torch_generator
from . import wire
from .store import ClientState
from .training import DivergenceError, RoundTraining, train
from .types import ClientResult, ClientSlot, RoundSetup


@dataclass
class Prepared:
    """A client ready to train: its plan, the round's settings and the local model's start."""

    slot: ClientSlot
    round_idx: int
    training: RoundTraining  # the round's resolved settings (its lr on the schedule)
    plan: Plan
    start: torch.Tensor  # the local model's flat start values (plan.spec's flatten order)
    masks: Optional[list[torch.Tensor]]  # unstructured: per tensor of the layout, global shapes
    generator: torch.Generator  # the client's batch-order stream
    state: ClientState
    downlink_bytes: int  # the broadcast it received
    seconds: float  # wall time spent preparing

    def start_at_coords(self) -> torch.Tensor:
        """The start values at plan.coords (a structured sub-model's start is exactly that)."""
        return self.start if self.plan.kind == "structured" else self.start[self.plan.coords]

    def widths_stream(self, setup: RoundSetup) -> torch.Generator:
        """The client's stream for the width method's draws (apart from its batch order)."""
        return torch_generator(setup.seed, "widths", self.round_idx, self.slot.client_id)


@dataclass
class Trained:
    values: torch.Tensor  # trained values at plan.coords
    loss: float  # mean training loss over the client's steps
    seconds: float  # wall time of this client's training (its share, in a cohort)
    flops: int  # training FLOPs of the steps taken (at each step's width)


def local_update(setup: RoundSetup, slot: ClientSlot, round_idx: int, broadcast: bytes, planner,
                 state: ClientState) -> tuple[ClientResult, ClientState]:
    prepared = prepare(setup, slot, round_idx, broadcast, planner, state)
    return finish(setup, prepared, train_one(setup, prepared))


def prepare(setup: RoundSetup, slot: ClientSlot, round_idx: int, broadcast: bytes, planner,
            state: ClientState) -> Prepared:
    """Decode the broadcast and pick the plan: the structured sub-model comes on the wire,
    an unstructured mask from the client's ratio; dense and unstructured start full-size.
    The round's settings are resolved here, the one place every engine and node goes through."""
    start = time.perf_counter()
    received = wire.decode(broadcast, planner, slot.data.images.device)
    plan = received.plan if setup.extractor.kind != "unstructured" else planner.plan(state.ratio)
    values = received.values
    if setup.training.masked_ce:  # the client trains and sends only its own classes' outputs
        plan = with_classes(setup.layout, plan, torch.unique(slot.data.labels))
        values = values[torch.searchsorted(received.coords, plan.coords)]
    masks = None
    if plan.kind == "unstructured":
        masks = [plan.masks[s.name] for s in setup.layout]
    generator = torch_generator(setup.seed, "batches", round_idx, slot.client_id)
    return Prepared(slot, round_idx, setup.training.for_round(round_idx), plan, values, masks,
                    generator, state, len(broadcast), time.perf_counter() - start)


def train_one(setup: RoundSetup, prepared: Prepared) -> Trained:
    """Train the plan's real (sub-)model from the start values: the sequential engine."""
    start = time.perf_counter()
    plan, values = prepared.plan, prepared.start
    model = model_from_flat(plan.spec, values, values.device)
    method = setup.local_method
    try:
        loss, flops = train(model, prepared.slot.data, setup.info, prepared.training,
                            prepared.generator, prepared.masks, scales=method.scales(plan),
                            widths=method.widths(plan, prepared.widths_stream(setup)),
                            distill=method.distill, classes=output_classes(plan))
    except DivergenceError as err:
        raise diverged(prepared, f"client {prepared.slot.client_id}: {err}") from None
    local = flat_params(model)
    if plan.kind != "structured":  # the sub-model's flatten order is the plan's coords order
        local = local[plan.coords]
    return Trained(local, loss, time.perf_counter() - start, flops)


def diverged(prepared: Prepared, what) -> DivergenceError:
    return DivergenceError(f"round {prepared.round_idx}, {what}. Lower lr (now "
                           f"{prepared.training.lr:g}) or check the data.")


def finish(setup: RoundSetup, prepared: Prepared,
           trained: Trained) -> tuple[ClientResult, ClientState]:
    """The delta at the plan's coords -> error feedback + compression -> the message; the
    update's simulated time and, from it, the client's next ratio (the ratio policy's one step).
    update_time_sec = preparing + training (or a cohort's share of it) + finishing."""
    start = time.perf_counter()
    slot, plan, state, round_idx = prepared.slot, prepared.plan, prepared.state, prepared.round_idx
    delta = trained.values - prepared.start_at_coords()
    residual = _residual_at(setup, state, plan)
    combined = delta if residual is None else delta + residual
    out = setup.compressor.compress(combined, plan.segments, [s.kind for s in setup.layout],
                                    torch_generator(setup.seed, "sparsify", round_idx,
                                                    slot.client_id))
    if residual is not None:
        state = _after_error_feedback(state, plan, combined, out, setup.layout.size)
    message = wire.encode(plan, slot.client_id, len(slot.data), out.values, out.positions,
                          out.payloads, setup.compressor.codec)
    simulated = slot.profile.time(trained.flops, prepared.downlink_bytes, len(message))
    next_ratio = setup.ratio_policy.next(state.ratio, simulated, setup.deadline)
    samples = len(slot.data) * prepared.training.local_epochs
    seconds = prepared.seconds + trained.seconds + time.perf_counter() - start
    return ClientResult(
        client_id=slot.client_id, message=message, num_samples=len(slot.data),
        ratio=state.ratio, next_ratio=next_ratio, trained_params=len(plan.coords),
        sent=len(out.values), train_loss=trained.loss, train_flops=trained.flops,
        dense_train_flops=setup.layout.spec.train_flops_per_sample() * samples,
        simulated_time_sec=simulated, update_time_sec=seconds,
        train_time_sec=trained.seconds), ClientState(next_ratio, state.residual)


def _residual_at(setup: RoundSetup, state: ClientState, plan: Plan) -> Optional[torch.Tensor]:
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
