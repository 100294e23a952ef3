"""Connect to ADDR:PORT in a loop for SECONDS; print JSON [[t, worker or -1], ...] (t in s).

usage: python reuseport_client.py ADDR PORT SECONDS
"""

import json
import socket
import sys
import time

addr, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
start = time.monotonic()
out = []
while (t := time.monotonic() - start) < seconds:
    try:
        with socket.create_connection((addr, port), timeout=2) as c:
            b = c.recv(1)
            out.append([round(t, 4), b[0] if b else -1])
    except OSError:
        out.append([round(t, 4), -1])
    time.sleep(0.002)
print(json.dumps(out))
