"""The simulated systems model: client capabilities and simulated time.

Wall time on a shared machine is noise, so the adaptive controller and the round deadline use
simulated time: training FLOPs / compute + downlink bytes / downlink + uplink bytes / uplink.
A synchronous round lasts as long as its slowest selected client.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ExperimentConfig
from ..rng import numpy_generator


@dataclass(frozen=True)
class ClientProfile:
    compute_gflops: float
    uplink_mbps: float
    downlink_mbps: float

    def time(self, train_flops: float, downlink_bytes: float, uplink_bytes: float) -> float:
        return (train_flops / (self.compute_gflops * 1e9)
                + 8 * downlink_bytes / (self.downlink_mbps * 1e6)
                + 8 * uplink_bytes / (self.uplink_mbps * 1e6))


def make_profiles(cfg: ExperimentConfig) -> list[ClientProfile]:
    """Seeded log-normal capabilities around the configured medians."""
    rng = numpy_generator(cfg.seed, "profiles")
    spread = cfg.capability_spread
    factors = np.exp(rng.normal(0.0, spread, size=(cfg.num_clients, 3)))
    return [ClientProfile(cfg.compute_gflops * c, cfg.uplink_mbps * u, cfg.downlink_mbps * d)
            for c, u, d in factors]


def round_times(profiles: list[ClientProfile], samples: list[int], flops_per_sample: float,
                params: int, cfg: ExperimentConfig) -> np.ndarray:
    """Each client's simulated time for a round with a model of `params` parameters: its
    training FLOPs on its own data, a dense download and an upload of the expected size."""
    down = 4.0 * params
    up = down * ((1.0 - cfg.sparsity_ratio) * 2 if cfg.compression else 1.0)
    return np.array([p.time(flops_per_sample * n * cfg.local_epochs, down, up)
                     for p, n in zip(profiles, samples)])


def auto_deadline(profiles: list[ClientProfile], samples: list[int], flops_per_sample: float,
                  params: int, cfg: ExperimentConfig) -> float:
    """The median client's simulated time at the base pruning ratio: the default deadline."""
    return float(np.median(round_times(profiles, samples, flops_per_sample, params, cfg)))
