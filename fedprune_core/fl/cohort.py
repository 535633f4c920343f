"""Cohort engine: the local SGD of all selected clients of a round as one batched computation.

The sequential engine (`training.train` via fl/client.py `train_one`) runs one client after
another; on a GPU one client's batch of 10-64 small images leaves the device nearly idle. Here
the clients' parameters are stacked on a leading client dimension and every step runs
`torch.func.vmap` over `functional_call` of one full-width template, so a step costs one batched
forward/backward for the whole cohort.

Equivalence with `training.train`, client by client:
- each client draws its per-epoch permutations from its own generator with the same calls, so
  it sees the same batches in the same order, and its generator ends in the same state;
- batches are padded to a common size with per-sample weights (a short last batch is the mean
  over its real samples), and a client with fewer batches sits out the cohort's extra steps
  (parameters and momentum untouched);
- every step is the sequential engine's: `training.step_loss` (vmapped) and one
  `training.sgd_update` of the stacked parameters (masks, clipping per client, weight decay,
  momentum), with the clients that have no batch at a step sitting it out;
- batch norm's training statistics are over each client's real samples (padding has weight 0),
  as its batches' in `train`; group norm's groups are over the sub-model's channels (the unit
  masks of its kept units, `CohortJob.keep_masks`).
A pruned sub-model (HeteroFL-style, Diao et al. 2021) is a full-width model whose dropped units
have zero weights and biases, held there by its mask: a dropped unit outputs 0 and contributes
nothing, so the masked full-width model computes what the sub-model computes.

On a CPU oneDNN's sequential convolutions are faster (see benchmarks/engines.py); this engine
is for GPUs (`engine: cohort`). `train_prepared` is the round's training step: it takes the
clients fl/client.py `prepare`d and returns what `finish` needs, so every engine shares every
other step of the update.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch.func import functional_call, grad_and_value, vmap

from ..data.catalog import DatasetInfo
from ..data.dataset import TensorDataset, normalize
from ..models.net import TableNet
from ..models.plan import output_classes
from .client import Prepared, Trained, diverged
from .training import (DivergenceError, RoundTraining, flops_per_sample, sgd_update, step_flops,
                       step_loss)
from .types import RoundSetup


@dataclass(frozen=True)
class CohortJob:
    """One client's local training, in full-width coordinates.

    init: full-size flat float32 parameter vector the client starts from (for a structured
        sub-model: zeros with the sub-model's parameters scattered in at `plan.coords`).
    mask: full-size float mask, 1 = trainable, 0 = held at zero; None = everything trains.
    data: the client's samples; generator: its batch-order stream (advanced as `train` does).
    name: how a divergence names the job (default: its index).
    The width methods' hooks, as `training.train` takes them (methods/train):
    scales: a divisor per group while training (HeteroFL's scaler), or None;
    widths: each step's nested widths per group, called once a step (FjORD), or None;
    classes: the classes of the client's loss (masked cross-entropy), or None for all;
    flops_per_sample: training FLOPs of a sample at the given widths (None: the whole model).
    keep_masks: a structured sub-model's kept units, a 0/1 mask per group over the global
        width, for models whose group norm must see them (None: not needed).
    """

    init: torch.Tensor
    mask: Optional[torch.Tensor]
    data: TensorDataset
    generator: torch.Generator
    name: str = ""
    scales: Optional[list[float]] = None
    widths: Optional[Callable[[], list[int]]] = None
    classes: Optional[torch.Tensor] = None
    flops_per_sample: Optional[Callable[[Optional[list[int]]], int]] = None
    keep_masks: Optional[list[torch.Tensor]] = None


@dataclass(frozen=True)
class _Schedule:
    """Every step of the cohort: rows of the concatenated data, padded to a common batch size."""

    index: torch.Tensor  # int64 [steps, clients, batch]: rows of the concatenated data
    weight: torch.Tensor  # float32 [steps, clients, batch]: 1 = real sample, 0 = padding
    active: torch.Tensor  # bool [steps, clients]: the client has a batch at this step
    steps: list[int]  # steps each client takes (its denominator of the mean loss)


def train_prepared(setup: RoundSetup, prepared: list[Prepared]) -> list[Trained]:
    """The cohort engine's training step for a round's prepared clients (fl/client.py): one
    `train_cohort` call, then each client's trained values read at its plan's coords.

    Each client's `Trained.seconds` is the cohort's training time split evenly over its
    clients, so a client's update_time_sec is that share plus its own prepare and finish."""
    if not prepared:
        return []
    start = time.perf_counter()
    jobs = [_job(setup, p) for p in prepared]
    template = _template(setup.layout.spec)
    try:  # one round's clients: one round's settings
        out = train_cohort(template, jobs, prepared[0].training, setup.info,
                           distill=setup.local_method.distill)
    except DivergenceError as err:
        raise diverged(prepared[0], err) from None
    share = (time.perf_counter() - start) / len(prepared)
    return [Trained(flat[p.plan.coords], loss, share, flops)
            for p, (flat, loss, flops) in zip(prepared, out)]


def _job(setup: RoundSetup, p: Prepared) -> CohortJob:
    """A prepared client in full-width coordinates: a structured sub-model is the full-width
    model with zeros outside plan.coords, held there by its mask; an unstructured client is
    masked by its plan's masks; a dense one has no mask."""
    name = f"client {p.slot.client_id}"
    method, plan = setup.local_method, p.plan
    hooks = dict(scales=method.scales(plan), widths=method.widths(plan, p.widths_stream(setup)),
                 classes=output_classes(plan), flops_per_sample=flops_per_sample(plan.spec))
    if plan.kind == "structured":
        init = torch.zeros(setup.layout.size, device=p.start.device)
        mask = torch.zeros(setup.layout.size, device=p.start.device)
        init[plan.coords], mask[plan.coords] = p.start, 1.0
        spec = setup.layout.spec
        if spec.has_norm("gn"):
            hooks["keep_masks"] = [
                torch.zeros(w, device=init.device).index_fill_(0, plan.keep[g].to(init.device), 1.0)
                for g, w in spec.widths.items()]
        return CohortJob(init, mask, p.slot.data, p.generator, name, **hooks)
    mask = None if p.masks is None else torch.cat([m.flatten() for m in p.masks])
    return CohortJob(p.start, mask, p.slot.data, p.generator, name, **hooks)


def _template(spec) -> torch.nn.Module:
    """The full-width network's structure only (`functional_call` swaps in every client's
    parameters): built on the meta device, so it costs no memory and draws no random numbers."""
    with torch.device("meta"):
        return TableNet(spec)


def train_cohort(template: torch.nn.Module, jobs: list[CohortJob], hp: RoundTraining,
                 info: DatasetInfo, distill: bool = False
                 ) -> list[tuple[torch.Tensor, float, int]]:
    """Local SGD of every job at once, equivalent to `training.train` on each job separately:
    each step is `training.step_loss` under vmap, then one `training.sgd_update` of the stack.

    Args:
        template: a full-width model; only its structure is used (`functional_call` swaps in
            each client's parameters). Its `named_parameters()` order is the flat order.
        jobs: the clients to train; their data lives on the device of their `init` vectors.
        hp: the round's settings (lr, momentum, epochs, batch size, weight decay, clipping).
        info: the dataset's normalisation.
        distill: FjORD's self-distillation (a job's steps with drawn widths).

    Returns:
        Per job, in order: the trained full-size flat vector, the mean loss over its steps and
        its training FLOPs.

    Raises:
        DivergenceError: a job's loss became NaN or infinite (checked once, at the end: a
            diverged client's NaNs stay in its own slice of the stack).

    Memory: the cohort's samples are concatenated once (uint8); one padded batch of all
    clients is normalised and run at a time. A job's narrower widths (FjORD) are unit masks
    over the full width (vmap cannot slice per client), its classes an additive mask.
    """
    if not jobs:
        return []
    device = jobs[0].init.device
    names, shapes = _parameter_spec(template, jobs[0].init.numel())
    images = torch.cat([job.data.images for job in jobs]).to(device)
    labels = torch.cat([job.data.labels for job in jobs]).to(device)
    schedule = _schedule(jobs, hp.local_epochs, hp.batch_size, device)
    mask = _stacked_masks(jobs)
    params = torch.stack([job.init.to(device, torch.float32) for job in jobs])
    if mask is not None:
        params.mul_(mask)
    extras = _Extras(template.spec, jobs, info.num_classes, device)
    step_fn = vmap(grad_and_value(_weighted_loss(template, distill), has_aux=True),
                   in_dims=(0, 0, 0, 0, *extras.in_dims))
    template.train()
    buf, total = None, torch.zeros(len(jobs), device=device)
    flops = [0] * len(jobs)
    for t in range(len(schedule.active)):
        index, weight = schedule.index[t], schedule.weight[t]
        active = schedule.active[t]
        x = normalize(images[index.flatten()], info).reshape(*index.shape, *images.shape[1:])
        unit_masks = extras.step(active, weight, flops, distill)
        grads, (_, loss) = step_fn(_unflatten(params, names, shapes), x, labels[index], weight,
                                   extras.scales, unit_masks, extras.keep, extras.class_bias)
        grad = torch.cat([grads[n].flatten(1) for n in names], dim=1)
        (params,), buf = sgd_update([params], [grad], buf, hp,
                                    None if mask is None else [mask], active[:, None])
        total += torch.where(active, loss, 0.0)
    return [(p, loss, f) for (p, loss), f in zip(
        _results(params, total, schedule.steps,
                 [job.name or f"job {k}" for k, job in enumerate(jobs)]), flops)]


class _Extras:
    """The width methods' per-client inputs of a step, stacked for vmap (None where no job
    uses one): scales [clients, groups], unit masks [clients, width] per group (a step's drawn
    widths times the kept units), the kept units alone [clients, width] per group (a
    distilling teacher's), and an additive class mask [clients, classes] (0 for a client's
    classes, a large negative value else)."""

    def __init__(self, spec, jobs: list[CohortJob], num_classes: int, device):
        self.jobs, self.device, self.groups = jobs, device, spec.groups
        self.full = [spec.widths[g] for g in self.groups]
        self.scales = None
        if any(j.scales is not None for j in jobs):
            self.scales = torch.tensor([j.scales or [1.0] * len(self.groups) for j in jobs],
                                       device=device)
        self.class_bias = None
        if any(j.classes is not None for j in jobs):
            self.class_bias = torch.zeros(len(jobs), num_classes, device=device)
            for k, j in enumerate(jobs):
                if j.classes is not None:
                    absent = torch.ones(num_classes, dtype=torch.bool, device=device)
                    absent[j.classes.to(device)] = False
                    self.class_bias[k, absent] = -1e9
        self.nested = any(j.widths is not None for j in jobs)
        self.keep = None
        if any(j.keep_masks is not None for j in jobs):
            self.keep = [torch.stack([j.keep_masks[i] if j.keep_masks is not None
                                      else torch.ones(full, device=device) for j in jobs])
                         for i, full in enumerate(self.full)]
        masked = self.nested or self.keep is not None
        self.in_dims = (0 if self.scales is not None else None, 0 if masked else None,
                        0 if self.keep is not None else None,
                        0 if self.class_bias is not None else None)

    def step(self, active: torch.Tensor, weight: torch.Tensor, flops: list[int],
             distill: bool) -> Optional[list[torch.Tensor]]:
        """This step's unit masks (drawing each active job's widths, in `train`'s order) and
        each job's FLOPs of the step added to `flops`."""
        samples = weight.sum(1).tolist()
        widths = []
        for k, job in enumerate(self.jobs):
            drawn = job.widths() if (job.widths is not None and bool(active[k])) else None
            widths.append(drawn)
            if bool(active[k]) and job.flops_per_sample is not None:
                flops[k] += step_flops(int(samples[k]), drawn, distill, job.flops_per_sample)
        if not self.nested:
            return self.keep
        masks = [torch.stack([(torch.arange(full, device=self.device)
                               < (w[i] if w is not None else full)).to(torch.float32)
                              for w in widths])
                 for i, full in enumerate(self.full)]
        return masks if self.keep is None else [m * k for m, k in zip(masks, self.keep)]


def _parameter_spec(template: torch.nn.Module, size: int) -> tuple[list[str], list[tuple]]:
    names, shapes = zip(*[(n, tuple(p.shape)) for n, p in template.named_parameters()])
    if sum(math.prod(s) for s in shapes) != size:
        raise ValueError(f"the template has {sum(math.prod(s) for s in shapes)} parameters, "
                         f"the jobs' flat vectors {size}")
    return list(names), list(shapes)


def _unflatten(params: torch.Tensor, names: list[str],
               shapes: list[tuple]) -> dict[str, torch.Tensor]:
    """[clients, size] -> {name: [clients, *shape]} views."""
    pieces = params.split([math.prod(s) for s in shapes], dim=1)
    return {n: p.view(len(params), *s) for n, p, s in zip(names, pieces, shapes)}


def _weighted_loss(template: torch.nn.Module, distill: bool):
    """One client's `training.step_loss` on its padded batch: cross entropy averaged over the
    real samples (a client sitting out a step has none, a zero loss and a zero gradient), the
    unit masks standing for the drawn widths and the kept units (a distilling teacher's), the
    class mask for masked cross-entropy."""
    def loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             weight: torch.Tensor, scales, unit_masks, keep_masks, class_bias):
        def logits(masks):
            out = functional_call(template, params, (x,),
                                  {"scales": scales, "unit_masks": masks,
                                   "sample_weight": weight})
            return out if class_bias is None else out + class_bias
        if unit_masks is None or not distill:  # the masks are the whole step's model
            return step_loss(lambda _: logits(unit_masks), y, weight=weight)
        return step_loss(lambda w: logits(keep_masks if w is None else w), y, unit_masks,
                         distill, weight)
    return loss


def _stacked_masks(jobs: list[CohortJob]) -> Optional[torch.Tensor]:
    """[clients, size] float masks; None when no job has one (a job without one gets ones)."""
    if all(job.mask is None for job in jobs):
        return None
    ones = torch.ones_like(jobs[0].init)
    return torch.stack([ones if job.mask is None else job.mask.to(ones) for job in jobs])


def _schedule(jobs: list[CohortJob], local_epochs: int, batch_size: int,
              device: torch.device) -> _Schedule:
    """Each client's batches, in `train`'s order, as rows of the concatenated data."""
    rows, offset = [], 0
    for job in jobs:
        batches = _client_batches(job, local_epochs, batch_size, device)
        rows.append(torch.where(batches >= 0, batches + offset, batches))
        offset += len(job.data)
    steps = [len(r) for r in rows]
    table = torch.full((len(jobs), max(steps), batch_size), -1, dtype=torch.int64,
                       device=device)
    for k, r in enumerate(rows):
        table[k, :len(r)] = r
    table = table.transpose(0, 1)  # [steps, clients, batch]
    real = table >= 0
    return _Schedule(table.clamp(min=0), real.to(torch.float32), real.any(dim=2), steps)


def _client_batches(job: CohortJob, local_epochs: int, batch_size: int,
                    device: torch.device) -> torch.Tensor:
    """[steps, batch_size] sample indices of one client; -1 pads a short batch."""
    n = len(job.data)
    batches = math.ceil(n / batch_size)
    epochs = []
    for _ in range(local_epochs):
        # The same call as training.train, so the generator advances identically.
        order = torch.randperm(n, generator=job.generator).to(device)
        padded = torch.full((batches * batch_size,), -1, dtype=torch.int64, device=device)
        padded[:n] = order
        epochs.append(padded.view(batches, batch_size))
    return torch.cat(epochs)


def _results(params: torch.Tensor, total: torch.Tensor, steps: list[int],
             names: list[str]) -> list[tuple[torch.Tensor, float]]:
    losses = total.tolist()  # the one host sync of the whole cohort
    for name, value in zip(names, losses):
        if not math.isfinite(value):
            raise DivergenceError(f"cohort {name}: training loss became {value}")
    return [(p, value / max(n, 1)) for p, n, value in zip(params.unbind(0), steps, losses)]
