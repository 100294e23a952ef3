"""What `tuner run` and `tuner cleanup` refuse, on the real kernel (issue 18, items 1, 6, 7, 8,
14 and 16): each is one line, and nothing that belongs to someone else is touched."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from conftest import one_line_error, run_tuner
from helpers import PORT, Agent

from tuner.actuate.pins import PIN_ROOT, STATE_ROOT, read_pins
from tuner.cli import main
from tuner.schema import to_toml

pytestmark = pytest.mark.kernel


def _config(tmp_path: Path, **sections) -> str:
    cfg = {"target": {"port": PORT}, "agent": {"control_socket": str(tmp_path / "x.sock")}}
    for sec, values in sections.items():
        cfg.setdefault(sec, {}).update(values)
    path = tmp_path / "tuner.toml"
    path.write_text(to_toml(cfg))
    return str(path)


def test_a_control_socket_path_that_is_a_file_is_kept(served, tmp_path):
    c, pids, _ = served
    precious = tmp_path / "precious.txt"
    precious.write_text("do not delete")
    cfg = _config(tmp_path, target={"netns": c.host("server").netns},
                  agent={"control_socket": str(precious), "name": "t-file"})  # fmt: skip
    one_line_error(run_tuner("run", "--config", cfg, "--seconds", "1"), "is a regular file")
    assert precious.read_text() == "do not delete"
    assert not Path(PIN_ROOT, "t-file").exists()


def test_a_second_agent_with_the_same_name_harms_nothing(served, tmp_path):
    c, pids, _ = served
    first = Agent(tmp_path, pids, "active", name="t-twin")
    try:
        note = Path(STATE_ROOT, "t-twin.json").read_text()
        second = tmp_path / "second"
        second.mkdir()
        cfg = _config(second, target={"pids": pids}, agent={"name": "t-twin"})
        one_line_error(run_tuner("run", "--config", cfg), "another tuner steers", "'t-twin'")
        # the first is untouched: its pins, its note, its control socket
        assert read_pins("t-twin")["generation"] >= 0
        assert Path(STATE_ROOT, "t-twin.json").read_text() == note
        assert first.status()["mode"] == "active"
        r = run_tuner("cleanup", check=True)  # cleanup sees it, and leaves it alone
        assert "t-twin: a running tuner holds this name" in r.stdout
        assert Path(PIN_ROOT, "t-twin").exists()
    finally:
        done = first.stop()
    assert done.returncode == 0, done.stderr
    assert not Path(PIN_ROOT, "t-twin").exists() and not Path(STATE_ROOT, "t-twin.lock").exists()


def test_target_pids_must_cover_the_group_once_each(served, tmp_path):
    c, pids, _ = served
    r = run_tuner("run", "--config", _config(tmp_path, target={"pids": pids[:1]}))
    one_line_error(r, "target.pids leaves out 3 of the 4 sockets", str(pids[1]))
    r = run_tuner("run", "--config", _config(tmp_path, target={"pids": [pids[0]] + pids}))
    one_line_error(r, f"names pid {pids[0]} twice")
    r = run_tuner("run", "--config", _config(tmp_path, target={"pids": [*pids, os.getpid()]}))
    one_line_error(r, f"pid {os.getpid()}, which serves no socket")
    assert not list(Path(PIN_ROOT).glob("agent*"))


@pytest.mark.parametrize("name", ["a/b", "../x", "", "x" * 60, "-lead"])
def test_names_that_would_become_odd_paths_are_refused(tmp_path, name):
    r = run_tuner("run", "--config", _config(tmp_path, agent={"name": name}))
    one_line_error(r, "'agent.name'", "letters, digits")
    assert not Path("/run/tuner/a").exists() and not Path("/run/x.json").exists()


@pytest.mark.parametrize(
    "argv,what",
    [
        (["cleanup"], "tuner cleanup"),
        (["observe", "--seconds", "1"], "tuner observe"),
        (["run", "--config", "/nonexistent.toml"], "tuner run"),
        (["group", "8000"], "tuner group"),
        (["bench", "loop"], "tuner bench loop"),
    ],
)
def test_commands_say_they_need_root(argv, what, capsys):
    """As another user (seteuid; root is taken back after): one line that says root is
    needed, not a misleading one ('tracefs is not mounted', 'pins removed')."""
    os.seteuid(65534)
    try:
        status = main(argv)
    finally:
        os.seteuid(0)
    err = capsys.readouterr().err
    assert status == 1 and f"{what} needs root" in err and len(err.strip().splitlines()) == 1


def test_cleanup_removes_a_stale_control_socket_and_says_what_it_found(served, tmp_path):
    c, pids, _ = served
    agent = Agent(tmp_path, pids, "active", name="t-stale")
    agent.proc.kill()  # SIGKILL: pins, note, lock file and socket stay
    agent.proc.wait()
    assert Path(agent.sock).exists()
    r = run_tuner("cleanup", check=True)
    assert "t-stale: detached from the reuseport group" in r.stdout, r.stdout
    assert f"removed the stale control socket {agent.sock}" in r.stdout
    assert not Path(agent.sock).exists() and not Path(PIN_ROOT, "t-stale").exists()
    # a group whose program another process detached: said so, not "group gone"
    agent = Agent(tmp_path, pids, "active", name="t-stale")
    agent.proc.kill()
    agent.proc.wait()
    from tuner.actuate.reuseport import SO_DETACH_REUSEPORT_BPF, take_sockets

    socks = take_sockets(pids[0], PORT)
    socks[0].setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
    for s in socks:
        s.close()
    r = run_tuner("cleanup", check=True)
    assert "had no program attached" in r.stdout, r.stdout
