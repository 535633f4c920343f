"""Local SGD on one client: the only place a model is trained."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..data.catalog import DatasetInfo
from ..data.loading import TensorDataset, normalize


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass(frozen=True)
class LocalTraining:
    """A client's own hyper-parameters.

    The learning rate may follow a step schedule over rounds (`lr_milestones`, as
    torch.optim.lr_scheduler.MultiStepLR stepped once a round, the way HeteroFL and FjORD decay
    it): round r trains with lr x lr_gamma^(number of milestones m < r), so the rounds after
    milestone m use the decayed rate. The rate is a pure function of the round (resume and a
    deployment's nodes train with the same one). Training needs the round's hyper-parameters,
    `for_round(r)`; `train` refuses a schedule that has not been resolved for a round."""

    lr: float = 0.01
    momentum: float = 0.0
    local_epochs: int = 2
    batch_size: int = 64
    masked_ce: bool = False  # HeteroFL's masked cross-entropy: the loss over own classes only
    weight_decay: float = 0.0  # L2 penalty, as torch.optim.SGD adds it to the gradient
    grad_clip_norm: float = 0.0  # clip each step's gradient to this L2 norm (0 = off)
    lr_milestones: tuple[int, ...] = ()  # rounds after which the lr is multiplied by lr_gamma
    lr_gamma: float = 0.1

    def lr_at(self, round_idx: int) -> float:
        """The client learning rate of round `round_idx` (1-based)."""
        return self.lr * self.lr_gamma ** sum(m < round_idx for m in self.lr_milestones)

    def for_round(self, round_idx: int) -> "LocalTraining":
        """The hyper-parameters clients train with in round `round_idx`: its lr, no schedule."""
        if not self.lr_milestones:
            return self
        return replace(self, lr=self.lr_at(round_idx), lr_milestones=())


def train(model: torch.nn.Module, data: TensorDataset, info: DatasetInfo, hp: LocalTraining,
          generator: torch.Generator, masks: Optional[list[torch.Tensor]] = None, *,
          scales: Optional[list[float]] = None, widths: Optional[Callable[[], list[int]]] = None,
          distill: bool = False, classes: Optional[torch.Tensor] = None) -> tuple[float, int]:
    """Local SGD of a TableNet; masked weights stay zero (weights and gradients masked every
    step). The width methods' hooks (methods/train): `scales` divide each group's output while
    training; `widths()` gives each step's nested widths; with `distill` each such step first
    trains the whole model on the labels and the narrower one on its predictions. `classes`
    (masked cross-entropy): the model's outputs are these classes, in this order, and the
    client's labels are mapped onto them.

    Weight decay as torch.optim.SGD's; with `grad_clip_norm` each step's gradient (after the
    masks, before the step) is clipped to that L2 norm over the whole model (HeteroFL clips at
    1). Batch norm trains on each batch's own statistics (static batch norm, fl/evaluate.py).

    Returns (the mean training loss over all steps, the training FLOPs of the steps taken)."""
    if hp.lr_milestones:
        raise ValueError("train: an lr schedule (lr_milestones) must be resolved for the round "
                         "first: pass LocalTraining.for_round(round_idx)")
    opt = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum,
                          weight_decay=hp.weight_decay)
    params = list(model.parameters())
    if masks is not None:
        _apply(params, masks)
    labels = data.labels if classes is None else _local_labels(data.labels, classes, info)
    flops_per_sample = _flops_per_sample(model.spec)
    total, steps, flops = torch.zeros((), device=data.images.device), 0, 0
    model.train()
    for _ in range(hp.local_epochs):
        order = torch.randperm(len(data), generator=generator).to(data.images.device)
        for batch in order.split(hp.batch_size):
            x, y = normalize(data.images[batch], info), labels[batch]
            step = widths() if widths is not None else None
            opt.zero_grad(set_to_none=True)
            if step is not None and distill:  # the whole model teaches the drawn width
                teacher = model(x, scales)
                F.cross_entropy(teacher, y).backward()
                y = teacher.detach().softmax(1)
                flops += len(batch) * flops_per_sample(None)
            loss = F.cross_entropy(model(x, scales, step), y)
            loss.backward()
            flops += len(batch) * flops_per_sample(step)
            if masks is not None:
                for p, m in zip(params, masks):
                    p.grad.mul_(m)
            if hp.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, hp.grad_clip_norm)
            opt.step()
            if masks is not None:
                _apply(params, masks)
            total += loss.detach()
            steps += 1
        if not torch.isfinite(total):  # one sync per epoch, not per step
            raise DivergenceError(f"training loss became {total.item()}")
    return total.item() / max(steps, 1), flops


def _flops_per_sample(spec) -> Callable[[Optional[list[int]]], int]:
    """Training FLOPs of one sample at the given nested widths (None: the whole model)."""
    @functools.lru_cache(maxsize=None)
    def at(widths: Optional[tuple[int, ...]]) -> int:
        narrowed = spec if widths is None else spec.with_widths(dict(zip(spec.groups, widths)))
        return narrowed.train_flops_per_sample()
    return lambda widths: at(None if widths is None else tuple(widths))


def _local_labels(labels: torch.Tensor, classes: torch.Tensor, info: DatasetInfo
                  ) -> torch.Tensor:
    """A client's labels as positions in `classes` (its model's outputs)."""
    position = torch.full((info.num_classes,), -1, dtype=torch.int64, device=labels.device)
    position[classes.to(labels.device)] = torch.arange(len(classes), device=labels.device)
    return position[labels]


def _apply(params: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.mul_(m)
