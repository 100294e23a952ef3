"""Open-loop load generator: Poisson arrivals over churning connections, latency per request.

Arrivals follow a Poisson process at the target rate (times the profile's rate factor) and do
not wait for answers, so a slow server shows as queueing delay, not as a lower send rate.
Each request goes to one of ``connections`` logical connections, chosen by the profile's
weights. Each logical connection is re-opened (a new TCP connection, so a new source port and
a new placement by the server's reuseport group) after a lifetime drawn from an exponential
distribution with mean ``lifetime_s``; the old one closes once its answers are in.

Source ports are drawn from the seed, so that every run with one seed offers the server the
same sequence of 4-tuples, and the kernel's reuseport hash places them the same way (the arms
of an experiment differ in what the tuner does, not in luck).

Latency is measured from the request's scheduled send time to its answer. Requests without
an answer ``drain_s`` after the end, or on a connection that failed, count as errors.

Run it as ``python -m tuner.workload.loadgen --config JSON --out samples.npy``; it prints a
JSON progress line every second and a final one with the totals.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import errno
import itertools
import json
import random
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuner.errors import TunerError
from tuner.workload.profiles import Profile
from tuner.workload.protocol import MAX_SERVICE_US, RESPONSE, ServiceTime
from tuner.workload.wire import HttpWire, ReferenceWire, Wire

PORT_LO, PORT_HI = 20000, 60000  # source ports drawn from the seed

SAMPLE = np.dtype(
    [
        ("t_send", "f8"),  # s since the start of the run, scheduled send time
        ("latency", "f8"),  # s; NaN when not answered
        ("conn", "u2"),  # logical connection
        ("worker", "i2"),  # worker that answered; -1 when not answered
        ("service_us", "u4"),
        ("ok", "u1"),
    ]
)


@dataclass
class LoadSpec:
    """What one load generator sends. Times in seconds, rate in requests per second."""

    host: str
    port: int = 8000
    rate: float = 1000.0
    seconds: float = 10.0
    connections: int = 32
    profile: str = "uniform"
    service: str = "exp:500"
    lifetime_s: float = 1.0  # mean connection lifetime; 0 keeps connections open
    seed: int = 1
    drain_s: float = 5.0
    max_requests: int = 0  # stop after this many (0: no limit)
    udp: bool = False  # one datagram per request; a "connection" is a connected UDP socket
    profile_args: dict[str, float] = field(default_factory=dict)
    # HTTP/1.1 instead of the reference protocol: {"paths", "costs_us", "workers"} of a
    # tuner.workload.wire.HttpWire
    http: dict[str, Any] | None = None
    # source addresses: connection i comes from sources[i mod len] (the client's identity the
    # server sees); []: the host's own address
    sources: list[str] = field(default_factory=list)


class _Conn:
    """One TCP connection of a logical connection, with its requests in flight."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.backlog: list[bytes] = []
        self.inflight: set[int] = set()
        self.order: deque[int] = deque()  # ids sent, oldest first (HTTP answers in order)
        self.closing = False
        self.failed = False


