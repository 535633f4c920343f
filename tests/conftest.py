"""Shared fixtures. Real MNIST comes from $FEDPRUNE_DATA_ROOT (CI: ../shared/data)."""


import pytest
import torch

from fedprune_core.config import ExperimentConfig

# One torch thread per test process: `make test` runs one pytest worker per core (pytest-xdist),
# and OpenMP threads beyond the cores make every worker many times slower. Tests that measure
# threads set them themselves.
torch.set_num_threads(1)


# Small but real: MNIST, 10% of the training set, 1,000 test images, a few clients (a run's
# evaluations on the whole 10,000-image test set would cost more than its training).
TINY = dict(rounds=2, num_clients=4, clients_per_round=2, local_epochs=1, data_fraction=0.1,
            test_samples=1000, progress="off", num_threads=1)


@pytest.fixture(autouse=True)
def no_figures(request, monkeypatch):
    """In-process runs draw no PNG figures: matplotlib was most of a tiny run's CPU time. The
    tests that look at figures are marked `@pytest.mark.figures`; runs in a subprocess (the
    CLI, notebooks, batches, deployments) always draw them."""
    if request.node.get_closest_marker("figures"):
        return
    from fedprune_core.run import plots
    for name in dir(plots):
        if name.endswith("_figures"):
            monkeypatch.setattr(plots, name, lambda *args, **kwargs: {})
    monkeypatch.setattr(plots, "partition_figure", lambda *args, **kwargs: None)


@pytest.fixture
def tiny_config(tmp_path):
    def make(**changes) -> ExperimentConfig:
        return ExperimentConfig(**{**TINY, "results_dir": str(tmp_path / "results"), **changes})
    return make


# Property-based tests (tests/test_properties.py): derandomised with a fixed example count, so
# every run tries the same inputs in the same time, and no deadline (a slow machine is no bug).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("suite", derandomize=True, max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.load_profile("suite")
