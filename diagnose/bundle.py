"""The support bundle: one archive a support engineer can read without the tool, and a customer
can send without leaking a secret.

Every file passes through one `Redactor` before it is written; the report itself is redacted as
data before it is rendered (so HTML escaping cannot hide a secret from the redactor). The archive
is written to a temporary file with mode 0600 and renamed into place. Logs are read from their
end and never more than a few MB, however large they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diagnose import __version__
from diagnose.context import Options
from diagnose.dockerconfig import ConfigError, config_dir, load_config
from diagnose.dockerhost import tail
from diagnose.models import CheckResult, Report
from diagnose.secrets import Redactor

FILE_LIMIT = 1024 * 1024
LOG_LIMIT = 4 * 1024 * 1024
COMMAND_TIMEOUT_S = 10.0
PROXY_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
)
DAEMON_LOGS = ("var/log/docker.log", "var/log/upstart/docker.log", "var/log/messages")

README = """registry-diagnose support bundle
================================

report.md / report.html   what was checked, what is wrong, what to do (start here)
report.json               the same, machine-readable (schema registry-diagnose/report/v1),
                          with every check's evidence
host/                     facts about the machine: OS, docker daemon settings, docker client
                          config (secrets removed), DNS settings, proxies
logs/                     the end of the docker daemon's log
redactions.json           what was removed before writing, by kind and count (never values)
manifest.json             every file with its size and sha256

