"""Run-time control of a running agent over a Unix socket that only root can open.

One JSON object per line each way: ``{"cmd": "status"}`` or ``{"cmd": "mode", "mode":
"active"}``; the answer is ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
``tuner status`` and ``tuner mode`` are the clients.

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
import threading
from collections.abc import Callable
from typing import Any

from tuner.errors import TunerError

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Answers control requests in a background thread with ``handler(request) -> reply``.

    A handler raising :class:`TunerError` answers ``{"ok": false, "error": ...}``."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ControlServer:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if os.path.exists(self.path):
            try:
                request(self.path, {"cmd": "status"}, timeout=1.0)
            except TunerError:
                os.unlink(self.path)  # left by an agent that died
            else:
                raise TunerError(
                    f"another agent listens on {self.path}",
                    "stop it, or set agent.control_socket to another path",
                )
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            s.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(8)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._serve, name="tuner-control", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    line = conn.makefile("rb").readline()
                    reply = self._answer(line)
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    continue

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            msg = json.loads(line)
            if not isinstance(msg, dict) or "cmd" not in msg:
                raise ValueError
        except ValueError:
            return {"ok": False, "error": "a request is one JSON object with a 'cmd' key"}
        try:
            return {"ok": True, **self.handler(msg)}
        except TunerError as e:
            return {"ok": False, "error": str(e)}

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


def request(path: str, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the agent at ``path`` and return its reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps(msg).encode() + b"\n")
        line = s.makefile("rb").readline()
    except (FileNotFoundError, ConnectionRefusedError):
        raise TunerError(
            f"no agent is listening on {path}", "start one with `tuner run --config FILE`"
        ) from None
    except PermissionError:
        raise TunerError(f"cannot open {path}: permission denied", "run as root") from None
    except OSError as e:
        raise TunerError(f"the agent on {path} did not answer: {e}") from None
    finally:
        s.close()
    try:
        return json.loads(line)
    except ValueError:
        raise TunerError(f"the agent on {path} sent a bad answer", "check its log") from None
