"""What the ServerApp and the ClientApp say to each other, as Flower messages.

A train instruction carries the client's broadcast (the very `fl.wire.encode` bytes the
simulation hands its clients) as one raw byte array, plus a small record: the experiment's
parameters (JSON), the round, the client, and the round whose saved state the client starts
from (node_state.py). The reply carries the encoded update (the bytes clients.csv counts as
uplink) and the client's result record (fl.types.ClientResult without the message: loss, FLOPs,
ratios, times), the one record format of a client's result.
Everything else in a message is Flower's framing: its serialized size minus the payload is the
overhead a deployment reports beside, never inside, uplink_bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from .. import __version__

PROTOCOL = 2  # 2: the reply's record is fl.types.ClientResult's
TASK, BROADCAST, UPDATE, RESULT, NODE = ("fedprune.task", "fedprune.broadcast",
                                         "fedprune.update", "fedprune.result", "fedprune.node")
PAYLOAD = "payload"
TRAIN, QUERY = "train", "query"
# Error replies: "fedprune:<kind>: <text>". A divergence stops the run as in the simulation; a
# node that cannot serve the run (other code, a bad node-config, no data, lost state) stops it
# with the node named; any other failure makes that client's update missing for the round.
DIVERGENCE, SETUP, FAILED = "divergence", "setup", "failed"
_ERROR_PREFIX = "fedprune:"


def fingerprint() -> str:
    """What server and nodes must share for the same numbers: the package version and this
    protocol (a node with another release is refused rather than trusted)."""
    return f"fedprune-sparse {__version__} protocol {PROTOCOL}"


class NodeFailure(Exception):
    """A ClientApp's failure, of one of the kinds above, sent back as a Flower Error."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind


def error_reason(kind: str, text: str) -> str:
    return f"{_ERROR_PREFIX}{kind}: {text}"


def parse_error(reason: str) -> tuple[str, str]:
    """(kind, text) of an error reply; Flower's own errors (a node gone, a ClientApp that
    crashed) are FAILED with their reason."""
    if reason.startswith(_ERROR_PREFIX):
        kind, _, text = reason[len(_ERROR_PREFIX):].partition(": ")
        return kind, text
    return FAILED, reason


def payload_record(data: bytes) -> ArrayRecord:
    """Bytes as one raw uint8 array: Flower ships them verbatim, in chunks, with no numpy
    header, so the payload inside a message is exactly `data`."""
    return ArrayRecord({PAYLOAD: Array("uint8", (len(data),), "raw", bytes(data))})


def payload_of(record: ArrayRecord) -> bytes:
    return bytes(record[PAYLOAD].data)


def serialized_size(message: Message) -> int:
    """Bytes of the message as Flower ships it: every object of its tree (metadata, records,
    array chunks), each once, serialized. HTTP framing comes on top."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


@dataclass(frozen=True)
class Task:
    """One client's train instruction."""

    experiment: dict  # ExperimentConfig.to_dict() of the server's run
    round: int
    client_id: int
    base_round: int  # the last round whose update from this client the server kept (0: none)
    broadcast: bytes
    fingerprint: str

    def message(self, node_id: int) -> Message:
        record = ConfigRecord({"experiment": json.dumps(self.experiment), "round": self.round,
                               "client": self.client_id, "base-round": self.base_round,
                               "fingerprint": self.fingerprint})
        return Message(RecordDict({TASK: record, BROADCAST: payload_record(self.broadcast)}),
                       dst_node_id=node_id, message_type=TRAIN, group_id=str(self.round))

    @classmethod
    def from_message(cls, message: Message) -> "Task":
        record = message.content[TASK]
        return cls(json.loads(record["experiment"]), int(record["round"]),
                   int(record["client"]), int(record["base-round"]),
                   payload_of(message.content[BROADCAST]), str(record["fingerprint"]))


def reply(message: Message, update: bytes, record: dict) -> Message:
    """The update's bytes and its ClientResult record (ClientResult.to_record)."""
    return Message(RecordDict({UPDATE: payload_record(update), RESULT: ConfigRecord(record)}),
                   reply_to=message)


def query_message(node_id: int) -> Message:
    return Message(RecordDict({NODE: ConfigRecord({"fingerprint": fingerprint()})}),
                   dst_node_id=node_id, message_type=QUERY)
