"""The Flower app this deployment submits, as files: its pyproject (the components are this
installed package's, so server and nodes run the same code), the run config carrying the
experiment, and the Flower config naming the SuperLink connection `flwr run` uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import tomli_w

from .. import __version__

APP_NAME = "fedprune-sparse"
CONNECTION = "fedprune"  # the SuperLink connection's name in the Flower config


def write_flower_config(home: Path, address: str, root_certificates: Optional[str]) -> None:
    """FLWR_HOME/config.toml: the connection to `address`, over TLS with the CA
    `root_certificates`, insecure without it."""
    home.mkdir(parents=True, exist_ok=True)
    connection = {"address": address}
    if root_certificates:
        connection["root-certificates"] = str(Path(root_certificates).resolve())
    else:
        connection["insecure"] = True
    (home / "config.toml").write_text(tomli_w.dumps(
        {"superlink": {"default": CONNECTION, CONNECTION: connection}}))


def write_app(folder: Path) -> Path:
    """The app's folder (its pyproject.toml)."""
    app = folder / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(APP_PYPROJECT.format(name=APP_NAME, version=__version__))
    return app


def write_run_config(path: Path, experiment: dict, nodes: int, round_timeout: float,
                     node_wait: float, crash_round: int, status_file: str) -> Path:
    """The run config (server_app.ServerSettings reads it back)."""
    path.write_text(tomli_w.dumps({
        "experiment": json.dumps(experiment), "num-nodes": nodes,
        "round-timeout": float(round_timeout), "node-wait": float(node_wait),
        "crash-round": int(crash_round), "status-file": status_file}))
    return path


APP_PYPROJECT = """\
# Written by `python -m fedprune_core deploy` (fedprune_core/deploy/launch.py).
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "FedPrune-Sparse on a Flower deployment: the suite's ServerApp and ClientApp"
license = "MIT"
dependencies = ["{name}[flower]=={version}"]

[tool.flwr.app]
publisher = "fedprune"

[tool.flwr.app.components]
serverapp = "fedprune_core.deploy.server_app:app"
clientapp = "fedprune_core.deploy.client_app:app"

[tool.flwr.app.config]
experiment = "{{}}"
num-nodes = 1
round-timeout = 3600.0
node-wait = 600.0
crash-round = 0
status-file = ""
"""
