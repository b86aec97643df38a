"""Ending the processes a run started before the process leaves.

The command leaves with os._exit, without waiting for checks abandoned at the deadline; a check
may then still be waiting on a child (`docker version` against a stopped daemon, a credential
helper that hangs). Those children are ended here, so that a run never leaves a process behind.
"""

from __future__ import annotations

import os
import signal
import time

GRACE_S = 1.0


def _children(pid: int | str = "self") -> list[int]:
    """The pids of a process's children (every thread's), from /proc; [] where that is not
    available."""
    pids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return pids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                pids += [int(p) for p in fh.read().split()]
        except (OSError, ValueError):
            continue
    return pids


def _descendants() -> list[int]:
    """Children, grandchildren...: a helper script may have started a program of its own."""
    out: list[int] = []
    todo = _children()
    while todo and len(out) < 1000:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo += _children(pid)
    return out


def _alive(pid: int) -> bool:
    """Whether pid still runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def end_children(grace_s: float = GRACE_S) -> list[int]:
    """Terminate every child, kill those still there after grace_s; the pids it ended."""
    pids = _descendants()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            continue
    deadline = time.monotonic() + grace_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
    return pids
