"""Connect to ADDR:PORT in a loop for SECONDS and at least MIN connections; print a line
"start" when the clock starts, then JSON [[t, worker or -1], ...] (t in s from the start).

usage: python reuseport_client.py ADDR PORT SECONDS [MIN]
"""

import json
import socket
import sys
import time

addr, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
least = int(sys.argv[4]) if len(sys.argv) > 4 else 40
print("start", flush=True)
start = time.monotonic()
out = []
while (t := time.monotonic() - start) < seconds or len(out) < least:
    try:
        with socket.create_connection((addr, port), timeout=2) as c:
            b = c.recv(1)
            out.append([round(t, 4), b[0] if b else -1])
    except OSError:
        out.append([round(t, 4), -1])
    time.sleep(0.002)
print(json.dumps(out))
