"""YAML parameter files and values: reading them into ExperimentConfig fields, with every way a
file can be unusable reported as a ConfigError that names the file and the parameter."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, ExperimentConfig, coerce_value

# Parameters that were replaced, with what replaces them (old params files get a clear error).
REPLACED = {"pruning": "pruning_mode: none (no pruning), structured or unstructured",
            "sparsification": "sparsify_method: none (dense updates) or a compression method"}


def load_params_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML parameter file; `extends: other.yaml` pulls shared settings in first.

    Every way a file can be unusable is a ConfigError naming the file: missing, not text, not
    valid YAML, empty (say `{}` to mean "all defaults"), not a mapping, an unknown parameter,
    or an `extends:` chain that comes back to itself.
    """
    path = Path(path)
    where = f" (named by extends: in {' -> '.join(map(str, _chain))})" if _chain else ""
    if path.resolve() in [p.resolve() for p in _chain]:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"params file {path}: extends: cycle {cycle}; allowed: a chain of "
                          f"files that ends")
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist{where}")
    data = _parse_yaml(path)
    if data is None:
        raise ConfigError(f"params file {path} holds no parameters (empty, or only comments); "
                          f"allowed: a mapping of parameter: value (write {{}} to run on the "
                          f"defaults)")
    if not isinstance(data, dict):
        raise ConfigError(f"params file {path}: expected a mapping of parameter: value, got "
                          f"a {type(data).__name__}")
    parents = data.pop("extends", None) or []
    parents = [parents] if isinstance(parents, str) else parents
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"params file {path}: extends: expected a file name or a list of "
                          f"them, got {parents!r}")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged.update(load_params_file(path.parent / parent, (*_chain, path)))
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    refuse_replaced(data, f"params file {path}: ")
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ConfigError(f"params file {path}: unknown parameter(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(names))}")
    merged.update(data)
    return merged


def refuse_replaced(values: dict, where: str = "") -> None:
    for name in values:
        if name in REPLACED:
            raise ConfigError(f"{where}{name}: this parameter was replaced; use "
                              f"{REPLACED[name]}")


def _parse_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"params file {path} is not a text file; allowed: a YAML file of "
                          f"parameter: value lines") from None
    except OSError as err:
        raise ConfigError(f"params file {path} cannot be read: {err.strerror}") from None
    if "\0" in text:
        raise ConfigError(f"params file {path} is not a text file; allowed: a YAML file of "
                          f"parameter: value lines")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"params file {path} is not valid YAML{at}: {problem}; allowed: "
                          f"parameter: value lines, indented with spaces (not tabs)") from None


def parse_yaml_value(name: str, text: str) -> Any:
    """A value written as YAML (`--set key=value`), coerced to the parameter's type."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{name}: {text!r} is not a valid YAML value ({problem})") from None
    return coerce_value(name, value)
