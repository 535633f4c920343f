"""Local SGD: the one step every engine takes, and the sequential engine's loop around it.

A local step is `step_loss` (the loss of a batch with every width method's option: HeteroFL's
scaler, FjORD's drawn width and self-distillation, masked cross-entropy) differentiated by the
engine, then `sgd_update` (masks, clipping, weight decay, momentum). The engines differ only in
how they batch clients around it: `train` here steps one client's real (sub-)model; fl/cohort.py
steps a whole cohort at once, stacked on a leading client dimension under vmap.

Per-round settings are resolved once, in `fl.client.prepare`, which every engine and every
deployment node goes through: `LocalTraining.for_round(r)` gives the `RoundTraining` a client
trains with in round r (its learning rate on the schedule). Nothing below sees a schedule.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..data.catalog import DatasetInfo
from ..data.dataset import TensorDataset, normalize
from ..errors import DivergenceError


@dataclass(frozen=True)
class RoundTraining:
    """What a client trains with in one round: every value fixed (no schedule)."""

    lr: float = 0.01
    momentum: float = 0.0
    local_epochs: int = 2
    batch_size: int = 64
    weight_decay: float = 0.0  # L2 penalty, as torch.optim.SGD adds it to the gradient
    grad_clip_norm: float = 0.0  # clip each step's gradient to this L2 norm (0 = off)


@dataclass(frozen=True)
class LocalTraining:
    """A client's hyper-parameters over the run.

    The learning rate may follow a step schedule over rounds (`lr_milestones`, as
    torch.optim.lr_scheduler.MultiStepLR stepped once a round, the way HeteroFL and FjORD decay
    it): round r trains with lr x lr_gamma^(number of milestones m < r), so the rounds after
    milestone m use the decayed rate. The rate is a pure function of the round, so resume and a
    deployment's nodes train with the same one."""

    lr: float = 0.01
    momentum: float = 0.0
    local_epochs: int = 2
    batch_size: int = 64
    masked_ce: bool = False  # HeteroFL's masked cross-entropy: the loss over own classes only
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0
    lr_milestones: tuple[int, ...] = ()  # rounds after which the lr is multiplied by lr_gamma
    lr_gamma: float = 0.1

    def lr_at(self, round_idx: int) -> float:
        """The client learning rate of round `round_idx` (1-based)."""
        return self.lr * self.lr_gamma ** sum(m < round_idx for m in self.lr_milestones)

    def for_round(self, round_idx: int) -> RoundTraining:
        """The settings clients train with in round `round_idx`."""
        return RoundTraining(self.lr_at(round_idx), self.momentum, self.local_epochs,
                             self.batch_size, self.weight_decay, self.grad_clip_norm)