Secrets (passwords, tokens, Authorization headers, private keys, connection strings, URL
user-info) were removed from every file before it was written.
"""


class BundleError(Exception):
    """The bundle cannot be written; one line."""


def _read(path: Path, limit: int = FILE_LIMIT) -> str | None:
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _which(name: str, options: Options) -> str | None:
    return shutil.which(name, path=options.environ.get("PATH", os.defpath))


def _command(args: list[str], env: Mapping[str, str]) -> str:
    try:
        p = subprocess.run(
            args, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False, env=dict(env)
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run {args[0]}: {type(exc).__name__}\n"
    out = p.stdout[:FILE_LIMIT].decode("utf-8", "replace")
    err = p.stderr[:FILE_LIMIT].decode("utf-8", "replace")
    return out + (f"\n[stderr, exit {p.returncode}]\n{err}" if p.returncode or err else "")


def host_files(options: Options, report: Report) -> dict[str, str]:
    """Host facts as text files (not yet redacted)."""
    root = options.host_root
    live = root.resolve() == Path("/")
    files: dict[str, str] = {}
    os_release = _read(root / "etc/os-release") or _read(root / "usr/lib/os-release")
    if os_release is not None:
        files["host/os-release"] = os_release
    system: dict[str, Any] = {
        "tool": {"name": "registry-diagnose", "version": __version__},
        "python": platform.python_version(),
        "host_root": str(root),
        "collected_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if live:
        u = platform.uname()
        system.update(kernel=u.release, machine=u.machine, system=u.system, node=u.node)
    files["host/system.json"] = json.dumps(system, indent=2)
    for rel, name in (
        ("etc/docker/daemon.json", "host/daemon.json"),
        ("etc/sysconfig/docker", "host/sysconfig-docker"),
        ("etc/resolv.conf", "host/resolv.conf"),
    ):
        text = _read(root / rel)
        if text is not None:
            files[name] = text
    files.update(_runtime_files(root, live, options.environ))
    hosts = _read(root / "etc/hosts")
    if hosts is not None:
        names = {r.host for r in report.registries}
        keep = [
            line
            for line in hosts.splitlines()
            if any(n in line.split("#")[0].split() for n in names)
        ]
        files["host/hosts-registry-lines.txt"] = "\n".join(keep) + "\n"
    cfg_path = config_dir(options.docker_config, options.environ) / "config.json"
    try:
        cfg = load_config(cfg_path)
        if cfg is not None:
            files["host/docker-config.json"] = json.dumps(cfg, indent=2)
    except ConfigError as exc:
        raw = _read(cfg_path)
        files["host/docker-config.json.invalid"] = f"{exc}\n\n{raw or ''}"
    proxies = [f"{k}={options.environ[k]}" for k in PROXY_VARS if k in options.environ]
    files["host/proxy-env.txt"] = "\n".join(proxies) + ("\n" if proxies else "(none set)\n")
    if live and _which("docker", options):
        files["host/docker-version.txt"] = _command(["docker", "version"], options.environ)
        files["host/docker-info.txt"] = _command(["docker", "info"], options.environ)
    log = _daemon_log(root, live and _which("journalctl", options) is not None, options.environ)
    if log is not None:
        files["logs/docker-daemon.log"] = log
    return files


def _runtime_files(root: Path, live: bool, environ: Mapping[str, str]) -> dict[str, str]:
    """The configuration podman, CRI-O and containerd pull by; auth files go in as JSON so the
    redactor removes their secrets by key."""
    from diagnose.containers import (
        CONTAINERD_CONFIG,
        SYSTEM_LOOKASIDE_D,
        SYSTEM_POLICY,
        SYSTEM_REGISTRIES_CONF,
        SYSTEM_REGISTRIES_D,
        hosts_directories,
        load_containerd_config,
        podman_auth_files,
        user_home,
    )

    out: dict[str, str] = {}
    wanted: list[tuple[Path, str]] = [
        (root / SYSTEM_REGISTRIES_CONF, "host/containers/registries.conf"),
        (root / SYSTEM_POLICY, "host/containers/policy.json"),
        (root / CONTAINERD_CONFIG, "host/containerd/config.toml"),
    ]
    for folder, dest, pattern in (
        (root / SYSTEM_REGISTRIES_D, "host/containers/registries.conf.d", "*.conf"),
        (root / SYSTEM_LOOKASIDE_D, "host/containers/registries.d", "*.yaml"),
    ):
        with contextlib.suppress(OSError):
            wanted += [(p, f"{dest}/{p.name}") for p in sorted(folder.glob(pattern))[:50]]
    for d in hosts_directories(root, load_containerd_config(root)):
        with contextlib.suppress(OSError):
            wanted += [
                (p, f"host/containerd/certs.d/{p.parent.name}/hosts.toml")
                for p in sorted(d.glob("*/hosts.toml"))[:50]
            ]
    home = user_home(root, dict(environ), live)
    for n, p in enumerate(podman_auth_files(home, dict(environ), root, live), 1):
        if p.name == "config.json":
            continue  # the docker config is written on its own
        wanted.append((p, f"host/containers/auth-{n}-{p.name}"))
    for path, dest in wanted:
        text = _read(path)
        if text is not None:
            out[dest] = text
    return out


def _daemon_log(root: Path, journal: bool, env: Mapping[str, str]) -> str | None:
    for rel in DAEMON_LOGS:
        path = root / rel
        if path.is_file():
            with contextlib.suppress(OSError):
                return tail(path, LOG_LIMIT).decode("utf-8", "replace")
    if journal:
        out = _command(["journalctl", "-u", "docker", "--no-pager", "-n", "5000"], env)
        return out[-LOG_LIMIT:]
    return None


def redact_report(report: Report, r: Redactor) -> Report:
    results = tuple(
        CheckResult(
            id=c.id,
            title=c.title,
            status=c.status,
            summary=r.text(c.summary),
            code=c.code,
            faq=c.faq,
            remediation=tuple(r.text(s) for s in c.remediation),
            evidence=r.data(dict(c.evidence)),
            duration_s=c.duration_s,
            registry=r.text(c.registry) if c.registry else None,
            started_s=c.started_s,
        )
        for c in report.results
    )
    registries = tuple(
        replace(
            g,
            given=r.text(g.given),
            host=r.text(g.host),
            host_given=r.text(g.host_given),
            notes=tuple(r.text(n) for n in g.notes),
        )
        for g in report.registries
    )
    return replace(
        report, results=results, registries=registries, notes=tuple(r.text(n) for n in report.notes)
    )


def build_files(report: Report, options: Options, redactor: Redactor) -> dict[str, bytes]:
    """Every file of the bundle, redacted, as bytes."""
    from diagnose.plugins import load_report
    from diagnose.render import RenderOptions

    safe = redact_report(report, redactor)
    out: dict[str, bytes] = {"README.txt": README.encode()}
    out["report.json"] = json.dumps(safe.to_dict(), indent=2, ensure_ascii=False).encode()
    for name, fmt in (("report.md", "markdown"), ("report.html", "html")):
        text = load_report(fmt).render(safe, RenderOptions())
        out[name] = redactor.text(text).encode()
    for name, text in host_files(options, report).items():
        if name.endswith(".json") and not name.endswith(".invalid"):
            try:
                text = json.dumps(redactor.data(json.loads(text)), indent=2)
            except ValueError:
                text = redactor.text(text)
        else:
            text = redactor.text(text)
        out[name] = text.encode()
    out["redactions.json"] = json.dumps(
        {"redacted": redactor.summary(), "hosts_redacted": redactor.redact_hosts}, indent=2
    ).encode()
    out["manifest.json"] = json.dumps(
        {
            "files": [
                {"path": k, "size": len(v), "sha256": hashlib.sha256(v).hexdigest()}
                for k, v in sorted(out.items())
            ]
        },
        indent=2,
    ).encode()
    return out


def write_bundle(
    report: Report,
    options: Options,
    output: Path | None,
    *,
    redact_hosts: bool = False,
    cwd: Path | None = None,
) -> tuple[Path, dict[str, int]]:
    """Write the archive atomically (0600); returns its path and the redaction counts."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = f"registry-diagnose-{stamp}"
    path = output or (cwd or Path.cwd()) / f"{folder}.tar.gz"
    if path.is_dir():
        path = path / f"{folder}.tar.gz"
    redactor = Redactor(redact_hosts=redact_hosts)
    files = build_files(report, options, redactor)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=".registry-diagnose-", suffix=".tmp", dir=str(path.parent)
        )
    except OSError as exc:
        raise BundleError(f"cannot write in {path.parent}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            now = time.time()
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size, info.mtime, info.mode = len(data), now, 0o600
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sys.platform != "win32":
        os.chmod(path, 0o600)
    return path, redactor.summary()
