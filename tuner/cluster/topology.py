"""A test cluster on one machine: network namespaces joined by veth pairs and a bridge.

::

      tnr-<tag>-client0     tnr-<tag>-client1     tnr-<tag>-server
        eth0 198.18.0.11      eth0 198.18.0.12      eth0 198.18.0.1
          |                     |                     |
      +---c0--------------------c1--------------------s0---+   tnr-<tag>-switch
      |                      br0 (bridge)                  |
      +----------------------------------------------------+

With backends, the server host is the entry of a service at :data:`VIP` that the backend
hosts serve (``Cluster(backends=N)``)::

    client --> VIP via server --> server eth0 --(routed: ECMP over the backends, or XDP
                                                  redirect back out of eth0 to one backend)
    backend<i>: VIP on lo; answers the client directly (direct server return)

The kernel's own balancing is ECMP routing with a layer-4 hash
(``fib_multipath_hash_policy=1``), so with no XDP program the backends share the flows by a
hash, as the workers of a reuseport group do.

With ``client_addresses=K``, client host ``i`` also has K addresses of its own,
``198.18.(32+i).1`` to ``198.18.(32+i).K`` on its eth0, and the server host routes
198.18.32.0/19 to its eth0: a load generator gives each of its connections one of them, so
that the server sees K clients per host (the ``client-mix`` profile).

Addresses come from 198.18.0.0/15, the range RFC 2544 reserves for benchmarks; they exist
only inside the namespaces, so no traffic reaches the machine's own interfaces. Processes are
started inside a host with :meth:`Cluster.popen` and are killed when the cluster goes down.
Every namespace of a cluster is named ``tnr-<tag>-<host>``: :func:`down_all` removes what a
crashed run left behind (``tuner cluster down``).

>>> plan = Cluster(clients=2, tag="doc").plan()
>>> [(h.name, h.role, h.address) for h in plan]
[('server', 'server', '198.18.0.1'), ('client0', 'client', '198.18.0.11'), \
('client1', 'client', '198.18.0.12')]
>>> Cluster(clients=2, tag="doc", client_addresses=3).plan()[2].aliases
('198.18.33.1', '198.18.33.2', '198.18.33.3')
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.cluster.netutil import (
    ETHTOOL_SGRO,
    NETNS_DIR,
    PREFIX,
    _add_namespace,
    _quiet_ipv6,
    _sysctl,
    ethtool_value,
    remove_namespaces,
    software_tx_checksum,
    stop_processes,
)
from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.group import Group

SUBNET = "198.18.0"  # RFC 2544 benchmark range; never routed outside the namespaces
CLIENT_NET = "198.18.32.0/19"  # the clients' own addresses: 198.18.(32+i).j of client i
MAX_CLIENT_ADDRESSES = 250
VIP = "198.18.1.1"  # the service address of the backends (on their loopback), via the server
MS_BIND = 4096


@dataclass(frozen=True)
class Host:
    """One host of the cluster: a network namespace with one interface ``eth0``."""

    name: str  # logical name: server, client0, backend0 ...
    role: str  # server | client | backend
    netns: str  # the namespace's name (as `ip netns list` shows it)
    address: str  # IPv4 address of eth0 (/24)
    port: str  # the bridge port in the switch namespace
    aliases: tuple[str, ...] = ()  # more addresses of a client host, as sources of connections


class HostList:
    """Finding hosts by name and role, for any set of hosts that keeps a ``hosts`` list."""

    hosts: list[Host]

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def by_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.role == role]


@dataclass
class Cluster(HostList):
    """N hosts on a bridge. Use as a context manager: leaving it kills every process started
    in it and deletes every namespace, also when the body raises.

    Parameters
    ----------
    clients : int
        Client hosts (1 to 20).
    backends : int
        Backend hosts (0 to 20), for XDP-steered set-ups.
    client_addresses : int
        Addresses of its own for each client host (0 to 250), beside its eth0 address.
    tag : str
        Part of every namespace name; random when empty.
    """

    clients: int = 2
    backends: int = 0
    tag: str = ""
    client_addresses: int = 0
    hosts: list[Host] = field(default_factory=list, init=False)
    _procs: list[subprocess.Popen] = field(default_factory=list, init=False, repr=False)
    # an fd per namespace: it keeps the namespace (and its links) alive, so that a name whose
    # mount under /run/netns went missing can be put back (see :meth:`reattach`)
    _fds: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    # the process that made the cluster: a fork of it that did not exec (pyroute2 forks a
    # helper for every namespaced netlink socket) must never tear the cluster down
    _owner: int = field(default_factory=os.getpid, init=False, repr=False)

    def plan(self) -> list[Host]:
        """The hosts this cluster will have, without creating anything."""
        if not 1 <= self.clients <= 20:
            raise TunerError(f"clients must be 1 to 20; got {self.clients}")
        if not 0 <= self.backends <= 20:
            raise TunerError(f"backends must be 0 to 20; got {self.backends}")
        if not 0 <= self.client_addresses <= MAX_CLIENT_ADDRESSES:
            raise TunerError(f"client addresses must be 0 to {MAX_CLIENT_ADDRESSES} a host; "
                             f"got {self.client_addresses}")  # fmt: skip
        tag = self.tag or uuid.uuid4().hex[:6]
        self.tag = tag
        hosts = [Host("server", "server", f"{PREFIX}{tag}-server", f"{SUBNET}.1", "s0")]
        for i in range(self.clients):
            hosts.append(
                Host(
                    f"client{i}",
                    "client",
                    f"{PREFIX}{tag}-client{i}",
                    f"{SUBNET}.{11 + i}",
                    f"c{i}",
                    tuple(f"198.18.{32 + i}.{j + 1}" for j in range(self.client_addresses)),
                )
            )
        for i in range(self.backends):
            hosts.append(
                Host(
                    f"backend{i}",
                    "backend",
                    f"{PREFIX}{tag}-backend{i}",
                    f"{SUBNET}.{31 + i}",
                    f"b{i}",
                )
            )
        return hosts

    @property
    def switch(self) -> str:
        return f"{PREFIX}{self.tag}-switch"

    # -- lifecycle ------------------------------------------------------------------------
    def up(self) -> Cluster:
        """Create the namespaces, the bridge and one veth pair per host."""
        from pyroute2 import NetNS

        planned = self.plan()
        try:
            self._add(self.switch)
            with NetNS(self.switch) as sw:
                sw.link("add", ifname="br0", kind="bridge")
                bridge = sw.link_lookup(ifname="br0")[0]
                sw.link("set", index=bridge, state="up")
                for h in planned:
                    self.hosts.append(h)
                    self._add(h.netns)
                    _quiet_ipv6(h.netns)
                    sw.link(
                        "add",
                        ifname=h.port,
                        kind="veth",
                        peer={"ifname": "eth0", "net_ns_fd": h.netns},
                    )
                    port = sw.link_lookup(ifname=h.port)[0]
                    sw.link("set", index=port, master=bridge, state="up")
                    software_tx_checksum(h.port, self.switch)
                    with NetNS(h.netns) as ns:
                        eth = ns.link_lookup(ifname="eth0")[0]
                        ns.addr("add", index=eth, address=h.address, prefixlen=24)
                        for a in h.aliases:
                            ns.addr("add", index=eth, address=a, prefixlen=32)
                        ns.link("set", index=eth, state="up")
                        if h.role == "server" and self.client_addresses:
                            ns.route("add", dst=CLIENT_NET, oif=eth, scope=253)  # link
                        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            if self.backends:
                self._route_to_backends()
        except BaseException:
            self.down()
            raise
        return self

    def _route_to_backends(self) -> None:
        """The service at :data:`VIP`: clients route it via the server host, which forwards
        each flow to a backend by ECMP (the kernel's default), or lets XDP redirect it."""
        from pyroute2 import NetNS

        entry, backends = self.host("server"), self.by_role("backend")
        _sysctl(
            entry.netns,
            "net.ipv4.ip_forward=1",
            "net.ipv4.fib_multipath_hash_policy=1",  # layer 4: flows spread, not hosts
            "net.ipv4.conf.all.send_redirects=0",  # the backends are on the same segment
            "net.ipv4.conf.eth0.send_redirects=0",
        )
        # frames XDP redirects back out of the entry's eth0 land on its switch port, which
        # takes them only with NAPI on: GRO turns it on for a veth
        ethtool_value(ETHTOOL_SGRO, entry.port, self.switch, 1)
        with NetNS(entry.netns) as ns:
            hops = [{"gateway": b.address} for b in backends]
            ns.route("add", dst=f"{VIP}/32", multipath=hops)
        for c in self.by_role("client"):
            with NetNS(c.netns) as ns:
                ns.route("add", dst=f"{VIP}/32", gateway=entry.address)
        for b in backends:
            _sysctl(
                b.netns,
                "net.ipv4.conf.all.arp_ignore=1",  # VIP is on lo: never answer ARP for it
                "net.ipv4.conf.all.arp_announce=2",
            )
            with NetNS(b.netns) as ns:
                lo = ns.link_lookup(ifname="lo")[0]
                ns.addr("add", index=lo, address=VIP, prefixlen=32)

    def _add(self, name: str) -> None:
        _add_namespace(name)
        self._fds[name] = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY)

    def reattach(self) -> list[str]:
        """Put back the ``/run/netns`` name of any cluster namespace whose mount went missing
        (seen rarely on CI, cause unknown), from the fd held since creation, so that ``ip
        netns exec`` and the agent find it again. Returns the names put back."""
        back = []
        for name, fd in self._fds.items():
            path = f"{NETNS_DIR}/{name}"
            if os.path.exists(path):
                continue
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0))
            libc = ctypes.CDLL(None, use_errno=True)
            src = f"/proc/self/fd/{fd}".encode()  # the kernel follows this link to the nsfs
            if libc.mount(src, path.encode(), None, MS_BIND, None) != 0:
                err = ctypes.get_errno()
                raise TunerError(
                    f"network namespace {name} lost its name and cannot get it back: "
                    f"{os.strerror(err)}",
                    "run `tuner cluster down` and try again",
                )
            back.append(name)
        return back

    def popen(self, host: str | Host, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` inside ``host``; it is killed when the cluster goes down."""
        h = host if isinstance(host, Host) else self.host(host)
        for name in self.reattach():
            print(f"tuner: warning: namespace {name} lost its name; put back", file=sys.stderr)
        proc = subprocess.Popen(["ip", "netns", "exec", h.netns, *argv], **kwargs)
        self._procs.append(proc)
        return proc

    # -- what the experiment runner asks of its hosts (as of :class:`.remote.SshHosts`) -----
    python = sys.executable  # the interpreter with tuner installed, on every host

    def start(
        self, host: Host | None, argv: Sequence[str], *, lines: bool = False, log: str = ""
    ) -> subprocess.Popen:
        """Start ``argv`` in ``host``, or with ``host`` None on this machine outside the
        cluster (where the agent runs); ``lines``: read its stdout as text lines; ``log``: a
        file for its stderr."""
        kwargs: dict = {"stdout": subprocess.PIPE, "text": True} if lines else {}
        err = open(log, "w") if log else None  # noqa: SIM115 - handed to the child
        try:
            if err is not None:
                kwargs["stderr"] = err
            if host is not None:
                return self.popen(host, argv, **kwargs)
            proc = subprocess.Popen(list(argv), **kwargs)
            self._procs.append(proc)
            return proc
        finally:
            if err is not None:
                err.close()

    def group(self, host: Host, port: int, protocol: str) -> Group:
        """The reuseport group on ``port`` in ``host``, as the agent would find it there."""
        from tuner.group import discover
        from tuner.netns import netns_link

        return discover(port, protocol, netns_link(host.netns))

    def arm_dir(self, host: Host | None, local: Path) -> str:
        """The folder for an arm's files on ``host``: here, the arm's own folder."""
        return str(local)

    def put(self, host: Host | None, path: str, text: str) -> None:
        """Write ``text`` into ``path`` (every host here shares this machine's files)."""
        Path(path).write_text(text)

    def collect(self, host: Host | None, remote: str, local: Path) -> list[str]:
        """Nothing to fetch: the hosts wrote into ``local`` itself."""
        return []

    def lost(self) -> list[str]:
        """Hosts lost: none, a namespace does not drop its connection."""
        return []

    def answers(self, socket: str) -> bool:
        """Whether an agent answers on the control ``socket`` (on this machine)."""
        from tuner.agent.control import request

        try:
            request(socket, {"cmd": "status"}, timeout=1)
            return True
        except TunerError:
            return False

    def cleanup_agent(self, name: str) -> None:
        """Remove what the agent ``name`` left in this machine's kernel if it died."""
        from tuner.actuate.cleanup import cleanup

        cleanup(names=(name, name + "-xdp"))

    def down(self) -> None:
        """Kill what runs in the cluster and delete its namespaces (links go with them).
        Does nothing in a forked child of the process that made the cluster."""
        if os.getpid() != self._owner:
            return
        stop_processes(self._procs)
        self._procs = []
        names = [h.netns for h in self.hosts] + ([self.switch] if self.tag else [])
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        remove_namespaces(names)
        self.hosts = []

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
