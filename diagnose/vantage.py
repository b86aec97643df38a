"""Whether this run shares the network of the docker daemon it judges.

The daemon reaches the registry through its own proxy, from its own network namespace. A proxy
tried from here says what the daemon meets only when here is that namespace: the tool runs on
the daemon's host, or beside it with the host's network (a node debug pod, hostNetwork). The
answer is read, never guessed from names: the daemon's process (its pid from the socket's peer
credentials) or the host root's PID 1 is in this very network namespace, or not.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Vantage:
    """shared: True (this is the daemon's network), False (it is not), None (cannot tell)."""

    shared: bool | None
    words: str


def _net_ns(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_network(path: Path) -> bool | None:
    """Whether the network namespace file `path` (…/ns/net) is this process's."""
    theirs, ours = _net_ns(path), _net_ns(Path("/proc/self/ns/net"))
    if theirs is None or ours is None:
        return None
    return theirs == ours


def daemon_pid(docker_host: str | None, timeout: float = 2.0) -> int | None:
    """The pid of the process listening on a unix docker socket, as this pid namespace numbers
    it (SO_PEERCRED); None for tcp:// hosts, a socket that does not answer, or a daemon whose
    pid this namespace cannot see."""
    if not docker_host or not docker_host.startswith("unix://"):
        return None
    path = urlsplit(docker_host).path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        sock.close()
    pid = struct.unpack("3i", raw)[0]
    return pid if pid > 0 else None


def vantage(host_root: Path, live_host: bool, docker_host: str | None) -> Vantage:
    """Where a proxy tried by this run stands against the daemon's network."""
    pid = daemon_pid(docker_host)
    if pid is not None:
        same = same_network(Path(f"/proc/{pid}/ns/net"))
        if same is True:
            return Vantage(
                True,
                f"tried from the daemon's own network: dockerd (pid {pid}) shares this network "
                "namespace",
            )
        if same is False:
            return Vantage(
                False,
                f"tried from here, not from the daemon's network: dockerd (pid {pid}) is in "
                "another network namespace",
            )
    if live_host:
        return Vantage(True, "tried from this host, the daemon's own")
    same = same_network(host_root / "proc/1/ns/net")
    if same is True:
        return Vantage(
            True, "tried from the host root's network: its PID 1 shares this network namespace"
        )
    if same is False:
        return Vantage(
            False,
            "cannot be tried from here: the host root's PID 1 is in another network namespace",
        )
    return Vantage(
        None,
        "tried from here; whether this is the daemon's network cannot be told: no daemon "
        "socket answered and the host root has no /proc",
    )
