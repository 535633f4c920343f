"""The ClientApp: what a SuperNode runs for each message (Flower's message API).

`train` hands one client's local update to the node's long-lived worker (worker_link.py, which
runs node.py there) and replies with its encoded update and its result record
(fl.types.ClientResult); this module imports no torch, so the process Flower starts for every
message stays light; `query` tells the ServerApp which clients this node hosts, so
that it can address each sampled client's node. Failures come back as Flower errors whose
reason says what kind they are (protocol.py).
"""

from __future__ import annotations

import os
import socket
import time

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from . import protocol
from .settings import NodeSettings
from .worker_link import ask

app = ClientApp()


def _error(message: Message, kind: str, text: str) -> Message:
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                         reason=protocol.error_reason(kind, text)), reply_to=message)


@app.train()
def train(msg: Message, context: Context) -> Message:
    start = time.perf_counter()
    try:
        settings = NodeSettings.from_node_config(dict(context.node_config))
        update, record = ask(settings, protocol.Task.from_message(msg))  # the node's worker
    except protocol.NodeFailure as err:
        return _error(msg, err.kind, str(err))
    # the node's wall time for the whole task (federation, state, update, saving)
    record["node_time_sec"] = time.perf_counter() - start
    return protocol.reply(msg, update, record)


@app.query()
def query(msg: Message, context: Context) -> Message:
    try:
        settings = NodeSettings.from_node_config(dict(context.node_config))
    except protocol.NodeFailure as err:
        return _error(msg, err.kind, str(err))
    return Message(RecordDict({protocol.NODE: ConfigRecord({
        "node-index": settings.node_index, "num-nodes": settings.num_nodes,
        "fingerprint": protocol.fingerprint(), "host": socket.gethostname(),
        "pid": os.getpid()})}), reply_to=msg)
