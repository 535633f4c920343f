"""The federation's state across rounds, in one frozen object that is also the checkpoint.

`ServerState` holds what round r + 1 needs from rounds 1..r: the global parameters, each
client's own state (error-feedback residual, pruning ratio; see store.py for where residuals
live), the aggregation method's state (e.g. FedAvgM's momentum) and which coordinates any client
has trained so far. A round returns a new ServerState; nothing is mutated in place, so a saved
state resumes to the same numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .store import ClientState, ClientStates

__all__ = ["ClientState", "ServerState"]


@dataclass(frozen=True)
class ServerState:
    round: int  # rounds completed
    params: torch.Tensor  # the global model, flat
    clients: ClientStates  # fl.store: ratios, committed residuals, changed ones
    aggregator: dict[str, torch.Tensor]  # the aggregation method's own state
    trained: torch.Tensor  # bool per coordinate: trained by some client in some round

    def replace(self, **changes) -> "ServerState":
        return dataclasses.replace(self, **changes)

    def evaluated_params(self) -> torch.Tensor:
        """The global model as evaluated and saved: coordinates no client has trained yet are
        zero, not their random initial values (a never-trained unit then outputs 0 and adds
        nothing downstream, as if it were absent; with masked averaging such units otherwise
        inject random features into every evaluation)."""
        return torch.where(self.trained, self.params, torch.zeros((), device=self.params.device))

    def to(self, device) -> "ServerState":
        """The same state on another device (checkpoints are saved from the CPU)."""
        return ServerState(self.round, self.params.to(device), self.clients.to(device),
                           {k: v.to(device) for k, v in self.aggregator.items()},
                           self.trained.to(device))

    # --- the checkpoint: plain values and tensors only, which load without running code -------
    def to_dict(self) -> dict:
        return {"round": self.round, "params": self.params.to("cpu"),
                "clients": self.clients.to_dict(),
                "aggregator": {k: v.to("cpu") for k, v in self.aggregator.items()},
                "trained": self.trained.to("cpu")}

    @classmethod
    def from_dict(cls, data: dict, store, device="cpu") -> "ServerState":
        return cls(data["round"], data["params"].to(device),
                   ClientStates.from_dict(data["clients"], store, device),
                   {k: v.to(device) for k, v in data["aggregator"].items()},
                   data["trained"].to(device))
