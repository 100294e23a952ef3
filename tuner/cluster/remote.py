"""Experiment hosts reached over SSH (paramiko): a server host and client hosts that are real
machines, or anything that runs an SSH server (the tests use OpenSSH in network namespaces).

:class:`SshHosts` offers what the experiment runner needs of :class:`~tuner.cluster.Cluster`
(hosts by role, :meth:`~SshHosts.start` a process on one, an arm's files) with every step
going through SSH: commands as argv lists (quoted by :func:`shlex.join`, never assembled by
hand), files through SFTP.

Each remote process runs under a small wrapper shell (:data:`WRAP`) that prints the
process's pid and kills it with SIGTERM when the SSH channel's input closes: when the
runner stops it, exits, is interrupted, or loses the connection. Nothing is left running on
a host the runner can no longer reach. An arm's files live on each host under
``cluster.workdir`` and are fetched into the arm's local folder when it ends, from every
host still reachable (:meth:`SshHosts.collect`); a host whose connection dropped is named
by :meth:`SshHosts.lost`.

>>> parse_target("root@198.18.0.11:2222")
('root', '198.18.0.11', 2222)
>>> parse_target("edge-17")
('root', 'edge-17', 22)
"""

from __future__ import annotations

import io
import json
import logging
import shlex
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.cluster.netutil import stop_processes
from tuner.cluster.topology import Host, HostList
from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.group import Group

# $1: where the process's stderr goes; the rest: its argv. Prints the pid on stderr, then
# waits; the watcher (input = the channel's input, kept as fd 3) sends SIGTERM on EOF.
WRAP = (
    'log=$1; shift; exec 3<&0; "$@" </dev/null 3<&- 2>>"$log" & child=$!; echo "$child" >&2; '
    '(cat <&3 >/dev/null 2>&1; kill -TERM "$child" 2>/dev/null) >/dev/null 2>&1 & '
    'watch=$!; exec 3<&-; wait "$child"; status=$?; kill "$watch" 2>/dev/null; exit "$status"'
)
CONNECT_S = 10.0


def parse_target(text: str) -> tuple[str, str, int]:
    """``[user@]host[:port]`` as (user, host, port); user root and port 22 by default."""
    user, _, rest = text.rpartition("@")
    host, _, port = rest.partition(":")
    if not host or (port and not port.isdigit()):
        raise TunerError(f"SSH host {text!r} is not [user@]host[:port]", "e.g. root@10.0.0.7")
    return user or "root", host, int(port or 22)


class HostLost(TunerError):
    """A host's SSH connection failed while the experiment used it."""


@dataclass
class RemoteProcess:
    """A process on an SSH host, with the parts of :class:`subprocess.Popen` the runner uses."""

    host: Host
    argv: list[str]
    channel: Any  # paramiko.Channel
    ssh: Any  # paramiko.SSHClient, for signals
    pid: int
    stdout: Any = None  # text lines, when started with lines=True
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self.channel.exit_status_ready():
            self.returncode = self.channel.recv_exit_status()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout or 0.0)
            time.sleep(0.05)
        return self.returncode or 0

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                _run(self.ssh, ["kill", f"-{int(sig)}", str(self.pid)], timeout=CONNECT_S)
            except HostLost:
                self.channel.close()  # the host is gone; so is the process, with its session

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        self.wait(timeout)
        return (self.stdout.read() if self.stdout is not None else ""), None


