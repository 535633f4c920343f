"""The ClientApp: what a SuperNode runs for each message (Flower's message API).

`train` runs the local update of each client the message names (node.run_task) and replies
with their encoded updates and result records (fl.types.ClientResult); `query` tells the
ServerApp which clients this node hosts, so that it can address each sampled client's node.
Failures come back as Flower errors whose reason says what kind they are (protocol.py).

Where the update runs depends on the SuperNode's isolation. With `--isolation process` (what
`deploy` starts) the node's executor (executor.py) is a long-lived process that already holds
torch and the node's federation and calls `handle` itself, message after message. With
Flower's default `subprocess` isolation the SuperNode starts one `flwr-clientapp` process a
message; this module imports no torch, so that process stays light, and `train` hands the task
to the node's long-lived worker over a Unix socket (worker_link.py) instead.
"""

from __future__ import annotations

import os
import socket
from typing import Callable

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from . import protocol
from .settings import NodeSettings
from .worker_link import ask

# (node settings, the message's tasks) -> each client's outcome: node.run_tasks in the executor,
# ask_each (the node's worker, task by task) in a ClientApp process
Runner = Callable[[NodeSettings, list[protocol.Task]], dict[int, protocol.Outcome]]

app = ClientApp()


def _error(message: Message, kind: str, text: str) -> Message:
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                         reason=protocol.error_reason(kind, text)), reply_to=message)


def handle(msg: Message, context: Context, run: Runner) -> Message:
    """The reply to one of the ServerApp's messages, the updates computed by `run`."""
    try:
        settings = NodeSettings.from_node_config(dict(context.node_config))
    except protocol.NodeFailure as err:
        return _error(msg, err.kind, str(err))
    if msg.metadata.message_type == protocol.QUERY:
        return Message(RecordDict({protocol.NODE: ConfigRecord({
            "node-index": settings.node_index, "num-nodes": settings.num_nodes,
            "fingerprint": protocol.fingerprint(), "host": socket.gethostname(),
            "pid": os.getpid()})}), reply_to=msg)
    try:
        tasks = protocol.tasks_of(msg)  # the node's sampled clients, in cohort order
    except protocol.NodeFailure as err:
        return _error(msg, err.kind, str(err))
    return protocol.reply(msg, run(settings, tasks))


def ask_each(settings: NodeSettings, tasks: list[protocol.Task]) -> dict[int, protocol.Outcome]:
    """The tasks one after another, each by the node's worker (worker_link.py)."""
    return {task.client_id: protocol.timed(ask, settings, task) for task in tasks}


@app.train()
def train(msg: Message, context: Context) -> Message:
    return handle(msg, context, ask_each)


@app.query()
def query(msg: Message, context: Context) -> Message:
    return handle(msg, context, ask_each)
