"""Test-set evaluation of a flat global model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.catalog import DatasetInfo
from ..data.loading import TensorDataset, normalize
from ..models.net import model_from_flat
from ..models.table import ModelSpec


def evaluate(params: torch.Tensor, spec: ModelSpec, test: TensorDataset, info: DatasetInfo,
             batch_size: int) -> tuple[float, float]:
    """(accuracy in percent, mean cross-entropy) on the test set."""
    model = model_from_flat(spec, params, params.device).eval()
    correct = torch.zeros((), dtype=torch.int64, device=test.images.device)
    loss = torch.zeros((), device=test.images.device)
    with torch.inference_mode():
        for start in range(0, len(test), batch_size):
            x = normalize(test.images[start:start + batch_size], info)
            y = test.labels[start:start + batch_size]
            logits = model(x)
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    return 100.0 * correct.item() / len(test), loss.item() / len(test)
