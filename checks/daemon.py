"""The docker daemon on this host: is it running (process table and Engine API), which versions
talk to the registry, and what its log says. Everything here only reads."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagnose import faq
from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.facts import DAEMON, DaemonInfo
from diagnose.models import Finding, Status, passed, problem, skipped
from diagnose.secrets import scrub

if TYPE_CHECKING:
    from diagnose.engine import EngineError

DAEMON_NAMES = {"dockerd", "docker-current", "dockerd-current"}
MIN_VERSION = "18.03"
LOG_TAIL = 2 * 1024 * 1024
LOG_FILES = ("var/log/docker.log", "var/log/upstart/docker.log", "var/log/daemon.log")
UNIT_FILES = (
    "lib/systemd/system/docker.service",
    "usr/lib/systemd/system/docker.service",
    "etc/systemd/system/docker.service",
    "etc/init.d/docker",
)


def daemon_processes(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """dockerd, and Red Hat's docker-current / `docker daemon`, from the process table."""
    found = []
    for proc in table:
        name = proc["name"]
        cmd = proc["cmdline"]
        heads = [Path(c).name for c in cmd[:2]]
        is_daemon = (
            name in DAEMON_NAMES
            or any(h in DAEMON_NAMES for h in heads)
            or (heads[:1] in (["docker"], ["docker-current"]) and "daemon" in cmd[1:2])
        )
        if is_daemon:
            start = next(
                (i for i, c in enumerate(cmd) if Path(c).name in DAEMON_NAMES or c == "daemon"), 0
            )
            found.append(
                {
                    "pid": proc["pid"],
                    "name": name,
                    "args": [scrub(a) for a in cmd[start + 1 :]][:200],
                }
            )
    return found


def _init_system(root: Path) -> str:
    if (root / "run/systemd/system").is_dir() or (root / "lib/systemd/systemd").exists():
        return "systemd"
    return "sysv"


def _start_command(root: Path) -> str:
    return (
        "sudo systemctl start docker"
        if _init_system(root) == "systemd"
        else "sudo service docker start"
    )


def _installed(ctx: CheckContext) -> bool:
    root = ctx.options.host_root
    if any((root / f).exists() for f in UNIT_FILES) or (root / "usr/bin/dockerd").exists():
        return True
    return ctx.live_host and bool(ctx.which("dockerd") or ctx.which("docker-current"))


