"""nginx (Debian's package) as a server for tests and experiments: our own instance, with its
own configuration, pid file, logs, temporary files and document root in a directory of ours,
started inside a test namespace; never the system's service.

Each worker has its own ``reuseport`` socket (nginx opens them in the master and every worker
inherits them all: the pre-fork shape of :mod:`tuner.group`). Every response says which worker
served it (``X-Worker: <pid>``). The document root holds text files of 1 KiB to 512 KiB under
``/cost/<k>.txt`` (``2**k`` KiB) that nginx gzips at level 9 on the fly: a request's CPU cost
grows with the file asked for, so request cost varies as an application's does.

>>> conf = config(Path("/srv/x"), port=8080, workers=2, cpus=[0, 1])
>>> "listen 0.0.0.0:8080 reuseport" in conf, "worker_cpu_affinity 01 10;" in conf
(True, True)
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from tuner.errors import TunerError

FILES = tuple(range(10))  # /cost/<k>.txt is 2**k KiB
WORDS = [f"w{i:03d}" for i in range(600)]


def binary() -> str:
    """The nginx executable, or a TunerError saying how to install it."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "")
    if not path:
        raise TunerError(
            "nginx is not installed", "apt-get install nginx-light (or run `make setup`)"
        )
    return path


def _affinity(cpus: Sequence[int], workers: int) -> str:
    """``worker_cpu_affinity`` masks: worker i on ``cpus[i mod n]``."""
    width = max(cpus) + 1
    masks = []
    for i in range(workers):
        c = cpus[i % len(cpus)]
        masks.append("".join("1" if b == c else "0" for b in reversed(range(width))))
    return " ".join(masks)


def config(root: Path, port: int, workers: int, address: str = "0.0.0.0",
           cpus: Sequence[int] = ()) -> str:  # fmt: skip
    """The configuration text for an instance rooted at ``root``."""
    affinity = f"worker_cpu_affinity {_affinity(cpus, workers)};" if cpus else ""
    tmp = root / "tmp"
    return f"""user root;
worker_processes {workers};
{affinity}
pid {root}/nginx.pid;
error_log {root}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    gzip on;
    gzip_comp_level 9;
    gzip_min_length 0;
    gzip_types text/plain;
    gzip_http_version 1.0;
    server {{
        listen {address}:{port} reuseport backlog=4096;
        add_header X-Worker $pid always;
        root {root}/www;
        default_type text/plain;
        location / {{ }}
    }}
}}
"""


def file_texts() -> list[str]:
    """The text of each ``/cost/<k>.txt`` (the same every time: a fixed seed)."""
    rng = random.Random(7)
    out = []
    for k in FILES:
        size = 1024 * 2**k
        out.append(" ".join(rng.choice(WORDS) for _ in range(size // 4))[:size])
    return out


def _files(root: Path) -> None:
    www = root / "www" / "cost"
    www.mkdir(parents=True, exist_ok=True)
    for k, text in zip(FILES, file_texts(), strict=True):
        (www / f"{k}.txt").write_text(text)


def prepare(root: Path, port: int, workers: int, address: str = "0.0.0.0",
            cpus: Sequence[int] = ()) -> list[str]:  # fmt: skip
    """Write an instance's configuration, document root and folders under ``root``; return
    the command line that starts its master (in the foreground)."""
    exe = binary()
    for d in ("tmp/body", "tmp/proxy", "tmp/fastcgi"):
        (root / d).mkdir(parents=True, exist_ok=True)
    _files(root)
    conf = root / "nginx.conf"
    conf.write_text(config(root, port, workers, address, cpus))
    return [exe, "-c", str(conf), "-p", str(root)]


class Nginx:
    """One nginx instance; ``popen(argv)`` starts its master (e.g. inside a test namespace
    with :meth:`tuner.cluster.Cluster.popen`)."""

    def __init__(self, root: Path, port: int, workers: int, address: str = "0.0.0.0",
                 cpus: Sequence[int] = ()) -> None:  # fmt: skip
        self.root = Path(root)
        self.port, self.workers, self.address, self.cpus = port, workers, address, list(cpus)
        self.proc: subprocess.Popen | None = None

    def start(self, popen: Callable[[list[str]], subprocess.Popen]) -> subprocess.Popen:
        argv = prepare(self.root, self.port, self.workers, self.address, self.cpus)
        self.proc = popen(argv)
        return self.proc

    def reload(self) -> None:
        """SIGHUP: new workers with the new configuration, the old ones drain and exit."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGQUIT (graceful), then SIGKILL for the master and any worker left."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGQUIT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tuner.workload.nginx --root DIR --port P --workers N [--cpus 0,1]``:
    write an instance under DIR and become its master (how an experiment starts nginx on a
    host it reaches over SSH, or in a namespace: one way for both)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m tuner.workload.nginx", description=main.__doc__)
    p.add_argument("--root", type=Path, required=True, help="folder for the instance's files")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--address", default="0.0.0.0")
    p.add_argument("--cpus", default="", help="worker i on cpus[i mod n], e.g. 0,1")
    args = p.parse_args(argv)
    cpus = [int(c) for c in args.cpus.split(",") if c]
    try:
        cmd = prepare(args.root.resolve(), args.port, args.workers, args.address, cpus)
    except (TunerError, OSError) as e:
        print(f"tuner: error: {e}", file=sys.stderr)
        return 1
    os.execv(cmd[0], cmd)  # the master keeps this pid: stopping it stops nginx


if __name__ == "__main__":
    raise SystemExit(main())
