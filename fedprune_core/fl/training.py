"""Local SGD on one client: the only place a model is trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..data.catalog import DatasetInfo
from ..data.loading import TensorDataset, normalize


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass(frozen=True)
class LocalTraining:
    """A client's own hyper-parameters."""

    lr: float = 0.01
    momentum: float = 0.0
    local_epochs: int = 2
    batch_size: int = 64


def train(model: torch.nn.Module, data: TensorDataset, info: DatasetInfo, hp: LocalTraining,
          generator: torch.Generator, masks: Optional[list[torch.Tensor]] = None) -> float:
    """Local SGD; masked weights stay zero (weights and gradients masked every step).
    Returns the mean training loss over all steps."""
    opt = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum)
    params = list(model.parameters())
    if masks is not None:
        _apply(params, masks)
    total, steps = torch.zeros((), device=data.images.device), 0
    model.train()
    for _ in range(hp.local_epochs):
        order = torch.randperm(len(data), generator=generator).to(data.images.device)
        for batch in order.split(hp.batch_size):
            loss = F.cross_entropy(model(normalize(data.images[batch], info)), data.labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if masks is not None:
                for p, m in zip(params, masks):
                    p.grad.mul_(m)
            opt.step()
            if masks is not None:
                _apply(params, masks)
            total += loss.detach()
            steps += 1
        if not torch.isfinite(total):  # one sync per epoch, not per step
            raise DivergenceError(f"training loss became {total.item()}")
    return total.item() / max(steps, 1)


def _apply(params: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.mul_(m)
