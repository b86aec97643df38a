"""Which container runtimes are on this host: the answer decides whose configuration a pull
depends on (docker's daemon.json, containers/image's registries.conf and policy.json, or
containerd's hosts.toml). Found from the process table, sockets, config files and binaries."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from diagnose.check import Check
from diagnose.choices import RUNTIMES
from diagnose.context import CheckContext
from diagnose.facts import ACTIVE_RUNTIMES
from diagnose.models import Finding, passed

# what shows a runtime is installed or running, as paths under the host root
SIGNS: dict[str, dict[str, tuple[str, ...]]] = {
    "docker": {
        "binary": ("usr/bin/dockerd", "usr/sbin/dockerd", "usr/bin/docker-current"),
        "config": ("etc/docker/daemon.json", "etc/sysconfig/docker"),
        "socket": ("run/docker.sock", "var/run/docker.sock"),
    },
    "podman": {
        "binary": ("usr/bin/podman", "usr/bin/skopeo", "usr/bin/buildah"),
        "config": (
            "etc/containers/registries.conf",
            "etc/containers/policy.json",
            "etc/containers/registries.conf.d",
        ),
        "socket": ("run/podman/podman.sock",),
    },
    "crio": {
        "binary": ("usr/bin/crio", "usr/local/bin/crio"),
        "config": ("etc/crio/crio.conf", "etc/crio/crio.conf.d"),
        "socket": ("run/crio/crio.sock", "var/run/crio/crio.sock"),
    },
    "containerd": {
        "binary": ("usr/bin/containerd", "usr/local/bin/containerd"),
        "config": ("etc/containerd/config.toml", "etc/containerd/certs.d"),
        "socket": ("run/containerd/containerd.sock",),
    },
}
PROCESS_NAMES = {
    "dockerd": "docker",
    "docker-current": "docker",
    "crio": "crio",
    "containerd": "containerd",
    "podman": "podman",
}


def _exists(path: Path) -> bool:
    """Path.exists, where a path this user may not look at (a root-only /run/containerd seen
    by a non-root container) is no sign, rather than a crash (Python 3.12's rule)."""
    try:
        return path.exists()
    except OSError:
        return False


def detect(
    root: Path, live: bool, table: list[dict[str, Any]], search_path: str | None = None
) -> dict[str, dict[str, Any]]:
    """For each runtime, the signs of it found (files under root; on this very machine also
    the process table and PATH)."""
    procs: dict[str, list[int]] = {}
    for proc in table:
        runtime = PROCESS_NAMES.get(proc["name"])
        if runtime:
            procs.setdefault(runtime, []).append(int(proc["pid"]))
    out: dict[str, dict[str, Any]] = {}
    for runtime, kinds in SIGNS.items():
        signs: dict[str, list[str]] = {}
        for kind, paths in kinds.items():
            hits = ["/" + p for p in paths if _exists(root / p)]
            if hits:
                signs[kind] = hits
        if live:
            for exe in {Path(p).name for p in kinds["binary"]}:
                where = shutil.which(exe, path=search_path)
                if where and where not in signs.get("binary", []):
                    signs.setdefault("binary", []).append(where)
            if runtime in procs:
                signs["process"] = [str(p) for p in procs[runtime][:5]]
        out[runtime] = {"present": bool(signs), "signs": signs}
    return out


class ContainerRuntimesCheck(Check):
    id = "container-runtimes"
    title = "Container runtimes on this host"
    order = 190
    scope = "host"
    timeout_s = 5.0

    def run(self, ctx: CheckContext) -> Finding:
        found = detect(
            ctx.options.host_root, ctx.live_host, ctx.processes(), ctx.environ.get("PATH")
        )
        chosen = list(ctx.options.runtimes)
        present = [r for r in RUNTIMES if found[r]["present"]]
        active = chosen or present
        ctx.put(ACTIVE_RUNTIMES, tuple(active))
        parts = []
        for r in RUNTIMES:
            if found[r]["present"]:
                kinds = ", ".join(sorted(found[r]["signs"]))
                parts.append(f"{r} ({kinds})")
        summary = ("found: " + "; ".join(parts)) if parts else "no container runtime found"
        if chosen:
            summary += f"; diagnosing the pulls of {', '.join(chosen)} (--runtime)"
        elif present:
            summary += f"; diagnosing the pulls of {', '.join(present)}"
        return passed(summary, runtimes=found, active=active, chosen=chosen)
