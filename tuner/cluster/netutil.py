"""Network namespaces, links and processes of a test cluster: creating and removing
namespaces (with what runs in them), sysctls inside one, and the ethtool flags its veth ports
need.

>>> leftovers(prefix="no-such-prefix-")
[]
"""

from __future__ import annotations

import array
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import contextmanager

from tuner.errors import TunerError
from tuner.netns import inside as netns_inside

PREFIX = "tnr-"
NETNS_DIR = "/var/run/netns"


def _add_namespace(name: str) -> None:
    """Create a named network namespace with iproute2, as ``ip netns exec`` expects it.

    iproute2 makes ``/run/netns`` a shared mount point the first time it is used; a namespace
    mounted there by another route (pyroute2 forks a helper that does it) could end up hidden
    under that mount, which showed as a namespace missing right after it was made.
    """
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if r.returncode != 0 or not os.path.exists(f"{NETNS_DIR}/{name}"):
        raise TunerError(
            f"cannot create network namespace {name}: {r.stderr.strip() or 'not found after'}",
            "run as root; `tuner cluster down` removes namespaces an earlier run left",
        )


@contextmanager
def linked(links: Sequence[tuple[str, str, str, str, str | None, str | None]], tag: str = ""):
    """Namespaces joined by veth pairs, for tests that need a shape the cluster's bridge does
    not give. Each link is ``(ns_a, if_a, ns_b, if_b, addr_a, addr_b)``, addresses in CIDR form
    or None; IPv6 is off (interface counters count only the traffic sent), loopback is up.
    Yields ``{logical name: namespace name}`` (``tnr-<tag>-<name>``, so `tuner cluster down`
    removes them after a crash); everything is removed on exit, also when the body raises."""
    tag = tag or uuid.uuid4().hex[:6]
    names = {n: f"{PREFIX}{tag}-{n}" for link in links for n in (link[0], link[2])}
    try:
        for real in names.values():
            _add_namespace(real)
            _quiet_ipv6(real)
            _ip("-n", real, "link", "set", "lo", "up")
        for ns_a, if_a, ns_b, if_b, addr_a, addr_b in links:
            _ip("link", "add", if_a, "netns", names[ns_a], "type", "veth", "peer", "name", if_b,
                "netns", names[ns_b])  # fmt: skip
            for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
                if addr:
                    _ip("-n", names[ns], "addr", "add", addr, "dev", ifname)
                _ip("-n", names[ns], "link", "set", ifname, "up")
        yield names
    finally:
        remove_namespaces(list(names.values()))


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise TunerError(f"ip {' '.join(args)} failed: {r.stderr.strip()}", "run as root")


def _quiet_ipv6(name: str) -> None:
    """IPv6 off in a host, so that its interface counters count only the workload."""
    keys = (f"net.ipv6.conf.{key}.disable_ipv6=1" for key in ("all", "default"))
    _sysctl(name, *keys, check=False)


def _sysctl(netns: str, *settings: str, check: bool = True) -> None:
    """Set ``settings`` (``key=value``) in ``netns``; a failure raises, or with
    ``check=False`` is only reported on stderr."""
    r = subprocess.run(
        ["ip", "netns", "exec", netns, "sysctl", "-qw", *settings],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0 and check:
        raise TunerError(f"sysctl in {netns} failed: {r.stderr.strip()}", "run as root")
    if r.returncode != 0:
        sys.stderr.write(r.stderr)


def stop_processes(procs: Sequence[subprocess.Popen], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, for every process still running."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def namespace_pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name``."""
    try:
        target = os.stat(f"{NETNS_DIR}/{name}").st_ino
    except OSError:
        return []
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}/ns/net").st_ino == target:
                    pids.append(int(p))
            except OSError:
                continue  # gone, or a kernel thread
    return pids


def remove_namespaces(names: Sequence[str]) -> list[str]:
    """Kill the processes inside each namespace, then delete it. Returns the ones deleted."""
    removed = []
    for name in names:
        if not os.path.exists(f"{NETNS_DIR}/{name}"):
            continue
        for pid in namespace_pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        removed.append(name)
    return removed


def leftovers(prefix: str = PREFIX, tags: Sequence[str] = ()) -> list[str]:
    """Namespaces of clusters that still exist (``tnr-*``), or of the clusters tagged
    ``tags`` only (``tnr-<tag>-*``: an experiment's groups are ``<tag>``, ``<tag>-g1``, ...).

    >>> leftovers(prefix="no-such-prefix-"), leftovers(tags=["nosuchtag"])
    ([], [])
    """
    starts = tuple(f"{prefix}{t}-" for t in tags) or (prefix,)
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(starts))
    except FileNotFoundError:
        return []


def down_all(prefix: str = PREFIX, tags: Sequence[str] = ()) -> list[str]:
    """Remove every cluster namespace (of the clusters tagged ``tags`` only, when given) and
    what runs in it (what ``tuner cluster down [TAG...]`` does)."""
    return remove_namespaces(leftovers(prefix, tags))


SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM = 0x16, 0x17
ETHTOOL_GGRO, ETHTOOL_SGRO = 0x2B, 0x2C


def ethtool_value(cmd: int, ifname: str, netns: str | None = None, data: int = 0) -> int:
    """Run one ``struct ethtool_value`` command (get or set a flag) on ``ifname`` in
    ``netns``; returns the value the kernel left in it (for a get: the flag).

    >>> ethtool_value(ETHTOOL_GTXCSUM, "no-such-if0")
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: ethtool command 0x16 on no-such-if0 failed: No such device; \
fix: run as root, on an interface that exists
    """
    value = array.array("I", [cmd, data])
    req = struct.pack("16sP", ifname.encode(), value.buffer_info()[0])
    with netns_inside(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            fcntl.ioctl(sock, SIOCETHTOOL, req)
        except OSError as e:
            raise TunerError(
                f"ethtool command {cmd:#x} on {ifname} failed: {e.strerror}",
                "run as root, on an interface that exists",
            ) from None
    return value[1]


def software_tx_checksum(ifname: str, netns: str | None = None) -> None:
    """Turn off TX checksum offload on ``ifname``, so packets leave it with their checksum
    filled in.

    A veth passes a locally sent TCP packet on with its checksum still to be done (the
    "partial" state a NIC would finish). An XDP program on the receiving end that redirects
    such a packet (to a cpumap, as the XDP steering does) drops that state, and the stack then
    discards the packet for its bad checksum: TCP through it stalls in retransmits (measured:
    p99 6 s, connections failing). With this on the switch's port toward a host, the switch
    fills in the checksum as it forwards, so XDP on the host's ``eth0`` is safe.

    >>> software_tx_checksum("no-such-if0")
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: ethtool command 0x17 on no-such-if0 failed: No such device; \
fix: run as root, on an interface that exists
    """
    ethtool_value(ETHTOOL_STXCSUM, ifname, netns, 0)