class LoadGenerator:
    """Runs a :class:`LoadSpec` against a server; :meth:`run` returns the per-request samples.

    >>> LoadGenerator(LoadSpec(host="198.18.0.1", rate=0)).check()
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: rate must be positive (requests per second); got 0
    """

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.samples: dict[str, list] = {k: [] for k in SAMPLE.names}
        self.connect_errors = 0
        self._stop = False
        self._stop_time = 0.0
        self.wire: Wire = HttpWire(**spec.http) if spec.http else ReferenceWire()

    def check(self) -> None:
        s = self.spec
        if s.rate <= 0:
            raise TunerError(f"rate must be positive (requests per second); got {s.rate:g}")
        if s.seconds <= 0:
            raise TunerError(f"seconds must be positive; got {s.seconds:g}")
        if not 1 <= s.connections <= 4096:
            raise TunerError(f"connections must be 1 to 4096; got {s.connections}")
        ServiceTime.parse(s.service)
        Profile(s.profile, s.connections, s.seed, **self._profile_args())
        if s.sources and s.udp:
            raise TunerError("sources are for TCP connections; a UDP load uses the host's own")

    def _profile_args(self) -> dict[str, Any]:
        """The profile's arguments; client-mix has one client per source address."""
        s = self.spec
        clients = {"clients": len(s.sources)} if s.profile == "client-mix" and s.sources else {}
        return {**s.profile_args, **clients}

    def stop(self) -> None:
        """End the run early (what Ctrl-C does); answers in flight are still awaited."""
        self._stop = True

    async def _open(self, slot: int, conn: _Conn, sport: int = 0) -> None:
        if self.spec.udp:
            await self._open_udp(conn)
            return
        src = self.spec.sources[slot % len(self.spec.sources)] if self.spec.sources else "0.0.0.0"
        try:
            try:
                reader, writer = await asyncio.open_connection(
                    self.spec.host, self.spec.port, local_addr=(src, sport)
                )
            except OSError as e:
                if not sport or e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise
                reader, writer = await asyncio.open_connection(
                    self.spec.host, self.spec.port, local_addr=(src, 0)
                )
            # close with a reset: no TIME_WAIT, so the same source port can be used again in
            # the next arm, and the kernel's reuseport hash sees the same 4-tuples there
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except OSError:
            self.connect_errors += 1
            conn.failed = True
            for rid in list(conn.inflight):
                self._fail(rid)
            conn.inflight.clear()
            return
        conn.writer = writer
        for msg in conn.backlog:
            writer.write(msg)
        conn.backlog.clear()
        await self._read(reader, conn)

    async def _read(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        decoder = self.wire.decoder(conn.order)
        try:
            while conn.inflight or not conn.closing:
                data = await reader.read(65536)
                if not data:
                    raise OSError("connection closed by the server")
                for rid, worker in decoder.feed(data):
                    self._answer(conn, rid, worker)
        except OSError:
            conn.failed = True
            for rid in list(conn.inflight):
                self._fail(rid)
            conn.inflight.clear()
        finally:
            if conn.writer is not None:
                conn.writer.close()

    def _answer(self, conn: _Conn, rid: int, worker: int) -> None:
        if rid in conn.inflight:
            conn.inflight.discard(rid)
            s = self.samples
            s["latency"][rid] = time.monotonic() - self._t0 - s["t_send"][rid]
            s["worker"][rid] = worker
            s["ok"][rid] = 1

    async def _open_udp(self, conn: _Conn) -> None:
        gen = self
        done = asyncio.get_running_loop().create_future()

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                if len(data) == RESPONSE.size:
                    rid, worker, _ = RESPONSE.unpack(data)
                    gen._answer(conn, rid, worker)

            def error_received(self, exc: Exception) -> None:
                conn.failed = True

            def connection_lost(self, exc: Exception | None) -> None:
                if not done.done():
                    done.set_result(None)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            Proto, remote_addr=(self.spec.host, self.spec.port)
        )
        conn.writer = transport  # has write-like sendto(); see _send
        for msg in conn.backlog:
            transport.sendto(msg)
        conn.backlog.clear()
        while not conn.closing or conn.inflight:
            await asyncio.sleep(0.05)
            if conn.closing and self._stop_time and time.monotonic() > self._stop_time:
                break
        transport.close()

    def _fail(self, rid: int) -> None:
        self.samples["ok"][rid] = 0

    async def run(self, progress: Any = None) -> np.ndarray:
        """Send for ``seconds``, wait for the answers, return the samples (a :data:`SAMPLE`
        array, one row per request). ``progress(t, sent, answered)`` is called every second."""
        self.check()
        spec = self.spec
        rng = random.Random(spec.seed)
        ports = random.Random(spec.seed + 7919)
        profile = Profile(spec.profile, spec.connections, spec.seed, **self._profile_args())
        costs = profile.costs()
        service = ServiceTime.parse(spec.service)
        s = self.samples
        tasks: set[asyncio.Task] = set()
        conns: list[_Conn] = [_Conn() for _ in range(spec.connections)]
        expiry = [0.0] * spec.connections
        self._t0 = t0 = time.monotonic()

        def reopen(slot: int, now: float) -> None:
            old = conns[slot]
            old.closing = True
            if old.writer is not None and not old.inflight:
                old.writer.close()
            conn = conns[slot] = _Conn()
            life = rng.expovariate(1.0 / spec.lifetime_s) if spec.lifetime_s > 0 else 1e18
            expiry[slot] = now + life
            sport = ports.randrange(PORT_LO, PORT_HI)  # same sequence in every run of a seed
            task = asyncio.ensure_future(self._open(slot, conn, sport))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        for slot in range(spec.connections):
            reopen(slot, 0.0)
        epoch, cum = None, []
        next_t, last_report, rid = 0.0, 0.0, 0
        ids = itertools.count()
        while not self._stop:
            now = time.monotonic() - t0
            if now >= spec.seconds:
                break
            while next_t <= now and not self._stop:
                if profile.epoch(next_t) != epoch:
                    epoch = profile.epoch(next_t)
                    cum = list(itertools.accumulate(profile.weights(next_t)))
                slot = min(bisect.bisect_left(cum, rng.random() * cum[-1]), spec.connections - 1)
                if expiry[slot] <= next_t or conns[slot].failed:
                    reopen(slot, next_t)
                conn = conns[slot]
                rid = next(ids)
                us = self.wire.cost(min(max(1, int(service.draw(rng) * costs[slot])),
                                        MAX_SERVICE_US))  # fmt: skip
                for k, v in (("t_send", next_t), ("latency", np.nan), ("conn", slot)):
                    s[k].append(v)
                s["worker"].append(-1)
                s["service_us"].append(us)
                s["ok"].append(0)
                msg = self.wire.request(rid, us)
                conn.inflight.add(rid)
                conn.order.append(rid)
                if conn.writer is not None:
                    _send(conn.writer, msg)
                else:
                    conn.backlog.append(msg)
                next_t += rng.expovariate(spec.rate * profile.rate_factor(next_t))
                if spec.max_requests and rid + 1 >= spec.max_requests:
                    self._stop = True
            if progress is not None and now - last_report >= 1.0:
                last_report = now
                progress(now, len(s["t_send"]), sum(s["ok"]))
            await asyncio.sleep(min(max(next_t - (time.monotonic() - t0), 0.0), 0.005))
        self._stop_time = time.monotonic() + spec.drain_s
        for conn in conns:
            conn.closing = True
            if conn.writer is not None and not conn.inflight and not spec.udp:
                conn.writer.close()
        if tasks:
            await asyncio.wait(tasks, timeout=spec.drain_s)
        left = list(tasks)
        for t in left:
            t.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        out = np.zeros(len(s["t_send"]), dtype=SAMPLE)
        for k in SAMPLE.names:
            out[k] = s[k]
        return out


