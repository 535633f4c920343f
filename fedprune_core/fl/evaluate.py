"""Test-set evaluation of a flat global model: accuracy, loss, and what explains them
(per-class recall and the histogram of predicted classes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.catalog import DatasetInfo
from ..data.loading import TensorDataset, normalize
from ..models.net import model_from_flat
from ..models.table import ModelSpec
from .threads import one_thread_map


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