class DockerDaemonCheck(Check):
    id = "docker-daemon"
    title = "Docker daemon"
    order = 200
    scope = "host"
    runtimes = ("docker",)
    timeout_s = 10.0
    faq_keys = ("client-timeout", "docker-debug-logs", "cli-in-container")
    codes = (Code.DOCKER_DAEMON_ERROR, Code.DOCKER_SOCKET_PERMISSION)

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.engine import DEFAULT_HOST, EngineError, engine_get

        root = ctx.options.host_root
        docker_host = ctx.options.docker_host
        if docker_host is None and ctx.live_host:
            docker_host = ctx.environ.get("DOCKER_HOST") or DEFAULT_HOST
        processes = daemon_processes(ctx.processes())
        installed = _installed(ctx)
        evidence: dict[str, Any] = {
            "docker_host": docker_host,
            "processes": processes,
            "installed": installed,
            "init": _init_system(root),
        }
        args = tuple(str(a) for a in processes[0].get("args", [])) if processes else ()
        ctx.put(DAEMON, DaemonInfo(present=None, args=args))
        if docker_host is None:
            evidence["present"] = None
            return skipped(
                "host files come from --host-root: the daemon's process and socket "
                "belong to another machine (use --docker-host to reach one)",
                **evidence,
            )
        try:
            _, ping = engine_get(docker_host, "/_ping", ctx.budget(4.0))
            _, version = engine_get(docker_host, "/version", ctx.budget(4.0))
            _, info = engine_get(docker_host, "/info", ctx.budget(6.0))
        except EngineError as exc:
            finding = self._unreachable(ctx, exc, processes, installed, evidence)
            ctx.put(DAEMON, DaemonInfo(present=evidence.get("present"), args=args))
            return finding
        if not isinstance(version, dict) or not isinstance(info, dict):
            return problem(
                Status.FAIL,
                f"{docker_host} answers, but not as a docker daemon",
                code=Code.DOCKER_DAEMON_ERROR,
                faq=["docker-debug-logs"],
                evidence=evidence,
            )
        evidence.update(
            present=True,
            ping=str(ping)[:20],
            version=version.get("Version"),
            api_version=version.get("ApiVersion"),
            os=info.get("OperatingSystem"),
            os_type=info.get("OSType") or None,
            debug=info.get("Debug"),
            registry_config=info.get("RegistryConfig"),
            http_proxy=info.get("HttpProxy") or None,
            https_proxy=info.get("HttpsProxy") or None,
            no_proxy=info.get("NoProxy") or None,
            security_options=info.get("SecurityOptions"),
        )
        proxies = {
            name: str(info[key])
            for key, name in (
                ("HttpProxy", "HTTP_PROXY"),
                ("HttpsProxy", "HTTPS_PROXY"),
                ("NoProxy", "NO_PROXY"),
            )
            if info.get(key)
        }
        registry_config = info.get("RegistryConfig")
        ctx.put(
            DAEMON,
            DaemonInfo(
                present=True,
                version=str(version.get("Version") or "") or None,
                debug=info.get("Debug") if isinstance(info.get("Debug"), bool) else None,
                registry_config=registry_config if isinstance(registry_config, dict) else {},
                proxies=proxies,
                args=args,
                os_type=str(info.get("OSType") or "").lower() or None,
            ),
        )
        return passed(
            f"docker {version.get('Version')} answers on {docker_host}"
            + (f" (pid {processes[0]['pid']})" if processes else ""),
            **evidence,
        )

    def _unreachable(
        self,
        ctx: CheckContext,
        exc: EngineError,
        processes: list[dict[str, Any]],
        installed: bool,
        evidence: dict[str, Any],
    ) -> Finding:
        root = ctx.options.host_root
        evidence["error"] = exc.kind
        if exc.kind == "permission":
            evidence["present"] = True
            return problem(
                Status.FAIL,
                f"the docker socket refuses this user: {exc}",
                code=Code.DOCKER_SOCKET_PERMISSION,
                faq=["cli-in-container"],
                remediation=[
                    "Join the group that owns the socket: `sudo usermod -aG docker "
                    "$USER`, then log out and in again (or run `newgrp docker`).",
                    "Or run docker (and this tool) with sudo.",
                ],
                evidence=evidence,
            )
        if processes:
            evidence["present"] = True
            return problem(
                Status.FAIL,
                f"dockerd runs (pid {processes[0]['pid']}) but {exc}",
                code=Code.DOCKER_DAEMON_ERROR,
                faq=["client-timeout", "docker-debug-logs"],
                remediation=[
                    "Check which socket the daemon listens on (`-H` / `hosts` in "
                    "daemon.json) and that DOCKER_HOST points there.",
                    "If the daemon is stuck, restart it: `sudo systemctl restart docker`.",
                ],
                evidence=evidence,
            )
        if installed or ctx.options.docker_host:
            evidence["present"] = True
            return problem(
                Status.FAIL,
                f"docker is installed but its daemon is not running ({exc})",
                code=Code.DOCKER_DAEMON_ERROR,
                faq=["client-timeout", "docker-debug-logs"],
                remediation=[
                    f"Start it: `{_start_command(root)}`.",
                    "If it will not start, read its log: `journalctl -u docker` (or "
                    "/var/log/docker.log).",
                ],
                evidence=evidence,
            )
        evidence["present"] = False
        return skipped(
            "no docker on this host (no daemon, no socket): the docker checks are "
            "skipped; the registry checks above still ran",
            **evidence,
        )


def docker_absent(ctx: CheckContext) -> str | None:
    """Why docker-only checks have nothing to look at, or None."""
    ctx.result("docker-daemon")
    daemon = ctx.fact(DAEMON)
    if daemon is not None and daemon.present is False:
        return "no docker on this host"
    return None


def _version_tuple(text: str) -> tuple[int, ...] | None:
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


