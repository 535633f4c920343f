"""The small types a round is made of: its static setup, a client's slot, the cohort, and what
a client's update brings back (`ClientResult`: one record format, in the simulation and on the
wire of a deployment)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Union

import numpy as np

from ..data.catalog import DatasetInfo
from ..data.dataset import TensorDataset
from ..methods.aggregate.base import Aggregator
from ..methods.compress.base import Compressor
from ..methods.extract.base import Extractor
from ..methods.ratio.base import RatioPolicy
from ..methods.train.base import LocalMethod
from ..methods.train.sgd import PlainSGD
from ..models.net import ParamLayout
from .store import ClientState
from .systems import ClientProfile
from .training import LocalTraining

ENGINES = ("sequential", "parallel", "cohort")


@dataclass(frozen=True)
class RoundSetup:
    """What stays the same from round to round: the model layout and the methods
    (run/federation.py `build_setup` makes it from a configuration)."""

    layout: ParamLayout
    info: DatasetInfo
    training: LocalTraining
    extractor: Extractor
    compressor: Compressor
    aggregator: Aggregator
    ratio_policy: RatioPolicy
    error_feedback: bool
    seed: int
    deadline: float  # simulated seconds, for the ratio policy
    local_method: LocalMethod = PlainSGD()  # how a client trains its sub-model (methods/train)
    engine: str = "parallel"  # local training: one of ENGINES
    workers: int = 1  # threads of the parallel engine (and of evaluation), one torch thread each

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r}; one of {', '.join(ENGINES)}")

    def initial_ratios(self, full_round_times: np.ndarray) -> np.ndarray:
        """Every client's first pruning ratio (1: it sits every round out)."""
        return self.ratio_policy.initial(full_round_times, self.deadline)


@dataclass(frozen=True)
class ClientSlot:
    client_id: int
    data: TensorDataset
    profile: ClientProfile


@dataclass(frozen=True)
class Cohort:
    round: int  # 1-based
    clients: tuple[ClientSlot, ...]


@dataclass
class ClientResult:
    """A client's update as the server receives it: the encoded `message` (what uplink bytes
    count) and the numbers of the client's row. In a deployment the node sends `to_record()`
    beside the message and the server rebuilds it with `from_record`."""

    client_id: int
    message: bytes
    num_samples: int
    ratio: float  # the pruning ratio the client trained at
    next_ratio: float  # its ratio for the next round it trains (the ratio policy's step)
    trained_params: int  # coordinates of its (sub-)model
    sent: int  # coordinates whose values the message carries
    train_loss: float
    train_flops: int
    dense_train_flops: int  # what the same steps cost on the full model
    simulated_time_sec: float  # fl/systems.py: compute, downlink and uplink of this update
    update_time_sec: float  # measured: preparing + training + finishing
    train_time_sec: float  # the training part of update_time_sec
    node_time_sec: float = math.nan  # a deployment node's wall time for the whole task

    def to_record(self) -> dict[str, Union[int, float]]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "message"}

    @classmethod
    def from_record(cls, message: bytes, record) -> "ClientResult":
        """From a node's record (a mapping; every field but the message), each value as its
        field's type."""
        kinds = {"int": int, "float": float}
        return cls(message=message, **{
            f.name: kinds[f.type](record[f.name]) for f in dataclasses.fields(cls)
            if f.name != "message"})


class Update(NamedTuple):
    """A client's update as a round's update source yields it."""

    slot: ClientSlot
    downlink_bytes: int
    result: ClientResult
    state: ClientState  # the client's state after the update (in a deployment: its ratio only)


@dataclass(frozen=True)
class Missing:
    """A client whose update did not arrive, or arrived and did not decode (a deployment's node
    failed or timed out; the simulation never yields one). It gets a row with status 'missing'
    counting what was sent to it; the model and the client's state stay as they were."""

    slot: ClientSlot
    downlink_bytes: int


# (server state, cohort, setup, the round's planner) -> each client's Update or Missing, in
# cohort order. A source with a `start(state, cohort, setup)` method is told the next round as
# soon as the global model is aggregated, before the loop evaluates it (run/loop.py): a
# deployment's nodes then train while the server evaluates.
UpdateSource = Callable[..., Iterator[Union[Update, Missing]]]
