"""The method registry: each kind of method, each method registered by name.

Five kinds are the parts a round is built from (`extract`, `compress`, `aggregate`, `ratio`,
`train`): a part is a frozen dataclass whose fields are its hyper-parameters, named exactly as in
ExperimentConfig; `build` hands it those fields and nothing else of the configuration. The sixth
kind, `method` (methods/presets/), is what a researcher picks by one name (`method: fjord`): the
fields a paper's method sets, its knobs and its requirements (methods/presets/base.py).

The modules of a kind's package are imported on first use of that kind, so adding a method is
one module with a `@register(kind, name)` class. Presets import no torch: the configuration
reads them while validating, before torch is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

PACKAGES = {"extract": "extract", "compress": "compress", "aggregate": "aggregate",
            "ratio": "ratio", "train": "train", "method": "presets"}
KINDS = tuple(PACKAGES)
_REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
_loaded: set[str] = set()


def register(kind: str, name: str):
    """Class decorator: make a method available under `name`."""
    def add(cls):
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not cls:
            raise ValueError(f"{kind} method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[kind][name] = cls
        return cls
    return add


def _load(kind: str) -> None:
    if kind in _loaded:
        return
    package = importlib.import_module(f"{__package__}.{PACKAGES[kind]}")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    _loaded.add(kind)


def names(kind: str) -> tuple[str, ...]:
    _load(kind)
    return tuple(_REGISTRY[kind])


def method_class(kind: str, name: str) -> type:
    _load(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise ValueError(f"unknown {kind} method {name!r}; registered: "
                         f"{', '.join(_REGISTRY[kind])}") from None


def hyperparameters(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def build(kind: str, name: str, config: Any):
    """An instance of the method, given only its own hyper-parameters from `config`."""
    cls = method_class(kind, name)
    return cls(**{field: getattr(config, field) for field in hyperparameters(cls)})
