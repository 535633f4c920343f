"""The ClientApp's side of the node's worker: hand one task to the long-lived worker process
of this node (worker.py), starting it when none answers.

Under subprocess isolation (Flower's default) a SuperNode starts a ClientApp process for every
message (flwr-clientapp pulls one message, runs it and exits); importing torch and building the
federation in each would cost seconds a message. So the ClientApp stays thin (no torch) and
forwards each task, over a Unix socket, to one worker per node (per state-dir), which imports
torch and builds the node's federation once. The SuperNode still owns the connection to the
SuperLink; a worker that died (killed, crashed) is started again by the next task, and the
clients' state lives in files (node_state.py), so it
survives. Frames are a 4-byte length, a JSON header, then raw bytes of the length it names.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

from .protocol import FAILED, NodeFailure, Task
from .settings import NodeSettings

START_LIMIT_SEC = 300.0  # for a new worker to listen (importing torch; a safety limit)
_LENGTH = struct.Struct("!I")


def socket_path(settings: NodeSettings) -> str:
    """The worker's socket: one per node state folder, short enough for AF_UNIX (108 bytes)."""
    key = hashlib.sha256(str(settings.state_dir.resolve()).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"fedprune-{os.getuid()}-{key}.sock")


def send_frame(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    head = json.dumps({**header, "payload": len(payload)}).encode()
    sock.sendall(_LENGTH.pack(len(head)) + head + payload)


def recv_frame(sock: socket.socket) -> tuple[dict, bytes]:
    (size,) = _LENGTH.unpack(_recv(sock, _LENGTH.size))
    header = json.loads(_recv(sock, size))
    return header, _recv(sock, header["payload"])


def _recv(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the connection closed mid-frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def ask(settings: NodeSettings, task: Task) -> tuple[bytes, dict]:
    """The task's update and result record, from this node's worker (NodeFailure as the
    worker raised it, or FAILED when the worker died during the task)."""
    with _connect(settings) as sock:
        send_frame(sock, {"settings": settings.to_dict(), "task": {
            "experiment": task.experiment, "round": task.round, "client": task.client_id,
            "base_round": task.base_round, "fingerprint": task.fingerprint}}, task.broadcast)
        try:
            header, update = recv_frame(sock)
        except (ConnectionError, OSError, struct.error, ValueError) as err:
            raise NodeFailure(FAILED, f"the node's worker stopped during the task ({err}); the "
                                      f"next task starts a new one") from None
    if "error" in header:
        raise NodeFailure(header["error"]["kind"], header["error"]["text"])
    return update, header["record"]


def _connect(settings: NodeSettings) -> socket.socket:
    path = socket_path(settings)
    sock = _try(path)
    if sock is not None:
        return sock
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # one ClientApp starts the worker; the others that arrive meanwhile wait for it
    with open(settings.state_dir / "worker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _try(path)
        if sock is None:
            proc = _start(settings, path)
            deadline = time.monotonic() + START_LIMIT_SEC
            while sock is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise NodeFailure(FAILED, f"the node's worker did not start (exit status "
                                              f"{proc.poll()}; its log: "
                                              f"{settings.state_dir / 'worker.log'})")
                time.sleep(0.05)
                sock = _try(path)
    return sock


def _try(path: str):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return sock
    except OSError:
        sock.close()
        return None


def _start(settings: NodeSettings, path: str) -> subprocess.Popen:
    log = open(settings.state_dir / "worker.log", "ab")
    try:  # its own session: it outlives this ClientApp, which exits after its message
        return subprocess.Popen([sys.executable, "-m", "fedprune_core.deploy.worker", path],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()
