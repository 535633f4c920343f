"""FedPrune-Sparse: federated learning with client-side pruning and sparsified updates.

The notebooks, the command line and the batch runner all call into this package:
`ExperimentConfig` holds the parameters, `run_experiment` runs one experiment.
"""

__version__ = "0.1.0"

from .config import ConfigError, ExperimentConfig  # noqa: E402

__all__ = ["ConfigError", "ExperimentConfig", "run_experiment", "__version__"]


def run_experiment(*args, **kwargs):
    """See `fedprune_core.simulation.run_experiment` (imported lazily: torch is heavy)."""
    from .run.loop import run_experiment as run

    return run(*args, **kwargs)
