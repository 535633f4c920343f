"""A SuperNode's settings (its `--node-config`), read by the ClientApp on every message and
by the node's worker. No torch here: the ClientApp stays light."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from .protocol import SETUP, NodeFailure


@dataclass(frozen=True)
class NodeSettings:
    """A SuperNode's `--node-config`: which slice of the clients it hosts (clients
    {cid : cid % num_nodes == node_index}), where it keeps their state and finds its data."""

    node_index: int
    num_nodes: int
    state_dir: Path
    data_root: Optional[str] = None  # default: the node's $FEDPRUNE_DATA_ROOT, else ./data
    device: Optional[str] = None  # default: the experiment's
    pause_round: int = 0  # fault injection (tests): block in this round until killed

    @classmethod
    def from_node_config(cls, config: dict[str, Any]) -> "NodeSettings":
        def number(key: str, default: Optional[int] = None) -> int:
            value = config.get(key, default)
            try:
                if value is None or isinstance(value, bool):
                    raise ValueError
                return int(value)
            except (TypeError, ValueError):
                raise NodeFailure(SETUP, f"node-config {key}: expected an int, got "
                                         f"{value!r}") from None

        index, count = number("node-index"), number("num-nodes")
        if not (count >= 1 and 0 <= index < count):
            raise NodeFailure(SETUP, f"node-config node-index={index} num-nodes={count}: "
                                     f"allowed: 0 <= node-index < num-nodes")
        text = {k: (str(config[k]) if config.get(k) not in (None, "") else None)
                for k in ("state-dir", "data-root", "device")}
        return cls(index, count, Path(text["state-dir"] or "fedprune-node-state").expanduser(),
                   text["data-root"], text["device"], number("pause-round", 0))

    def hosts(self, client_id: int) -> bool:
        return client_id % self.num_nodes == self.node_index

    def to_dict(self) -> dict:
        return {**asdict(self), "state_dir": str(self.state_dir)}

    @classmethod
    def from_dict(cls, values: dict) -> "NodeSettings":
        return cls(**{**values, "state_dir": Path(values["state_dir"])})
