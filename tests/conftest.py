"""Shared fixtures. Real MNIST comes from $FEDPRUNE_DATA_ROOT (CI: ../shared/data)."""

import os
from pathlib import Path

import pytest

from fedprune_core.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
if not os.environ.get("FEDPRUNE_DATA_ROOT") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["FEDPRUNE_DATA_ROOT"] = str(REPO.parent / "shared" / "data")

# Small but real: MNIST, 10% of the training set, a few clients.
TINY = dict(rounds=2, num_clients=4, clients_per_round=2, local_epochs=1, data_fraction=0.1,
            progress="off", num_threads=1)


@pytest.fixture
def tiny_config(tmp_path):
    def make(**changes) -> ExperimentConfig:
        return ExperimentConfig(**{**TINY, "results_dir": str(tmp_path / "results"), **changes})
    return make