class DockerVersionCheck(Check):
    id = "docker-version"
    title = "Docker versions"
    order = 210
    scope = "host"
    runtimes = ("docker",)
    depends_on = ("docker-daemon",)
    timeout_s = 15.0
    faq_keys = ("tls12",)
    codes = (Code.DOCKER_VERSION_ERROR,)

    def run(self, ctx: CheckContext) -> Finding:
        reason = docker_absent(ctx)
        ctx.result("docker-daemon")
        daemon = ctx.fact(DAEMON)
        server = (daemon.version or "") if daemon else ""
        client = ""
        evidence: dict[str, Any] = {}
        cli = ctx.which("docker") if ctx.live_host else None
        if cli:
            try:
                p = subprocess.run(
                    [cli, "version", "--format", "{{json .}}"],
                    capture_output=True,
                    timeout=ctx.budget(10.0),
                    check=False,
                    env={
                        **ctx.environ,
                        **(
                            {"DOCKER_HOST": ctx.options.docker_host}
                            if ctx.options.docker_host
                            else {}
                        ),
                    },
                )
                data = json.loads(p.stdout.decode("utf-8", "replace") or "{}")
                client = str((data.get("Client") or {}).get("Version") or "")
                server = server or str((data.get("Server") or {}).get("Version") or "")
            except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError) as exc:
                evidence["cli_error"] = type(exc).__name__
        evidence.update(client=client or None, server=server or None, minimum=MIN_VERSION)
        if not client and not server:
            return skipped(
                reason or "no docker CLI and no daemon answered: no version to read", **evidence
            )
        from packaging.version import InvalidVersion, Version

        floor = Version(MIN_VERSION)
        old = []
        for role, text in (("client", client), ("daemon", server)):
            if not text:
                continue
            parts = _version_tuple(text)
            try:
                v = Version(".".join(str(p) for p in parts)) if parts else Version(text)
            except InvalidVersion:
                continue
            if v < floor:
                old.append(f"{role} {text}")
        if old:
            return problem(
                Status.FAIL,
                f"docker {' and '.join(old)} is older than {MIN_VERSION}: it cannot "
                "negotiate TLS 1.2 with registries that require it",
                code=Code.DOCKER_VERSION_ERROR,
                faq=["tls12"],
                remediation=[
                    "Upgrade docker (client and engine) to 18.03 or later; current "
                    "releases come from your distribution or docker's own packages."
                ],
                evidence=evidence,
            )
        shown = ", ".join(f"{k} {v}" for k, v in (("client", client), ("daemon", server)) if v)
        return passed(f"{shown} (>= {MIN_VERSION}: TLS 1.2 capable)", **evidence)


class DaemonLogCheck(Check):
    id = "daemon-log"
    title = "Docker daemon log"
    order = 260
    scope = "host"
    runtimes = ("docker",)
    depends_on = ("docker-daemon",)
    timeout_s = 15.0
    faq_keys = tuple(faq.load())
    codes = (Code.DAEMON_LOG_ERRORS,)

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.dockerhost import tail

        root = ctx.options.host_root
        where, text = None, None
        for rel in LOG_FILES:
            path = root / rel
            if path.is_file():
                try:
                    text = tail(path, LOG_TAIL).decode("utf-8", "replace")
                    where = f"/{rel}"
                    break
                except OSError:
                    continue
        if (
            text is None
            and ctx.live_host
            and ctx.which("journalctl")
            and (root / "run/systemd/system").is_dir()
        ):
            try:
                p = subprocess.run(
                    ["journalctl", "-u", "docker", "-n", "5000", "--no-pager", "-o", "cat"],
                    capture_output=True,
                    timeout=ctx.budget(10.0),
                    check=False,
                )
                text = p.stdout[-LOG_TAIL:].decode("utf-8", "replace")
                where = "journald (unit docker)"
            except (OSError, subprocess.TimeoutExpired):
                text = None
        if text is None or where is None:
            reason = docker_absent(ctx) or "no docker daemon log found (journald, "
            return skipped(
                reason
                if reason.endswith("host")
                else reason + "/var/log/docker.log, /var/log/upstart/docker.log)"
            )
        lines = text.splitlines()
        hits: list[dict[str, Any]] = []
        keys: dict[str, int] = {}
        for line in lines:
            matches = faq.match_line(line)
            if matches:
                hits.append(
                    {"line": scrub(line.strip())[:300], "faq": sorted({m.key for m in matches})}
                )
                for m in matches:
                    keys[m.key] = max(keys.get(m.key, 0), m.weight)
        evidence = {
            "log": where,
            "lines_read": len(lines),
            "matches": hits[-10:],
            "debug_lines": sum(1 for line in lines if "level=debug" in line),
        }
        if not hits:
            return passed(
                f"no known registry error in the last {len(lines)} lines of {where}", **evidence
            )
        ranked = sorted(keys, key=lambda k: -keys[k])
        return problem(
            Status.WARN,
            f"{len(hits)} line(s) of {where} match known errors: {', '.join(ranked[:4])}",
            code=Code.DAEMON_LOG_ERRORS,
            faq=ranked[:4],
            remediation=[
                f"Latest: {hits[-1]['line']}",
                "`diagnose explain --file <log>` explains each line.",
            ],
            evidence=evidence,
        )
