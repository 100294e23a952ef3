"""Make N requests to ADDR:PORT, each on a new connection (a new source port, so each is placed
afresh by the server's reuseport group), and print JSON: the worker id of each answer, or null
for a request that failed.

usage: python count_workers.py tcp|udp|http ADDR PORT N [PATH]
  tcp, udp: the reference server's protocol; the id is the worker index it answers with
  http:     an HTTP GET of PATH (default /); the id is the X-Worker header, else the body
"""

import http.client
import json
import socket
import struct
import sys

kind, addr, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
path = sys.argv[5] if len(sys.argv) > 5 else "/"
REQUEST, RESPONSE = struct.Struct("<QI4x"), struct.Struct("<QII")


def one(i: int):
    if kind == "http":
        c = http.client.HTTPConnection(addr, port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read().decode(errors="replace").strip()
            return r.getheader("X-Worker") or body if r.status == 200 else None
        finally:
            c.close()
    stype = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, stype) as s:
        s.settimeout(10)
        s.connect((addr, port))
        s.sendall(REQUEST.pack(i, 10))
        data = s.recv(RESPONSE.size) if kind == "udp" else s.recv(RESPONSE.size, socket.MSG_WAITALL)
        return RESPONSE.unpack(data)[1]


out = []
for i in range(n):
    try:
        out.append(one(i))
    except OSError:
        out.append(None)
print(json.dumps(out))
