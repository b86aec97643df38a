"""Closed sets of values that options and settings files share."""

from __future__ import annotations

from enum import StrEnum


class FailOn(StrEnum):
    error = "error"
    warn = "warn"


class Need(StrEnum):
    pull = "pull"
    push = "push"


class Runtime(StrEnum):
    """Which client's view of a pull to take: the one that pulls on this machine."""

    auto = "auto"
    docker = "docker"
    podman = "podman"
    crio = "crio"
    containerd = "containerd"
    all = "all"


# every runtime a pull can be diagnosed for (the real choices behind auto and all)
RUNTIMES = tuple(r.value for r in Runtime if r not in (Runtime.auto, Runtime.all))
