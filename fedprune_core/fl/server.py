"""The server: broadcast, decode -> masked FedAvg, evaluate.

FedAvg (McMahan et al. 2017) weighted by client sample counts, averaged per coordinate over
the clients that trained it (HeteroFL-style masked averaging, Diao et al. 2021), then applied
with a server learning rate. The server aggregates only what it decoded from the bytes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import wire
from ..data.loading import TensorDataset, normalize
from ..data.catalog import DatasetInfo
from ..models.layers import model_from_flat
from .pruning import Plan, Pruner


def broadcast(global_flat: torch.Tensor, plan: Plan) -> bytes:
    """The downlink message: the (sub-)model a client starts from, dense."""
    return wire.encode(plan, 0, 0, global_flat[plan.coords])


def masked_fedavg(global_flat: torch.Tensor, updates: list[wire.Decoded], weighting: str,
                  server_lr: float) -> torch.Tensor:
    """New global vector: each coordinate moves by the weighted mean of the received values
    over the clients whose plan trained it (unsent coordinates count as zero)."""
    numerator = torch.zeros_like(global_flat)
    denominator = torch.zeros_like(global_flat)
    for u in updates:
        weight = float(u.num_samples) if weighting == "samples" else 1.0
        numerator.index_add_(0, u.coords, u.values * weight)
        denominator.index_add_(0, u.plan.coords,
                               torch.full((len(u.plan.coords),), weight, device=global_flat.device))
    trained = denominator > 0
    step = torch.zeros_like(global_flat)
    step[trained] = numerator[trained] / denominator[trained]
    return global_flat + server_lr * step


def aggregate(global_flat: torch.Tensor, messages: list[bytes], pruner: Pruner, weighting: str,
              server_lr: float) -> torch.Tensor:
    updates = [wire.decode(m, pruner, global_flat.device) for m in messages]
    return masked_fedavg(global_flat, updates, weighting, server_lr)


def evaluate(global_flat: torch.Tensor, shape, test: TensorDataset, info: DatasetInfo,
             batch_size: int) -> tuple[float, float]:
    """(accuracy in percent, mean cross-entropy) on the test set."""
    model = model_from_flat(shape, global_flat, global_flat.device).eval()
    with torch.inference_mode():
        return _score(model, test, info, batch_size)


def _score(model, test: TensorDataset, info: DatasetInfo, batch_size: int):
    correct = torch.zeros((), dtype=torch.int64, device=test.images.device)
    loss = torch.zeros((), device=test.images.device)
    for start in range(0, len(test), batch_size):
        x = normalize(test.images[start:start + batch_size], info)
        y = test.labels[start:start + batch_size]
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return 100.0 * correct.item() / len(test), loss.item() / len(test)
