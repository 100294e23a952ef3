"""A server of K worker processes, each with its own SO_REUSEPORT listener; a connection gets
one byte (the worker's index) and is closed. Prints the workers' pids as JSON once all listen.

usage: python reuseport_server.py ADDR PORT K
"""

import json
import os
import signal
import socket
import sys


def worker(i: int, addr: str, port: int, ready_w: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((addr, port))
    s.listen(1024)
    os.write(ready_w, b"r")
    while True:
        c, _ = s.accept()
        c.sendall(bytes([i]))
        c.close()


def main() -> None:
    addr, port, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ready_r, ready_w = os.pipe()
    pids = []
    for i in range(k):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            worker(i, addr, port, ready_w)
            os._exit(0)
        pids.append(pid)
        os.read(ready_r, 1)
    print(json.dumps(pids), flush=True)

    def stop(*_):
        for p in pids:
            os.kill(p, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    sys.stdin.read()  # until the test closes stdin
    stop()


if __name__ == "__main__":
    main()
