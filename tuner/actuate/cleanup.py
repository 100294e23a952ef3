"""``tuner cleanup``: remove what a crashed tuner left in the kernel.

Steering actuators pin their maps under ``/sys/fs/bpf/tuner/<name>`` and note what they
attached in ``/run/tuner/<name>.json``. For each note this detaches the program (from the
reuseport group of the noted server, or from the noted interface), removes the pins and the
agent's stale control socket. A name whose lock a live tuner still holds is left alone: that
tuner removes its own traces when it stops (SIGTERM).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tuner.actuate.pins import PIN_ROOT, STATE_ROOT, NameLock, remove_pins
from tuner.system import stale_socket


def _detach_reuseport(state: dict) -> str:
    from tuner.actuate.reuseport import SO_DETACH_REUSEPORT_BPF, take_sockets
    from tuner.errors import TunerError

    port = state.get("port")
    for pid in state.get("pids", []):
        try:
            socks = take_sockets(pid, port, state.get("protocol", "tcp"))
        except TunerError:
            continue  # that process is gone, and its sockets with it
        try:
            socks[0].setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
            return f"detached from the reuseport group of pid {pid} port {port}"
        except OSError as e:
            if e.errno == errno.ENOENT:
                return f"the reuseport group of pid {pid} port {port} had no program attached"
        finally:
            for s in socks:
                s.close()
    return f"no process of {state.get('pids', [])} holds port {port} any more"


def _detach_xdp(state: dict) -> str:
    cmd = ["ip"] + (["-n", state["netns"]] if state.get("netns") else [])
    cmd += ["link", "set", "dev", state["ifname"], "xdp", "off"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return (
        f"XDP detached from {state['ifname']}"
        if proc.returncode == 0
        else f"{state['ifname']} gone"
    )


def _remove_socket(path: str) -> str:
    """Remove an agent's control socket that nobody answers on; only a socket, never a file."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode) or not stale_socket(path):
            return ""
    except OSError:
        return ""
    os.unlink(path)
    return f"removed the stale control socket {path}"


def cleanup(
    pin_root: str = PIN_ROOT, state_root: str = STATE_ROOT, names: Sequence[str] | None = None
) -> list[str]:
    """Undo every noted attachment of a tuner that is not running (of ``names`` only, when
    given), remove its pins; return one line per action."""
    done = []
    busy = set()
    for note in sorted(Path(state_root).glob("*.json")):
        name = note.stem
        if names is not None and name not in names:
            continue
        lock = NameLock(name, state_root)
        if lock.held_by_other():
            busy.add(name)
            done.append(f"{name}: a running tuner holds this name; left alone (stop it first)")
            continue
        try:
            state = json.loads(note.read_text())
        except (OSError, ValueError):
            state = {}
        state = state if isinstance(state, dict) else {}
        kind = state.get("kind", "")
        what = [
            _detach_reuseport(state)
            if kind == "ReuseportSteering"
            else _detach_xdp(state)
            if kind == "XdpSteering" and "ifname" in state
            else ""
        ]
        if isinstance(state.get("control_socket"), str):
            what.append(_remove_socket(state["control_socket"]))
        remove_pins(Path(pin_root) / name)
        lock.path.unlink(missing_ok=True)
        done.append(f"{name}: " + "; ".join([w for w in what if w] + ["pins removed"]))
    root = Path(pin_root)
    if root.is_dir():
        for pins in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in busy):
            if names is not None and pins.name not in names:
                continue
            if NameLock(pins.name, state_root).held_by_other():
                continue
            remove_pins(pins)
            done.append(f"{pins.name}: pins removed")
    return done
