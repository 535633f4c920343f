"""YAML parameter files: every way a file can be unusable reported as a ConfigError that names
the file. What the keys mean is the configuration's business (config.py passes `check_keys`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

from .errors import ConfigError

CheckKeys = Callable[[Mapping, str], None]


def load_params_file(path: str | Path, check_keys: Optional[CheckKeys] = None,
                     _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML parameter file; `extends: other.yaml` pulls shared settings in first.

    Every way a file can be unusable is a ConfigError naming the file: missing, not text, not
    valid YAML, empty (say `{}` to mean "all defaults"), not a mapping, keys `check_keys(data,
    "params file PATH: ")` refuses (an unknown parameter), or an `extends:` chain that comes
    back to itself.
    """
    path = Path(path)
    where = f" (named by extends: in {' -> '.join(map(str, _chain))})" if _chain else ""
    if _real(path, where) in [_real(p, "") for p in _chain]:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"params file {path}: extends: cycle {cycle}; allowed: a chain of "
                          f"files that ends")
    try:
        is_file, exists = path.is_file(), path.exists()
    except OSError as err:  # a name too long for the file system, a folder not readable
        raise ConfigError(f"params file {path}{where} cannot be read ({err.strerror}); "
                          f"expected a YAML file") from None
    if not is_file:
        what = "is not a file (a folder or a device)" if exists else "does not exist"
        raise ConfigError(f"params file {path} {what}{where}; expected a YAML file")
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
        merged.update(load_params_file(path.parent / parent, check_keys, (*_chain, path)))
    if check_keys is not None:
        check_keys(data, f"params file {path}: ")
    merged.update(data)
    return merged


def _real(path: Path, where: str) -> Path:
    """The file a path names, links followed; a loop of links is the file's error, not
    Path.resolve's RuntimeError."""
    try:
        return path.resolve()
    except (OSError, RuntimeError) as err:
        why = err.strerror if isinstance(err, OSError) else "a loop of symbolic links"
        raise ConfigError(f"params file {path}{where} cannot be read ({why}); expected a "
                          f"YAML file") from None


# Larger than any parameter file: what is bigger is not one (a log, a dataset, /dev/zero).
MAX_PARAMS_BYTES = 1 << 20


def _parse_yaml(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PARAMS_BYTES + 1)
        if len(raw) > MAX_PARAMS_BYTES:
            raise ConfigError(f"params file {path} is larger than {MAX_PARAMS_BYTES >> 20} MiB; "
                              f"allowed: a YAML file of parameter: value lines")
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"params file {path} is not a text file; allowed: a YAML file of "
                          f"parameter: value lines") from None
    except OSError as err:
        raise ConfigError(f"params file {path} cannot be read: {err.strerror}") from None
    if "\0" in text:
        raise ConfigError(f"params file {path} is not a text file; allowed: a YAML file of "
                          f"parameter: value lines")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as err:
        raise ConfigError(f"params file {path}: {err.key} is given twice (lines {err.first} "
                          f"and {err.second}); YAML would silently keep the last; allowed: "
                          f"each parameter once") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"params file {path} is not valid YAML{at}: {problem}; allowed: "
                          f"parameter: value lines, indented with spaces (not tabs)") from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first: int, second: int):
        super().__init__(f"{key} given twice")
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error: PyYAML keeps the
    last one without a word, so `lr: 0.1` further down a file would silently win."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *shared` merges, by design
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
        return super().construct_mapping(node, deep=deep)
