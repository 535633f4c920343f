"""Plain local SGD on the client's (sub-)model (McMahan et al. 2017, "Communication-Efficient
Learning of Deep Networks from Decentralized Data"): no hook."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import register
from .base import LocalMethod


@register("train", "sgd")
@dataclass(frozen=True)
class PlainSGD(LocalMethod):
    pass