def _send(writer: Any, msg: bytes) -> None:
    """Write one request on a TCP stream writer or a connected UDP transport."""
    if not isinstance(writer, asyncio.StreamWriter):
        writer.sendto(msg)  # a connected UDP transport
    else:
        writer.write(msg)


PERCENTILES = (50, 90, 99, 99.9)


def latency_percentiles(lat_ms: np.ndarray, empty: float | None = 0.0) -> dict[str, Any]:
    """``{"p50_ms": ..., "p90_ms": ..., "p99_ms": ..., "p99_9_ms": ...}`` of latencies in ms;
    every value is ``empty`` when there are none.

    >>> latency_percentiles(np.array([1.0, 2.0, 3.0]))["p50_ms"]
    2.0
    >>> latency_percentiles(np.array([]), empty=None)["p99_9_ms"] is None
    True
    """
    return {
        f"p{q:g}_ms".replace(".", "_"): float(np.percentile(lat_ms, q)) if lat_ms.size else empty
        for q in PERCENTILES
    }


def summarize(samples: np.ndarray) -> dict[str, float]:
    """Totals and latency percentiles (ms) of a sample array.

    >>> x = np.zeros(4, dtype=SAMPLE); x["ok"] = 1; x["latency"] = [0.001, 0.002, 0.003, 0.004]
    >>> summarize(x)["p50_ms"]
    2.5
    """
    ok = samples["ok"] == 1
    pct = latency_percentiles(samples["latency"][ok] * 1e3)
    return {
        "requests": int(samples.size),
        "answered": int(ok.sum()),
        "errors": int(samples.size - ok.sum()),
        **pct,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tuner.workload.loadgen",
        description="Open-loop load generator for the reference server (see the module doc).",
    )
    p.add_argument("--config", required=True, help="a LoadSpec as a JSON object")
    p.add_argument("--out", help="write the per-request samples here (.npy)")
    args = p.parse_args(argv)
    try:
        spec = LoadSpec(**json.loads(args.config))
        gen = LoadGenerator(spec)
        gen.check()
    except (TypeError, ValueError, TunerError) as e:
        print(f"loadgen: error: bad config: {e}", file=sys.stderr)
        return 2
    import signal

    def report(t: float, sent: int, answered: int) -> None:
        print(json.dumps({"t": round(t, 2), "sent": sent, "answered": answered}), flush=True)

    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, gen.stop)
    loop.add_signal_handler(signal.SIGINT, gen.stop)
    samples = loop.run_until_complete(gen.run(report))
    if args.out:
        np.save(args.out, samples)
    final = {"done": True, **summarize(samples), "connect_errors": gen.connect_errors}
    print(json.dumps(final), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
