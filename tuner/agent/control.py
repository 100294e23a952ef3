"""Run-time control of a running agent over a Unix socket that only root can open.

One JSON object per line each way: ``{"cmd": "status"}`` or ``{"cmd": "mode", "mode":
"active"}``; the answer is ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
``tuner status`` and ``tuner mode`` are the clients.

The server must outlive any client: each connection is served in its own thread (at most
:data:`MAX_CLIENTS` at once; more are closed unanswered), must deliver its request line within
:data:`CLIENT_TIMEOUT_S` seconds and :data:`MAX_REQUEST` bytes, and anything that goes wrong
while answering one request is that request's error, never the server's.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "a.sock")
>>> with ControlServer(path, lambda msg: {"echo": msg["cmd"]}):
...     request(path, {"cmd": "status"})
{'ok': True, 'echo': 'status'}
>>> request(path, {"cmd": "status"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tuner.errors.TunerError: no agent is listening on ...; fix: start one with `tuner run --config FILE`
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from tuner.errors import TunerError
from tuner.system import stale_socket

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 4096  # bytes of one request line
MAX_CLIENTS = 8  # connections served at once
CLIENT_TIMEOUT_S = 2.0  # to deliver a whole request line


def _kind(mode: int) -> str:
    """What a non-socket path is, in words.

    >>> _kind(stat.S_IFREG), _kind(stat.S_IFDIR)
    ('a regular file', 'a directory')
    """
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a socket"


def claim_path(path: str) -> None:
    """Make ``path`` a control socket's: refuse anything there but a socket nobody answers on
    (a stale one is removed). The agent calls this before it attaches anything, and again
    when the server starts."""
    parent = os.path.dirname(path) or "."
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise TunerError(
            f"cannot create {parent} for the control socket: {e.strerror}",
            "set agent.control_socket to a path in a directory root can write",
        ) from None
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise TunerError(
            f"agent.control_socket {path} exists and is {_kind(mode)}, not a socket",
            "set agent.control_socket to a new path (the agent never removes other files)",
        )
    if not stale_socket(path):
        raise TunerError(
            f"another agent listens on {path}",
            "stop it, or set agent.control_socket to another path",
        )
    os.unlink(path)  # left by an agent that died


class ControlServer:
    """Answers control requests in background threads with ``handler(request) -> reply``.

    A handler raising :class:`TunerError` answers ``{"ok": false, "error": ...}``; any other
    exception answers a generic error (and the server goes on)."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def __enter__(self) -> ControlServer:
        claim_path(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            s.bind(self.path)
        except OSError as e:
            s.close()
            raise TunerError(
                f"cannot create the control socket {self.path}: {e.strerror or e}",
                "set agent.control_socket to a path in a directory root can write",
            ) from None
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(16)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._accept, name="tuner-control", daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many at once: dropped unanswered
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                line = _read_line(conn, time.monotonic() + CLIENT_TIMEOUT_S)
                if line is None:
                    return  # too slow, too long or gone: dropped
                conn.settimeout(CLIENT_TIMEOUT_S)
                conn.sendall(json.dumps(self._answer(line)).encode() + b"\n")
        except OSError:
            pass  # the client went away
        finally:
            self._slots.release()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
            return {"ok": False, "error": "a request is one JSON object with a 'cmd' string"}
        try:
            return {"ok": True, **self.handler(msg)}
        except TunerError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a bug must cost this request, not the control socket
            return {"ok": False, "error": f"internal error: {type(e).__name__}"}

    def __exit__(self, *exc: object) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            s.close()
            if self._thread is not None:
                self._thread.join(timeout=2)
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _read_line(conn: socket.socket, deadline: float) -> bytes | None:
    """One request line, or None when it is longer than :data:`MAX_REQUEST` bytes or does
    not arrive whole before ``deadline`` (CLOCK_MONOTONIC)."""
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or len(buf) > MAX_REQUEST:
            return None
        conn.settimeout(left)
        try:
            chunk = conn.recv(MAX_REQUEST + 1 - len(buf))
        except (TimeoutError, OSError):
            return None
        if not chunk:
            break
        buf += chunk
    line = buf.split(b"\n", 1)[0]
    return line if len(line) <= MAX_REQUEST else None


def request(path: str, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the agent at ``path`` and return its reply (a JSON object with
    an ``ok`` key; anything else is a TunerError)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps(msg).encode() + b"\n")
        line = s.makefile("rb").readline(1 << 20)
    except (FileNotFoundError, ConnectionRefusedError):
        raise TunerError(
            f"no agent is listening on {path}", "start one with `tuner run --config FILE`"
        ) from None
    except PermissionError:
        raise TunerError(f"cannot open {path}: permission denied", "run as root") from None
    except OSError as e:
        raise TunerError(f"the agent on {path} did not answer: {e.strerror or e}") from None
    finally:
        s.close()
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError):
        reply = None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise TunerError(
            f"{path} sent an answer that is not a tuner agent's",
            "check that agent.control_socket / --socket names a tuner agent's socket",
        )
    return reply
