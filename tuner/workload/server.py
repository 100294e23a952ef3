"""The reference server: K worker processes, each with its own SO_REUSEPORT socket (or, with
``--threads``, one process whose K threads each have their own socket: the shape of a
thread-per-core server).

Each worker is one single-threaded process. It serves requests in arrival order and spends
each request's service time as CPU work (``--work cpu``, the default: it spins until that much
CPU time of its own has passed, so load shows to the kernel as real load does) or asleep
(``--work sleep``). Requests queue up at a busy worker, which is what steering fixes.

On start it prints one JSON line ``{"workers": [pid, ...]}`` once every worker listens; the
i-th pid answers with worker index i, and its socket is the i-th of the reuseport group. With
``--threads`` the line is ``{"workers": [pid], "threads": [tid, ...]}``, thread i answers as
worker i, and SIGUSR1 adds a thread with a socket of its own (the pool grows; a new line
``{"threads": [...]}`` says so). Threads hold Python's GIL while they spin, so ``--work
sleep`` suits them better. SIGTERM or SIGINT stops all workers.

Run it as ``python -m tuner.workload.server --port 8000 --workers 4``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque

from tuner.workload.protocol import REQUEST, RESPONSE

PR_SET_PDEATHSIG = 1


def spend(us: int, work: str) -> None:
    """Spend ``us`` microseconds: CPU time of this thread (``cpu``) or wall time (``sleep``).

    >>> spend(50, "cpu")
    """
    if work == "sleep":
        time.sleep(us / 1e6)
        return
    end = time.thread_time_ns() + us * 1000
    while time.thread_time_ns() < end:
        pass


def listen(host: str, port: int, udp: bool) -> socket.socket:
    """A SO_REUSEPORT socket bound to ``host:port`` (listening when TCP)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    if not udp:
        s.listen(4096)
    s.setblocking(False)
    return s


def serve_tcp(lsock: socket.socket, index: int, work: str) -> None:
    """Accept connections and answer requests in arrival order, forever."""
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    buffers: dict[socket.socket, bytearray] = {}
    queue: deque[tuple[socket.socket, int, int]] = deque()
    size = REQUEST.size
    while True:
        for key, _ in sel.select(timeout=None if not queue else 0):
            if key.data is None:
                while True:
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buffers[conn] = bytearray()
                    sel.register(conn, selectors.EVENT_READ, True)
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(conn)
                buffers.pop(conn, None)
                conn.close()
                continue
            buf = buffers[conn]
            buf += data
            whole = len(buf) - len(buf) % size
            for off in range(0, whole, size):
                rid, us = REQUEST.unpack_from(buf, off)
                queue.append((conn, rid, us))
            del buf[:whole]
        # serve what has arrived, one request at a time, checking for new arrivals in between
        if queue:
            conn, rid, us = queue.popleft()
            spend(us, work)
            if conn in buffers:
                try:
                    _send_all(conn, RESPONSE.pack(rid, index, us))
                except OSError:
                    pass  # the client went away; its loss is counted on its side


def _send_all(conn: socket.socket, msg: bytes) -> None:
    """Send all of ``msg`` on a non-blocking socket: one send(2) in the usual case, and a
    blocking send of the rest only when the socket buffer is full."""
    try:
        sent = conn.send(msg)
    except BlockingIOError:
        sent = 0
    if sent < len(msg):
        conn.setblocking(True)
        try:
            conn.sendall(msg[sent:])
        finally:
            conn.setblocking(False)


def serve_udp(sock: socket.socket, index: int, work: str) -> None:
    """Answer each datagram (one request) in arrival order, forever."""
    sock.setblocking(True)
    while True:
        data, peer = sock.recvfrom(64)
        if len(data) == REQUEST.size:
            rid, us = REQUEST.unpack(data)
            spend(us, work)
            sock.sendto(RESPONSE.pack(rid, index, us), peer)


def _worker(index: int, args: argparse.Namespace, ready_w: int) -> None:
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if args.cpus:
        cpu = args.cpus[index % len(args.cpus)]
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            print(f"server: worker {index}: cannot run on CPU {cpu} (no such CPU)", file=sys.stderr)
            os._exit(1)
    sock = listen(args.host, args.port, args.udp)
    os.write(ready_w, b"r")
    os.close(ready_w)
    (serve_udp if args.udp else serve_tcp)(sock, args.first_index + index, args.work)


def serve_threads(args: argparse.Namespace) -> int:
    """``--threads``: K threads of this process, a socket each; SIGUSR1 adds one."""
    tids: list[int] = []
    lock = threading.Lock()

    def worker(index: int, ready: threading.Event, failed: list[str]) -> None:
        if args.cpus:
            os.sched_setaffinity(0, {args.cpus[index % len(args.cpus)]})  # this thread
        try:
            sock = listen(args.host, args.port, args.udp)
        except OSError as e:
            failed.append(f"thread {index}: {e}")
            ready.set()
            return
        with lock:
            tids.append(threading.get_native_id())
        ready.set()
        (serve_udp if args.udp else serve_tcp)(sock, args.first_index + index, args.work)

    def add(index: int) -> bool:
        ready, failed = threading.Event(), []
        threading.Thread(target=worker, args=(index, ready, failed), daemon=True).start()
        ready.wait()
        if failed:
            print(f"server: {failed[0]}", file=sys.stderr)
        return not failed

    for i in range(args.workers):
        if not add(i):
            return 1
    print(json.dumps({"workers": [os.getpid()], "threads": list(tids)}), flush=True)
    grow = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: grow.set())
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    while True:
        grow.wait()
        grow.clear()
        if add(len(tids)):
            print(json.dumps({"threads": list(tids)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tuner.workload.server",
        description="Reference server: K worker processes with SO_REUSEPORT sockets.",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--workers", type=int, default=4, help="worker processes (default: 4)")
    p.add_argument("--udp", action="store_true", help="serve UDP datagrams instead of TCP")
    p.add_argument(
        "--work", choices=("cpu", "sleep"), default="cpu", help="how service time is spent"
    )
    p.add_argument(
        "--cpus",
        type=lambda v: [int(c) for c in v.split(",")],
        default=[],
        help="pin worker i to the (i mod n)-th CPU of this comma-separated list",
    )
    p.add_argument(
        "--first-index",
        type=int,
        default=0,
        help="worker i answers as worker FIRST_INDEX + i (several servers behind one service)",
    )
    p.add_argument(
        "--threads",
        action="store_true",
        help="one process, a thread per worker, each with its own socket (SIGUSR1 adds one)",
    )
    args = p.parse_args(argv)
    if not 1 <= args.workers <= 64:
        p.error(f"--workers must be 1 to 64; got {args.workers}")
    if args.threads:
        return serve_threads(args)
    pids = []
    for i in range(args.workers):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                _worker(i, args, w)
            except KeyboardInterrupt:
                pass
            except OSError as e:
                print(f"worker {i}: {e}", file=sys.stderr)
            os._exit(1)
        os.close(w)
        ok = os.read(r, 1)
        os.close(r)
        pids.append(pid)
        if not ok:
            for q in pids:
                os.kill(q, signal.SIGKILL)
            print(f"server: worker {i} did not start (port {args.port})", file=sys.stderr)
            return 1
    print(json.dumps({"workers": pids}), flush=True)

    def stop(*_: object) -> None:
        for q in pids:
            try:
                os.kill(q, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    os.wait()  # a worker died: stop the rest
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
