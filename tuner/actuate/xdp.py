"""Steer new flows arriving on an interface to other interfaces or CPUs (``bpf/steer_xdp.c``).

Targets are interface names (a devmap: the packet leaves through that interface) or CPU
numbers (a cpumap: the packet is processed on that CPU). Target index ``i`` is the i-th one.
With ``macs`` the targets are backend hosts: the frame to target ``i`` leaves through
``devices[i]`` addressed to ``macs[i]`` (direct server return), and a placed flow keeps its
backend while the lease is lapsed (only new flows go back to the kernel's routing).

>>> parse_mac("02:00:0a:00:00:1f")
b'\\x02\\x00\\n\\x00\\x00\\x1f'
>>> parse_mac("02:00")
Traceback (most recent call last):
...
tuner.errors.TunerError: '02:00' is not a MAC address; fix: write it as six hex bytes, \
aa:bb:cc:dd:ee:ff
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tuner import bcc_runtime
from tuner.actuate.base import MAX_TARGETS, BpfSteering
from tuner.actuate.steering import Placement
from tuner.bpfsys import ProgType
from tuner.errors import TunerError
from tuner.netns import inside

PASS_REASONS = ("unparsed", "default", "no_target", "kernel_flow")
SIOCGIFHWADDR = 0x8927


@dataclass
class XdpSteering(BpfSteering):
    """Attach the XDP steering program to ``ifname`` (in network namespace ``netns``).

    With ``ifname=None`` the program is loaded but not attached (for BPF_PROG_TEST_RUN).
    Give ``devices`` (interface names) or ``cpus``, not both. ``flow_cache=False`` builds the
    program without its per-CPU flow cache, so that ``tuner bench steer`` can show what the
    cache saves.
    """

    ifname: str | None = None
    netns: str | None = None
    devices: Sequence[str] = ()
    cpus: Sequence[int] = ()
    macs: Sequence[str] = ()  # backends: the MAC of the host behind each device target
    xdp_flags: int = 0  # 0: native if the driver has it; 2: generic (skb) mode
    flow_cache: bool = True
    prog: Any = None

    def targets(self) -> int:
        return len(self.devices) or len(self.cpus)

    def _load(self) -> None:
        if bool(self.devices) == bool(self.cpus):
            raise TunerError("XdpSteering needs either devices or cpus as targets")
        if self.targets() > MAX_TARGETS:
            raise TunerError(f"{self.targets()} targets; at most {MAX_TARGETS} are supported")
        cflags = [f"-DMAX_TARGETS={MAX_TARGETS}"] + (["-DTARGET_CPUMAP=1"] if self.cpus else [])
        cflags += [] if self.flow_cache else ["-DNO_FLOW_CACHE=1"]
        if self.macs and len(self.macs) != len(self.devices):
            raise TunerError(
                f"{len(self.macs)} backend MACs for {len(self.devices)} devices",
                "give one MAC per device target",
            )
        macs = [parse_mac(m) for m in self.macs]
        cflags += ["-DBACKENDS=1"] if macs else []
        self._bpf = bcc_runtime.compile_program(
            src_file=bcc_runtime.bpf_dir() / "steer_xdp.c", cflags=cflags
        )
        self.prog = bcc_runtime.load_function(self._bpf, "steer_xdp", ProgType.XDP)
        tmap = self._bpf[b"targets"]
        mmap = self._bpf[b"target_macs"] if macs else None
        with inside(self.netns):
            for i, dev in enumerate(self.devices):
                try:
                    tmap[tmap.Key(i)] = tmap.Leaf(socket.if_nametoindex(dev))
                    own = interface_mac(dev) if macs else b""
                except OSError:
                    raise TunerError(
                        f"interface {dev!r} not found"
                        + (f" in namespace {self.netns}" if self.netns else ""),
                        "check the target names with `ip link`",
                    ) from None
                if mmap is not None:
                    mmap[mmap.Key(i)] = mmap.Leaf(
                        (ctypes.c_ubyte * 6)(*macs[i]), (ctypes.c_ubyte * 6)(*own)
                    )
            for cpu in self.cpus:  # a cpumap is keyed by CPU number; value: its queue size
                if not 0 <= cpu < (os.cpu_count() or 1):
                    raise TunerError(f"CPU {cpu} does not exist", "check with `nproc`")
                tmap[tmap.Key(cpu)] = tmap.Leaf(2048)
            if self.ifname is not None:
                try:
                    self._bpf.attach_xdp(self.ifname.encode(), self.prog, self.xdp_flags)
                except Exception as e:
                    raise TunerError(
                        f"cannot attach XDP to {self.ifname}: {e}",
                        "check the interface with `ip link`",
                    ) from None

    def _map_key(self, target: int) -> int:
        """The map key the datapath uses for target index ``target``."""
        return self.cpus[target] if self.cpus else target

    def _detach(self) -> None:
        if self.ifname is not None:
            with inside(self.netns):
                try:
                    self._bpf.remove_xdp(self.ifname.encode(), self.xdp_flags)
                except Exception:
                    pass  # interface gone, and the program with it

    def _state(self) -> dict:
        return {"ifname": self.ifname, "netns": self.netns} if self.ifname else {}

    def counters(self) -> dict[str, Any]:
        """Packets redirected per target, and passed to the stack by reason, since load."""
        red, passed = self._bpf[b"redirected"], self._bpf[b"passed"]
        keys = [self._map_key(i) for i in range(self.targets())]
        return {
            "redirected": [int(sum(red[red.Key(k)])) for k in keys],
            **{f"passed_{r}": int(sum(passed[passed.Key(i)])) for i, r in enumerate(PASS_REASONS)},
        }

    def _placement(self) -> Placement:
        """Packets redirected per target, and passed to the stack by reason."""
        c = self.counters()
        return Placement(tuple(c["redirected"]), {r: c[f"passed_{r}"] for r in PASS_REASONS})

    def flows(self) -> int:
        """Flows in the flow table."""
        return len(self._bpf[b"flows"].items())


def parse_mac(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` as 6 bytes."""
    parts = text.split(":")
    try:
        if len(parts) == 6:
            return bytes(int(p, 16) for p in parts)
    except ValueError:
        pass
    raise TunerError(
        f"{text!r} is not a MAC address", "write it as six hex bytes, aa:bb:cc:dd:ee:ff"
    )


def interface_mac(ifname: str) -> bytes:
    """The MAC address of ``ifname`` in the current network namespace (SIOCGIFHWADDR on a
    socket made here: sysfs would show the namespace it was mounted in).

    >>> interface_mac("lo")
    b'\\x00\\x00\\x00\\x00\\x00\\x00'
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16s16x", ifname.encode()[:15])
        out = fcntl.ioctl(sock, SIOCGIFHWADDR, req)  # OSError when there is no such interface
    return out[18:24]