# --- the one local step ------------------------------------------------------------------------
def step_loss(logits: Callable[[Optional[list]], torch.Tensor], labels: torch.Tensor,
              widths=None, distill: bool = False, weight: Optional[torch.Tensor] = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's loss to differentiate, and the loss it reports.

    `logits(widths)` runs the client's model on the batch at the step's narrower widths (None:
    its whole (sub-)model; the engine applies the scaler and the output classes). With
    `distill` and drawn widths, FjORD's self-distillation: the whole sub-model learns the labels
    and the narrower one its predictions; the step differentiates the sum and reports the
    narrower one's loss. `weight` (the cohort's padded batches): a mean over the samples of
    weight 1 only."""
    if distill and widths is not None:
        teacher = logits(None)
        teacher_loss = _cross_entropy(teacher, labels, weight)
        student = _cross_entropy(logits(widths), teacher.detach().softmax(1), weight)
        return teacher_loss + student, student
    loss = _cross_entropy(logits(widths), labels, weight)
    return loss, loss


def _cross_entropy(out: torch.Tensor, target: torch.Tensor,
                   weight: Optional[torch.Tensor]) -> torch.Tensor:
    if weight is None:
        return F.cross_entropy(out, target)
    per_sample = F.cross_entropy(out, target, reduction="none")
    return (per_sample * weight).sum() / weight.sum().clamp(min=1.0)


def sgd_update(params: list[torch.Tensor], grads: list[torch.Tensor],
               bufs: Optional[list[torch.Tensor]], hp: RoundTraining,
               masks: Optional[list[torch.Tensor]] = None,
               active: Optional[torch.Tensor] = None
               ) -> tuple[list[torch.Tensor], Optional[list[torch.Tensor]]]:
    """One step of torch.optim.SGD (no dampening, no Nesterov), with its arithmetic: gradients
    masked (a pruned weight gets none), clipped to `grad_clip_norm` over the whole model as
    torch.nn.utils.clip_grad_norm_ clips, weight decay added, momentum, the step, and the
    weights masked again, so pruned weights stay zero.

    For one client (`active` None) `params` are its tensors, updated in place. For a stack of
    clients (the cohort engine) every tensor has a leading client dimension and `active`
    [clients, 1] says which clients take the step (the others keep their parameters and
    momentum); the clipping norm is then each client's. `bufs` is None before the first step.
    Returns the parameters and the momentum buffers (None without momentum)."""
    if masks is not None:
        grads = [g.mul_(m) for g, m in zip(grads, masks)]
    if hp.grad_clip_norm > 0:
        _clip(grads, hp.grad_clip_norm, stacked=active is not None)
    if hp.weight_decay != 0.0:
        grads = [g.add(p, alpha=hp.weight_decay) for g, p in zip(grads, params)]
    steps = grads
    if hp.momentum != 0.0:
        if bufs is None:  # a client's first step (every client that trains has step 0)
            bufs = [g.clone() for g in grads]
        elif active is None:
            bufs = [b.mul_(hp.momentum).add_(g) for b, g in zip(bufs, grads)]
        else:
            bufs = [torch.where(active, b * hp.momentum + g, b) for b, g in zip(bufs, grads)]
        steps = bufs
    with torch.no_grad():
        if active is None:
            for p, s in zip(params, steps):
                p.add_(s, alpha=-hp.lr)
        else:
            params = [torch.where(active, p.add(s, alpha=-hp.lr), p)
                      for p, s in zip(params, steps)]
        if masks is not None:
            params = [p.mul_(m) for p, m in zip(params, masks)]
    return params, bufs


def _clip(grads: list[torch.Tensor], max_norm: float, stacked: bool) -> None:
    """torch.nn.utils.clip_grad_norm_'s arithmetic: the L2 norm of the tensors' norms, each
    gradient times min(1, max_norm / (norm + 1e-6)); per client for a stack."""
    if stacked:
        norms = [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]
        total = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(
            torch.stack(norms, dim=1), dim=1)
        total = total[:, None]
    else:
        norms = [torch.linalg.vector_norm(g) for g in grads]
        total = torch.linalg.vector_norm(torch.stack(norms))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef)


def step_flops(samples: int, widths, distill: bool,
               flops_per_sample: Callable[[Optional[list]], int]) -> int:
    """Training FLOPs of one step: its samples at the step's widths, plus the teacher's at the
    whole sub-model when it distils."""
    teacher = flops_per_sample(None) if distill and widths is not None else 0
    return samples * (flops_per_sample(widths) + teacher)


def flops_per_sample(spec) -> Callable[[Optional[list[int]]], int]:
    """Training FLOPs of one sample at the given nested widths (None: the whole model)."""
    @functools.lru_cache(maxsize=None)
    def at(widths: Optional[tuple[int, ...]]) -> int:
        narrowed = spec if widths is None else spec.with_widths(dict(zip(spec.groups, widths)))
        return narrowed.train_flops_per_sample()
    return lambda widths: at(None if widths is None else tuple(widths))


# --- the sequential engine -------------------------------------------------------------------
def train(model: torch.nn.Module, data: TensorDataset, info: DatasetInfo, hp: RoundTraining,
          generator: torch.Generator, masks: Optional[list[torch.Tensor]] = None, *,
          scales: Optional[list[float]] = None, widths: Optional[Callable[[], list[int]]] = None,
          distill: bool = False, classes: Optional[torch.Tensor] = None) -> tuple[float, int]:
    """Local SGD of one client's TableNet, one `step_loss` + `sgd_update` a batch.

    The width methods' hooks (methods/train): `scales` divide each group's output while
    training; `widths()` gives each step's nested widths; `distill` (FjORD's self-distillation).
    `classes` (masked cross-entropy): the model's outputs are these classes, in this order, and
    the client's labels are mapped onto them. Batch norm trains on each batch's own statistics
    (static batch norm, fl/evaluate.py).

    Returns (the mean training loss over all steps, the training FLOPs of the steps taken)."""
    params = list(model.parameters())
    if masks is not None:
        with torch.no_grad():
            for p, m in zip(params, masks):
                p.mul_(m)
    labels = data.labels if classes is None else _local_labels(data.labels, classes, info)
    per_sample = flops_per_sample(model.spec)
    total, steps, flops, bufs = torch.zeros((), device=data.images.device), 0, 0, None
    model.train()
    for _ in range(hp.local_epochs):
        order = torch.randperm(len(data), generator=generator).to(data.images.device)
        for batch in order.split(hp.batch_size):
            x, y = normalize(data.images[batch], info), labels[batch]
            drawn = widths() if widths is not None else None
            for p in params:
                p.grad = None
            loss, reported = step_loss(lambda w: model(x, scales, w), y, drawn, distill)
            loss.backward()
            flops += step_flops(len(batch), drawn, distill, per_sample)
            _, bufs = sgd_update(params, [p.grad for p in params], bufs, hp, masks)
            total += reported.detach()
            steps += 1
        if not torch.isfinite(total):  # one sync per epoch, not per step
            raise DivergenceError(f"training loss became {total.item()}")
    return total.item() / max(steps, 1), flops


def _local_labels(labels: torch.Tensor, classes: torch.Tensor, info: DatasetInfo
                  ) -> torch.Tensor:
    """A client's labels as positions in `classes` (its model's outputs)."""
    position = torch.full((info.num_classes,), -1, dtype=torch.int64, device=labels.device)
    position[classes.to(labels.device)] = torch.arange(len(classes), device=labels.device)
    return position[labels]
