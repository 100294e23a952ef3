"""Steer new flows arriving on an interface to other interfaces or CPUs (``bpf/steer_xdp.c``).

Targets are interface names (a devmap: the packet leaves through that interface) or CPU
numbers (a cpumap: the packet is processed on that CPU). Target index ``i`` is the i-th one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tuner import bcc_runtime
from tuner.actuate.base import Steering
from tuner.bpfsys import ProgType
from tuner.errors import TunerError
from tuner.netns import inside

MAX_TARGETS = 64
PASS_REASONS = ("unparsed", "default", "no_target", "kernel_flow")


@dataclass
class XdpSteering(Steering):
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
        self._bpf = bcc_runtime.compile_program(
            src_file=bcc_runtime.bpf_dir() / "steer_xdp.c", cflags=cflags
        )
        self.prog = bcc_runtime.load_function(self._bpf, "steer_xdp", ProgType.XDP)
        tmap = self._bpf[b"targets"]
        with inside(self.netns):
            for i, dev in enumerate(self.devices):
                try:
                    tmap[tmap.Key(i)] = tmap.Leaf(socket.if_nametoindex(dev))
                except OSError:
                    raise TunerError(
                        f"interface {dev!r} not found"
                        + (f" in namespace {self.netns}" if self.netns else ""),
                        "check the target names with `ip link`",
                    ) from None
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

    def flows(self) -> int:
        """Flows in the flow table."""
        return len(self._bpf[b"flows"].items())
