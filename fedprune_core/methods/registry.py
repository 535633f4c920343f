"""The method registry: five kinds of method, each registered by name.

A method is a frozen dataclass whose fields are its hyper-parameters, named exactly as in
ExperimentConfig; `build` hands it those fields and nothing else of the configuration. Every
module in methods/<kind>/ is imported on first use, so adding a method is one module with a
`@register(kind, name)` class (and its name among the config field's choices).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

KINDS = ("extract", "compress", "aggregate", "ratio", "train")
_REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
_loaded = False


def register(kind: str, name: str):
    """Class decorator: make a method available under `name`."""
    def add(cls):
        if name in _REGISTRY[kind]:
            raise ValueError(f"{kind} method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[kind][name] = cls
        return cls
    return add


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for kind in KINDS:
        package = importlib.import_module(f"{__package__}.{kind}")
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    _loaded = True


def names(kind: str) -> tuple[str, ...]:
    _load()
    return tuple(_REGISTRY[kind])


def method_class(kind: str, name: str) -> type:
    _load()
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
