"""What the ServerApp and the ClientApp say to each other, as Flower messages.

A round sends each node one train message for its sampled clients (train_message): for each
client its broadcast (the very `fl.wire.encode` bytes the simulation hands it) as one raw byte
array, and a small record: the experiment's parameters (JSON), the round, the clients, and the
rounds whose saved state each starts from (node_state.py). The reply carries each client's
encoded update (the bytes clients.csv counts as uplink) and result record (fl.types.ClientResult
without the message: loss, FLOPs, ratios, times), the one record format of a client's result,
or the failure of its task. Everything else in a message is Flower's framing: its serialized
size minus the payload is the overhead a deployment reports beside, never inside, uplink_bytes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Union

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from .. import __version__

PROTOCOL = 3  # 2: the reply's record is fl.types.ClientResult's; 3: one message a node
TASK, BROADCAST, UPDATE, RESULT, FAILURES, NODE = (
    "fedprune.task", "fedprune.broadcast", "fedprune.update", "fedprune.result",
    "fedprune.failures", "fedprune.node")
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


def check_fingerprint(theirs: str) -> None:
    if theirs != fingerprint():
        raise NodeFailure(SETUP, f"the server runs {theirs!r}, this node {fingerprint()!r}: "
                                 f"install the same release on both")


def error_reason(kind: str, text: str) -> str:
    return f"{_ERROR_PREFIX}{kind}: {text}"


def parse_error(reason: str) -> tuple[str, str]:
    """(kind, text) of an error reply; Flower's own errors (a node gone, a ClientApp that
    crashed) are FAILED with their reason."""
    if reason.startswith(_ERROR_PREFIX):
        kind, _, text = reason[len(_ERROR_PREFIX):].partition(": ")
        return kind, text
    return FAILED, reason


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


# a client's task done: (encoded update, ClientResult record), or the failure it raised
Outcome = Union[tuple[bytes, dict], NodeFailure]


def timed(run: Callable, settings, task: Task) -> Outcome:
    """`run(settings, task)`'s outcome, its record with the node's wall time for the task
    (federation, state, update, saving) as node_time_sec."""
    start = time.perf_counter()
    try:
        update, record = run(settings, task)
    except NodeFailure as err:
        return err
    return update, {**record, "node_time_sec": time.perf_counter() - start}


def train_message(tasks: list[Task], node_id: int) -> Message:
    """One node's part of a round: its sampled clients' tasks, in cohort order, in one message.
    A SuperNode handles one message at a time, each a round trip to the SuperLink and a turn
    of its polling, so one message a node a round instead of one a client (same updates)."""
    first = tasks[0]
    record = ConfigRecord({"experiment": json.dumps(first.experiment), "round": first.round,
                           "fingerprint": first.fingerprint,
                           "clients": [t.client_id for t in tasks],
                           "base-rounds": [t.base_round for t in tasks]})
    broadcasts = ArrayRecord({str(t.client_id): _raw(t.broadcast) for t in tasks})
    return Message(RecordDict({TASK: record, BROADCAST: broadcasts}), dst_node_id=node_id,
                   message_type=TRAIN, group_id=str(first.round))


def tasks_of(message: Message) -> list[Task]:
    """The tasks of a train message (NodeFailure SETUP from a server of another release)."""
    record, broadcasts = message.content[TASK], message.content[BROADCAST]
    check_fingerprint(str(record.get("fingerprint")))
    experiment = json.loads(record["experiment"])
    return [Task(experiment, int(record["round"]), int(cid), int(base),
                 bytes(broadcasts[str(cid)].data), str(record["fingerprint"]))
            for cid, base in zip(record["clients"], record["base-rounds"])]


def reply(message: Message, outcomes: dict[int, Outcome]) -> Message:
    """Each client's encoded update and ClientResult record (ClientResult.to_record), or the
    failure its task raised."""
    done = {cid: out for cid, out in outcomes.items() if not isinstance(out, NodeFailure)}
    content = RecordDict({
        UPDATE: ArrayRecord({str(cid): _raw(update) for cid, (update, _) in done.items()}),
        FAILURES: ConfigRecord({str(cid): error_reason(out.kind, str(out))
                                for cid, out in outcomes.items() if cid not in done})})
    for cid, (_, record) in done.items():
        content[f"{RESULT}.{cid}"] = ConfigRecord(record)
    return Message(content, reply_to=message)


def outcome_of(reply_message: Message, client_id: int):
    """(update bytes, result record) of the client from a node's reply, the NodeFailure of
    its task (or of the whole message), or None when the reply does not hold it."""
    if reply_message.has_error():
        return NodeFailure(*parse_error(reply_message.error.reason))
    failures = reply_message.content.get(FAILURES)
    if failures is not None and str(client_id) in failures:
        return NodeFailure(*parse_error(str(failures[str(client_id)])))
    updates = reply_message.content.get(UPDATE)
    if updates is None or str(client_id) not in updates:
        return None
    return bytes(updates[str(client_id)].data), reply_message.content[f"{RESULT}.{client_id}"]


def _raw(data: bytes) -> Array:
    """Bytes as one raw uint8 array: Flower ships them verbatim, in chunks, with no numpy
    header, so the payload inside a message is exactly `data`."""
    return Array("uint8", (len(data),), "raw", bytes(data))


def query_message(node_id: int, experiment: dict) -> Message:
    """Which clients does the node host? It carries the experiment, so that a node's executor
    can build the federation while the other nodes answer (executor.py)."""
    return Message(RecordDict({NODE: ConfigRecord({"fingerprint": fingerprint(),
                                                   "experiment": json.dumps(experiment)})}),
                   dst_node_id=node_id, message_type=QUERY)
