"""``tuner cleanup``: remove what a crashed tuner left in the kernel.

Steering actuators pin their maps under ``/sys/fs/bpf/tuner/<name>`` and note what they
attached in ``/run/tuner/<name>.json``. For each note this detaches the program (from the
reuseport group of the noted server, or from the noted interface) and removes the pins.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from tuner.actuate.base import PIN_ROOT, STATE_ROOT, remove_pins


def _detach_reuseport(state: dict) -> str:
    from tuner.actuate.reuseport import SO_DETACH_REUSEPORT_BPF, take_sockets

    for pid in state.get("pids", []):
        try:
            socks = take_sockets(pid, state["port"], state.get("protocol", "tcp"))
        except Exception:
            continue  # that process is gone, and its sockets with it
        try:
            socks[0].setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
            return f"detached from the reuseport group of pid {pid} port {state['port']}"
        except OSError:
            pass
        finally:
            for s in socks:
                s.close()
    return "reuseport group gone"


def _detach_xdp(state: dict) -> str:
    cmd = ["ip"] + (["-n", state["netns"]] if state.get("netns") else [])
    cmd += ["link", "set", "dev", state["ifname"], "xdp", "off"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return (
        f"XDP detached from {state['ifname']}"
        if proc.returncode == 0
        else f"{state['ifname']} gone"
    )


def cleanup(pin_root: str = PIN_ROOT, state_root: str = STATE_ROOT) -> list[str]:
    """Undo every noted attachment and remove every pin; return one line per action."""
    done = []
    for note in sorted(Path(state_root).glob("*.json")):
        try:
            state = json.loads(note.read_text())
        except (OSError, ValueError):
            state = {}
        kind = state.get("kind", "")
        what = (
            _detach_reuseport(state)
            if kind == "ReuseportSteering"
            else _detach_xdp(state)
            if kind == "XdpSteering" and "ifname" in state
            else ""
        )
        remove_pins(Path(pin_root) / note.stem)
        done.append(f"{note.stem}: {what + '; ' if what else ''}pins removed")
    root = Path(pin_root)
    if root.is_dir():
        for pins in sorted(p for p in root.iterdir() if p.is_dir()):
            remove_pins(pins)
            done.append(f"{pins.name}: pins removed")
    return done
