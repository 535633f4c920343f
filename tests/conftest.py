"""Shared fixtures. Real MNIST comes from $FEDPRUNE_DATA_ROOT (CI: ../shared/data)."""


import pytest

from fedprune_core.config import ExperimentConfig


# Small but real: MNIST, 10% of the training set, a few clients.
TINY = dict(rounds=2, num_clients=4, clients_per_round=2, local_epochs=1, data_fraction=0.1,
            progress="off", num_threads=1)


@pytest.fixture
def tiny_config(tmp_path):
    def make(**changes) -> ExperimentConfig:
        return ExperimentConfig(**{**TINY, "results_dir": str(tmp_path / "results"), **changes})
    return make
