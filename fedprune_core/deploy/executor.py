"""The node's executor: Flower's `--isolation process`, each message run in one long-lived
process that already holds torch and the node's federation.

A SuperNode started with `--isolation process` runs no ClientApp itself: it queues each message
it pulls as a task on its Runtime API and waits for an outside process to acquire it. Flower's
own (`flower-superexec`) starts one `flwr-clientapp` process a task, which imports Flower and
the app, installs the FAB and exits: more than a CPU-second a message, and the app's torch and
federation on top. This executor is that outside process, one per node beside its SuperNode
(`python -m fedprune_core.deploy.executor --runtime-api-address HOST:PORT` on a real machine;
launch.py passes every local SuperNode's address and the executors are forked, serve_all).
For each task it does what Flower 1.42's `flwr-clientapp` does (flwr/supernode/runtime/
run_clientapp.py, whose functions it calls: pull the task's message and context, run the
ClientApp, push the reply and the task's status, a heartbeat meanwhile), with
two differences: the FAB is not installed and loaded, since its components are this installed
package's (package.py) and a server with another release is refused (protocol.fingerprint);
and the ClientApp's handler runs the updates here (node.run_tasks) instead of asking a worker.
After a query it builds the node's federation (the query carries the experiment) while the
server waits for the other nodes. The clients' state is in files (node_state.py): a killed
executor is started again (serve_all; launch.py for the forking process) and loses nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import time
import traceback

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
    AcquireTaskRequest, PullAppMessagesRequest, PullTaskInputRequest, SendTaskHeartbeatRequest)
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf, make_pull_object_fn_protobuf)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from . import protocol
from .client_app import handle
from .node import federation, node_config, run_tasks
from .settings import NodeSettings

# between looks for a task: a SuperNode queues a message only after its last reply went out;
# 0.05 s cost the 4 SuperNodes of `make deploy` a fifth of a core answering, 0.2 s a twentieth
POLL_SEC = 0.2


def serve(address: str) -> None:
    client = _client(address)
    while True:
        res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        if res.HasField("task") and res.token:
            run_one(address, res.token)
        else:
            time.sleep(POLL_SEC)


def run_one(address: str, token: str) -> None:
    """One task, as `flwr-clientapp --token` runs it (run_clientapp.run_clientapp)."""
    client = _client(address, RuntimeTokenHttpInterceptor(token))
    heartbeat = HeartbeatSender(lambda: _beat(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "the ClientApp failed"
    try:
        message, context = pull_task_input(client)
        reply = handle(message, context, run_tasks)
        status, details = SubStatus.COMPLETED, ""
    except Exception as err:  # noqa: BLE001 - a bug: in the executor's log, an error back
        traceback.print_exc()
        details = f"{type(err).__name__}: {err}"
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                  reason=protocol.error_reason(protocol.FAILED, details)),
                            reply_to=message)
    try:
        if reply is not None and context is not None:
            push_message(client, reply, context)
    except Exception:  # noqa: BLE001 - the server counts the update missing
        traceback.print_exc()
    finally:
        heartbeat.stop()
        push_task_output(client, context, status, details)
        client.close()
    if message is not None and message.metadata.message_type == protocol.QUERY:
        _warm(context, message)


def pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context]:
    """The task's message and context: run_clientapp.pull_task_input's steps (without the run
    and FAB, not needed here), retrying the message's content after 0.05 s instead of 1 s: the
    SuperNode announces a task before it has the content from the SuperLink, and a broadcast
    arrives in a fraction of a second."""
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id, TaskIdentity.run_id = res.task_id, res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("no message came with the task")
    node, tree = Node(node_id=context.node_id), pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node,
                                                  context.run_id),
        return_type=Message, initial_backoff=0.05, backoff_cap=1.0)
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower sets it
    return message, context


def _warm(context, message: Message) -> None:
    """The node's federation, built now, before its first task needs it."""
    try:
        settings = NodeSettings.from_node_config(dict(context.node_config))
        experiment = message.content[protocol.NODE].get("experiment")
        if experiment:
            federation(node_config(settings, json.loads(experiment)))
    except protocol.NodeFailure:
        pass  # the first task says what is wrong, in its reply


def _beat(client: RuntimeHttpClient) -> bool:
    """A heartbeat for the task (True: sent; the SuperNode forgetting the task ends nothing
    here: its reply is then dropped, as a killed ClientApp's would be)."""
    try:
        client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        return True
    except Exception:  # noqa: BLE001 - retried by HeartbeatSender
        return False


def _client(address: str, *extra) -> RuntimeHttpClient:
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), *extra],
        retry_invoker=make_simple_http_retry_invoker())


def serve_all(addresses: list[str]) -> None:
    """Several nodes on one machine (deploy's local SuperNodes): an executor per node, each
    forked from this process once the imports are done (torch, Flower, the suite: ~2 CPU-s a
    node that start-up would otherwise spend while the ServerApp starts); one that dies is
    forked again."""
    children: dict[int, str] = {}

    def fork(address: str) -> None:
        pid = os.fork()
        if pid == 0:  # the node's executor, until its parent goes
            _die_with_parent()
            try:
                serve(address)
            except KeyboardInterrupt:
                pass
            os._exit(0)
        children[pid] = address

    for address in addresses:
        fork(address)
    while True:
        pid, status = os.wait()
        if pid in children:
            address = children.pop(pid)
            print(f"the executor of the SuperNode at {address} exited (status {status}); "
                  f"starting it again", flush=True)
            fork(address)


def _die_with_parent() -> None:
    """SIGTERM when the parent exits (Linux prctl PR_SET_PDEATHSIG; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedprune_core.deploy.executor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-api-address", required=True, action="append",
                        metavar="HOST:PORT",
                        help="the SuperNode's Runtime API (flower-supernode --host/--port); "
                             "once per SuperNode of this machine")
    args = parser.parse_args(argv)
    try:
        if len(args.runtime_api_address) == 1:
            serve(args.runtime_api_address[0])
        else:
            serve_all(args.runtime_api_address)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
