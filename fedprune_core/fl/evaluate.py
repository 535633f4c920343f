"""Test-set evaluation of a flat global model: accuracy, loss, and what explains them
(per-class recall and the histogram of predicted classes).

Static batch norm (HeteroFL's sBN, Diao et al. 2021): models with `bn` rows keep no running
statistics while training (clients normalise with their batches' statistics); a model is
evaluated with statistics of a pass over training data in train mode, as HeteroFL's `stats()`
runs the global model over the training set before every test. Here that pass lives in
`evaluate`/`predict`: the test set is an `EvalSet` that carries the training samples for it
(`norm_data`, built by run/federation.py: the clients' training data, or a seeded sample of it,
`norm_stats_samples`), so every evaluated model, each width's sub-model included, gets its own
statistics. The pass runs batches of `batch_size` in sample order on one-thread workers (the same
numbers whatever the thread count); each bn row's statistics are the mean and biased variance over
every sample and position of the pass, merged from its batches' (HeteroFL averages per-batch
statistics with momentum None: the same up to the batches' spread). Without `norm_data` (a plain
TensorDataset) batch norm uses each test batch's own statistics, as HeteroFL's track=False models
evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data.catalog import DatasetInfo
from ..data.dataset import TensorDataset, normalize
from ..models.net import TableNet, model_from_flat
from ..models.table import ModelSpec
from .threads import one_thread_map


@dataclass(frozen=True)
class EvalSet(TensorDataset):
    """A test set with the training samples whose statistics static batch norm evaluates with
    (None: the model has no batch norm, or test batches' own statistics)."""

    norm_data: Optional[TensorDataset] = None


@dataclass(frozen=True)
class Evaluation:
    accuracy: float  # percent
    loss: float  # mean cross-entropy
    recall: np.ndarray  # per class, percent (nan for a class absent from the test set)
    predicted_share: np.ndarray  # per class, percent of all predictions


def predict(params: torch.Tensor, spec: ModelSpec, test: TensorDataset, info: DatasetInfo,
            batch_size: int, workers: int = 1) -> tuple[torch.Tensor, float]:
    """(predicted class of every test sample, summed cross-entropy). On a CPU the batches run
    on `workers` threads of one torch thread each, so the numbers do not depend on `workers`
    (fl/threads.py); the losses are summed in batch order."""
    model = model_from_flat(spec, params, params.device).eval()
    norm_data = getattr(test, "norm_data", None)
    if norm_data is not None and spec.has_norm("bn"):
        model.norm_stats = norm_statistics(model, norm_data, info, batch_size, workers)

    def batch(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():  # thread-local: entered in the thread that computes
            logits = model(normalize(test.images[start:start + batch_size], info))
            return logits.argmax(1), F.cross_entropy(
                logits, test.labels[start:start + batch_size], reduction="sum")

    starts = range(0, len(test), batch_size)
    if params.device.type == "cpu":
        results = one_thread_map(batch, starts, workers)
    else:  # one GPU stream: batches one after another
        results = [batch(start) for start in starts]
    loss = torch.zeros((), device=test.images.device)
    for _, batch_loss in results:
        loss += batch_loss
    return torch.cat([p for p, _ in results]), loss.item()


def norm_statistics(model: TableNet, data: TensorDataset, info: DatasetInfo, batch_size: int,
                    workers: int = 1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per bn row: (mean, biased variance) per channel over a train-mode pass of `data` (see
    the module docstring). Batches run on one-thread workers and merge in batch order."""
    def batch(start: int) -> dict:
        moments: dict = {}
        with torch.inference_mode():
            model(normalize(data.images[start:start + batch_size], info), moments=moments)
        return moments

    was_training = model.training
    model.train()
    starts = range(0, len(data), batch_size)
    try:
        if data.images.device.type == "cpu":
            results = one_thread_map(batch, starts, workers)
        else:
            results = [batch(start) for start in starts]
    finally:
        model.train(was_training)
    stats = {}
    for name in results[0]:
        count = torch.tensor([float(r[name][0]) for r in results], dtype=torch.float64,
                             device=data.images.device)
        means = torch.stack([r[name][1] for r in results]).double()
        variances = torch.stack([r[name][2] for r in results]).double()
        weight = (count / count.sum())[:, None]
        mean = (weight * means).sum(0)  # Chan et al.'s merge of batch moments
        var = (weight * (variances + (means - mean).square())).sum(0)
        stats[name] = (mean.float(), var.float())
    return stats


def class_report(predicted: torch.Tensor, labels: torch.Tensor,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(recall per class, share of predictions per class), both in percent."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    confusion.index_put_((labels.cpu(), predicted.cpu()), torch.ones(len(labels),
                                                                     dtype=torch.int64),
                         accumulate=True)
    support = confusion.sum(1).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, 100.0 * np.diag(confusion.numpy()) / support, np.nan)
    share = 100.0 * confusion.sum(0).numpy() / max(len(labels), 1)
    return recall, share


def evaluate(params: torch.Tensor, spec: ModelSpec, test: TensorDataset, info: DatasetInfo,
             batch_size: int, workers: int = 1) -> Evaluation:
    predicted, loss = predict(params, spec, test, info, batch_size, workers)
    correct = (predicted == test.labels).sum().item()
    recall, share = class_report(predicted, test.labels, info.num_classes)
    return Evaluation(100.0 * correct / len(test), loss / len(test), recall, share)
