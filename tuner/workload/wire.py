"""What the load generator says to a server and how it reads the answers: the reference
server's 16-byte messages, or HTTP/1.1 with keep-alive and pipelining (nginx, HAProxy, any
server a user brings).

A :class:`Wire` turns a request (id, wanted service time) into bytes and gives a
:class:`Decoder` per connection that turns the bytes that come back into answers
``(request id, worker index)``. HTTP answers come in request order on a connection; the
server names its worker in an ``X-Worker`` header (nginx: its pid, mapped to the worker's
index by ``workers``). An HTTP request's cost is chosen by the file it asks for: ``paths``
with their measured ``costs_us``, the one closest to the wanted service time (on a log scale).

>>> w = HttpWire(paths=["/cost/0.txt", "/cost/3.txt"], costs_us=[100.0, 800.0],
...              workers={"4242": 1})
>>> w.cost(700), w.request(5, 700)[:19]
(800, b'GET /cost/3.txt HTT')
>>> d = w.decoder([5])
>>> d.feed(b"HTTP/1.1 200 OK\\r\\nX-Worker: 4242\\r\\nContent-Length: 2\\r\\n\\r\\nok")
[(5, 1)]
>>> ReferenceWire().decoder([]).feed(RESPONSE.pack(9, 3, 500))
[(9, 3)]
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tuner.workload.protocol import REQUEST, RESPONSE


class Decoder(Protocol):
    def feed(self, data: bytes) -> list[tuple[int, int]]:
        """Answers completed by ``data``: (request id, worker index; -1 when unknown)."""
        ...


class Wire(Protocol):
    def cost(self, us: int) -> int:
        """The service time a request for ``us`` microseconds will really ask for."""
        ...

    def request(self, rid: int, us: int) -> bytes: ...

    def decoder(self, order: deque[int] | list[int]) -> Decoder:
        """A decoder for one connection; ``order`` holds the ids sent on it, oldest first
        (answers that do not carry their id come in that order)."""
        ...


class _ReferenceDecoder:
    def __init__(self, order: deque[int] | list[int]) -> None:
        self.buf = b""
        self.order = order

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        self.buf += data
        n = len(self.buf) - len(self.buf) % RESPONSE.size
        out = []
        for off in range(0, n, RESPONSE.size):
            rid, worker, _ = RESPONSE.unpack_from(self.buf, off)
            out.append((rid, worker))
            if self.order and self.order[0] == rid:  # answers carry their id: keep it short
                self.order.popleft() if isinstance(self.order, deque) else self.order.pop(0)
        self.buf = self.buf[n:]
        return out


class ReferenceWire:
    """The reference server's protocol (:mod:`tuner.workload.protocol`)."""

    def cost(self, us: int) -> int:
        return us

    def request(self, rid: int, us: int) -> bytes:
        return REQUEST.pack(rid, us)

    def decoder(self, order: deque[int] | list[int]) -> Decoder:
        return _ReferenceDecoder(order)


class _HttpDecoder:
    def __init__(self, order: deque[int] | list[int], workers: dict[str, int]) -> None:
        import httptools

        self.order = order
        self.workers = workers
        self.worker = -1
        self.done: list[tuple[int, int]] = []
        self.parser = httptools.HttpResponseParser(self)
        self._error = httptools.HttpParserError

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-worker":
            self.worker = self.workers.get(value.decode(errors="replace").strip(), -1)

    def on_message_complete(self) -> None:
        rid = self.order.popleft() if isinstance(self.order, deque) else self.order.pop(0)
        self.done.append((rid, self.worker))
        self.worker = -1

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        try:
            self.parser.feed_data(data)
        except self._error as e:
            raise OSError(f"bad HTTP answer: {e}") from None
        out, self.done = self.done, []
        return out


@dataclass
class HttpWire:
    """HTTP/1.1 GETs of ``paths`` (costs ``costs_us``, ascending), pipelined on keep-alive
    connections; ``workers`` maps an ``X-Worker`` value to a worker index."""

    paths: Sequence[str]
    costs_us: Sequence[float]
    workers: dict[str, int] = field(default_factory=dict)
    host: str = "tuner"

    def _pick(self, us: int) -> int:
        logs = [math.log(max(c, 1.0)) for c in self.costs_us]
        x = math.log(max(us, 1))
        i = bisect.bisect_left(logs, x)
        near = [j for j in (i - 1, i) if 0 <= j < len(logs)]
        return min(near, key=lambda j: abs(logs[j] - x))

    def cost(self, us: int) -> int:
        return int(round(self.costs_us[self._pick(us)]))

    def request(self, rid: int, us: int) -> bytes:
        path = self.paths[self._pick(us)]
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept-Encoding: gzip\r\n"
            f"X-Request: {rid}\r\n\r\n"
        ).encode()

    def decoder(self, order: deque[int] | list[int]) -> Decoder:
        return _HttpDecoder(order, self.workers)