@dataclass
class SshHosts(HostList):
    """The hosts of an experiment reached over SSH. Use as a context manager: leaving it stops
    every process started through it and removes its work folders on every host.

    Parameters
    ----------
    server : str
        ``[user@]host[:port]`` of the server host (it runs the server and the agent).
    clients : list of str
        The client hosts, one load generator each.
    address : str
        The address the clients reach the server at ("": the server's host name).
    key : str
        Private key file ("": the user's default keys).
    known_hosts : str
        Known-hosts file: a host whose key is not in it is refused.
    python : str
        The Python interpreter with tuner installed, on every host.
    workdir : str
        Folder on every host under which each run keeps its files while it runs.
    """

    server: str
    clients: list[str]
    address: str = ""
    key: str = ""
    known_hosts: str = "~/.ssh/known_hosts"
    python: str = "python3"
    workdir: str = "/tmp/tuner-experiments"
    hosts: list[Host] = field(default_factory=list, init=False)
    _ssh: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _procs: list[RemoteProcess] = field(default_factory=list, init=False, repr=False)
    _run_dir: str = field(default="", init=False, repr=False)
    _dirs: int = field(default=0, init=False, repr=False)

    def up(self) -> SshHosts:
        """Connect to every host and make this run's work folder on each."""
        targets = [("server", "server", self.server)] + [
            (f"client{i}", "client", c) for i, c in enumerate(self.clients)
        ]
        self._run_dir = f"{self.workdir}/run-{uuid.uuid4().hex[:8]}"
        try:
            for name, role, target in targets:
                _, hostname, _ = parse_target(target)
                address = self.address if role == "server" and self.address else hostname
                self.hosts.append(Host(name, role, "", address, target))
                self._ssh[name] = self._connect(name, target)
                self.run(self.host(name), ["mkdir", "-p", self._run_dir])
        except BaseException:
            self.down()
            raise
        return self

    def _connect(self, name: str, target: str) -> Any:
        import paramiko

        # paramiko's transport thread logs a failed login with its traceback; the one-line
        # error below says it (a handler of the user's own still gets the record)
        log = logging.getLogger("paramiko")
        if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
            log.addHandler(logging.NullHandler())
        user, hostname, port = parse_target(target)
        ssh = paramiko.SSHClient()
        try:
            ssh.load_host_keys(str(Path(self.known_hosts).expanduser()))
        except OSError as e:
            raise TunerError(
                f"cannot read the known-hosts file {self.known_hosts}: {e.strerror}",
                f"set cluster.known_hosts, or run: ssh-keyscan {hostname} >> {self.known_hosts}",
            ) from None
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            ssh.connect(
                hostname,
                port,
                user,
                key_filename=self.key or None,
                look_for_keys=not self.key,
                allow_agent=not self.key,
                timeout=CONNECT_S,
                banner_timeout=CONNECT_S,
                auth_timeout=CONNECT_S,
            )
        except paramiko.SSHException as e:
            why = f"cannot log in to {name} ({target}) over SSH: {e}"
            raise TunerError(why, "check cluster.ssh_key and cluster.known_hosts") from None
        except OSError as e:
            why = f"cannot reach {name} ({target}) over SSH: {e}"
            raise TunerError(why, "check the host's address and that sshd runs there") from None
        ssh.get_transport().set_keepalive(5)
        return ssh

    # -- the interface the runner uses (host() and by_role() from HostList) --------------
    def start(
        self, host: Host | None, argv: Sequence[str], *, lines: bool = False, log: str = ""
    ) -> RemoteProcess:
        """Start ``argv`` on ``host`` (None: the server host); ``lines``: read its stdout as
        text lines; ``log``: a file on that host for its stderr."""
        h = host or self.host("server")
        ssh = self._ssh[h.name]
        cmd = shlex.join(["sh", "-c", WRAP, "sh", log or "/dev/null", *argv])
        try:
            chan = ssh.get_transport().open_session(timeout=CONNECT_S)
            chan.exec_command(cmd)
            pid = int(chan.makefile_stderr("r").readline().strip() or -1)
        except (OSError, EOFError, ValueError, _ssh_error()) as e:
            raise HostLost(f"host {h.name} ({h.port}) failed to start {argv[0]}: {e}") from None
        out = chan.makefile("r") if lines else None
        proc = RemoteProcess(h, list(argv), chan, ssh, pid, out)
        self._procs.append(proc)
        return proc

    def run(self, host: Host, argv: Sequence[str], timeout: float = 60.0) -> tuple[int, str]:
        """Run ``argv`` on ``host`` to its end: (exit status, stdout)."""
        return _run(self._ssh[host.name], argv, timeout, host)[:2]

    def group(self, host: Host, port: int, protocol: str) -> Group:
        """The reuseport group on ``port`` on ``host``: ``tuner group --json`` run there."""
        from tuner.group import Group

        argv = [self.python, "-m", "tuner", "group", str(port), "--json"]
        status, out, err = _run(self._ssh[host.name], argv + ["--udp"] * (protocol == "udp"),
                                CONNECT_S, host)  # fmt: skip
        if status != 0:
            raise TunerError(err.strip().removeprefix("tuner: error: ") or f"exit {status}")
        return Group.from_json(json.loads(out))

    def arm_dir(self, host: Host | None, local: Path) -> str:
        """The folder on ``host`` for the files of the arm kept locally in ``local``."""
        self._dirs += 1
        path = f"{self._run_dir}/{self._dirs:03d}-{local.name}"
        self.run(host or self.host("server"), ["mkdir", "-p", path])
        return path

    def put(self, host: Host | None, path: str, text: str) -> None:
        """Write ``text`` into the file ``path`` on ``host`` (None: the server host)."""
        h = host or self.host("server")
        try:
            with self._ssh[h.name].open_sftp() as sftp:
                sftp.putfo(io.BytesIO(text.encode()), path)
        except (OSError, EOFError, _ssh_error()) as e:
            raise HostLost(f"host {h.name} ({h.port}) lost writing {path}: {e}") from None

    def collect(self, host: Host | None, remote: str, local: Path) -> list[str]:
        """Fetch every file of the folder ``remote`` on ``host`` into ``local``, then remove
        it there; returns the names fetched."""
        h = host or self.host("server")
        try:
            with self._ssh[h.name].open_sftp() as sftp:
                got = _get_tree(sftp, remote, local)
            self.run(h, ["rm", "-rf", remote])
        except (OSError, EOFError, _ssh_error()) as e:
            raise HostLost(f"host {h.name} ({h.port}) lost while fetching its files: {e}") from None
        return got

    def answers(self, socket: str) -> bool:
        """Whether an agent answers on the control ``socket`` on the server host."""
        argv = [self.python, "-m", "tuner", "status", "--socket", socket, "--json"]
        return self.run(self.host("server"), argv, timeout=CONNECT_S)[0] == 0

    def cleanup_agent(self, name: str) -> None:
        """Remove what a dead agent left in the server host's kernel (``tuner cleanup``
        there: every tuner that is not running)."""
        self.run(self.host("server"), [self.python, "-m", "tuner", "cleanup"])

    def lost(self) -> list[str]:
        """Hosts whose SSH connection has dropped (a host never connected is not one)."""
        return [
            h.name
            for h in self.hosts
            if h.name in self._ssh
            and (not (t := self._ssh[h.name].get_transport()) or not t.is_active())
        ]

    # -- lifecycle -----------------------------------------------------------------------
    def down(self) -> None:
        """Stop what runs through these connections, remove this run's folders, disconnect."""
        stop_processes(self._procs)  # RemoteProcess speaks Popen's signal/wait/kill
        lost = self.lost()
        for h in self.hosts:
            if h.name in self._ssh and h.name not in lost and self._run_dir:
                try:
                    self.run(h, ["rm", "-rf", self._run_dir], timeout=CONNECT_S)
                except TunerError:
                    pass
        for ssh in self._ssh.values():
            ssh.close()  # closes every channel: the wrappers stop what is left
        self._ssh, self._procs, self.hosts = {}, [], []

    def __enter__(self) -> SshHosts:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def _get_tree(sftp: Any, remote: str, local: Path) -> list[str]:
    """Copy the folder ``remote`` (a trace is a folder of parts) into ``local``; a folder that
    is gone gives nothing, a socket is left out."""
    try:
        entries = sftp.listdir_attr(remote)
    except FileNotFoundError:
        return []  # fetched already
    got = []
    for e in sorted(entries, key=lambda e: e.filename):
        if stat.S_ISDIR(e.st_mode or 0):
            (local / e.filename).mkdir(exist_ok=True)
            _get_tree(sftp, f"{remote}/{e.filename}", local / e.filename)
        elif stat.S_ISREG(e.st_mode or 0):
            sftp.get(f"{remote}/{e.filename}", str(local / e.filename))
        else:
            continue
        got.append(e.filename)
    return got


def _ssh_error() -> type[Exception]:
    import paramiko

    return paramiko.SSHException


def _run(
    ssh: Any, argv: Sequence[str], timeout: float, host: Host | None = None
) -> tuple[int, str, str]:
    """Run ``argv`` to its end over ``ssh``: (exit status, stdout, stderr)."""
    name = host.name if host else "a host"
    try:
        _, out, err = ssh.exec_command(shlex.join(argv), timeout=timeout)
        text = out.read().decode(errors="replace")
        return out.channel.recv_exit_status(), text, err.read().decode(errors="replace")
    except (OSError, EOFError, _ssh_error()) as e:
        raise HostLost(f"{name} did not run {argv[0]}: {e}") from None
