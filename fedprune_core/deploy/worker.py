"""The node's worker under Flower's subprocess isolation: one long-lived process per SuperNode
that runs its clients' updates (with process isolation, executor.py runs them instead).

It imports torch and the suite once, builds the node's federation once per experiment
(node.federation), and serves the thin ClientApps' tasks (worker_link.py) one after another on
a Unix socket: the same `node.run_task` a ClientApp ran itself before, so the numbers are the
simulation's. It exits when no task came for IDLE_SEC (a node whose runs are over), or when a
task names another release (the ClientApp then starts a current one).

`python -m fedprune_core.deploy.worker SOCKET`
"""

from __future__ import annotations

import os
import socket
import sys
import traceback

from .node import run_task
from .protocol import FAILED, NodeFailure, Task, fingerprint
from .settings import NodeSettings
from .worker_link import recv_frame, send_frame

IDLE_SEC = 900.0


def serve(path: str, idle: float = IDLE_SEC) -> int:
    if os.path.exists(path):
        os.unlink(path)  # a dead worker's socket: nobody answers there
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    server.settimeout(idle)
    try:
        while True:
            try:
                conn, _ = server.accept()
            except socket.timeout:
                return 0
            with conn:
                if not _handle(conn):
                    return 0
    finally:
        server.close()
        if os.path.exists(path):
            os.unlink(path)


def _handle(conn: socket.socket) -> bool:
    """Serve one task; False when the worker should make way for another release."""
    conn.settimeout(None)
    try:
        header, broadcast = recv_frame(conn)
    except (ConnectionError, OSError, ValueError) as err:
        print(f"a ClientApp's request did not arrive whole ({err})", file=sys.stderr, flush=True)
        return True
    t = header["task"]
    task = Task(t["experiment"], t["round"], t["client"], t["base_round"], broadcast,
                t["fingerprint"])
    try:
        update, record = run_task(NodeSettings.from_dict(header["settings"]), task)
        reply, payload = {"record": record}, update
    except NodeFailure as err:
        reply, payload = {"error": {"kind": err.kind, "text": str(err)}}, b""
    except Exception as err:  # noqa: BLE001 - a bug: in the worker's log, one line back
        traceback.print_exc()
        reply, payload = {"error": {"kind": FAILED, "text": f"{type(err).__name__}: {err}"}}, b""
    try:
        send_frame(conn, reply, payload)
    except OSError:  # the ClientApp was killed meanwhile: the server counts the update missing
        pass
    return task.fingerprint == fingerprint()


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
