"""A user's own HTTP service, for `server.kind = "command"`: N worker processes, each with its
own SO_REUSEPORT socket on PORT, answering every GET with a short text and an X-Worker header
(its pid).

usage: python http_workers.py PORT N
"""

import http.server
import os
import signal
import socket
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self):  # noqa: N802
        body = b"ok\n"
        self.send_response(200)
        self.send_header("X-Worker", str(os.getpid()))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.HTTPServer):
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


port, n = int(sys.argv[1]), int(sys.argv[2])
children = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        Server(("0.0.0.0", port), Handler).serve_forever()
        os._exit(0)
    children.append(pid)
signal.signal(signal.SIGTERM, lambda *_: [os.kill(c, signal.SIGKILL) for c in children] and None)
os.wait()
for c in children:
    try:
        os.kill(c, signal.SIGKILL)
    except ProcessLookupError:
        pass
