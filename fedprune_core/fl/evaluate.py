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


@dataclass(frozen=True)
class Evaluation:
    accuracy: float  # percent
    loss: float  # mean cross-entropy
    recall: np.ndarray  # per class, percent (nan for a class absent from the test set)
    predicted_share: np.ndarray  # per class, percent of all predictions


def predict(params: torch.Tensor, spec: ModelSpec, test: TensorDataset, info: DatasetInfo,
            batch_size: int) -> tuple[torch.Tensor, float]:
    """(predicted class of every test sample, summed cross-entropy)."""
    model = model_from_flat(spec, params, params.device).eval()
    loss = torch.zeros((), device=test.images.device)
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(test), batch_size):
            logits = model(normalize(test.images[start:start + batch_size], info))
            loss += F.cross_entropy(logits, test.labels[start:start + batch_size],
                                    reduction="sum")
            predicted.append(logits.argmax(1))
    return torch.cat(predicted), loss.item()


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
             batch_size: int) -> Evaluation:
    predicted, loss = predict(params, spec, test, info, batch_size)
    correct = (predicted == test.labels).sum().item()
    recall, share = class_report(predicted, test.labels, info.num_classes)
    return Evaluation(100.0 * correct / len(test), loss / len(test), recall, share)
