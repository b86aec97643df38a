"""Reading a docker host's own configuration, read-only: daemon.json, /etc/sysconfig/docker,
os-release, systemd proxy drop-ins, and the daemon's command line. Pure parsers (no network), so
every one of them can be fuzzed; each returns what it found and what was wrong, never raises on
bad input."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_FILE = 1024 * 1024

# daemon.json keys the checks read, and the JSON type each must have.
DAEMON_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "debug": bool,
    "insecure-registries": list,
    "registry-mirrors": list,
    "allow-nondistributable-artifacts": list,
    "proxies": dict,
    "log-driver": str,
    "log-level": str,
    "hosts": list,
    "data-root": str,
    "storage-driver": str,
    "live-restore": bool,
    "selinux-enabled": bool,
    "signature-verification": bool,
    "dns": list,
    "max-concurrent-downloads": int,
    "max-concurrent-uploads": int,
}
RED_HAT_IDS = {"rhel", "centos", "fedora", "rocky", "almalinux", "ol"}


def tail(path: Path, limit: int) -> bytes:
    """The last `limit` bytes of a file (a log), from a line start; never reads more."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        start = max(0, size - limit)
        fh.seek(start)
        data = fh.read(limit)
    if start > 0:
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else data
    return data


def read_text(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_FILE).decode("utf-8", "replace")
    except OSError:
        return None


@dataclass
class DaemonJson:
    path: Path
    exists: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # does not parse: "line L column C: message"
    type_errors: list[str] = field(default_factory=list)


def json_object(text: str) -> tuple[dict[str, Any], str | None]:
    """A JSON object from a host file, or ({}, "line L column C: why"); never raises."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"line {exc.lineno} column {exc.colno}: {exc.msg}"
    except RecursionError:
        return {}, "nested too deeply"
    if not isinstance(data, dict):
        return {}, "line 1 column 1: the top level must be a JSON object"
    return data, None


def parse_daemon_json(path: Path) -> DaemonJson:
    out = DaemonJson(path)
    text = read_text(path)
    if text is None:
        return out
    out.exists = True
    if not text.strip():
        return out
    data, out.error = json_object(text)
    if out.error:
        return out
    out.data = data
    for key, kind in DAEMON_JSON_TYPES.items():
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            want = {
                "list": "an array",
                "dict": "an object",
                "bool": "true or false",
                "str": "a string",
                "int": "a whole number",
            }.get(want, want)
            out.type_errors.append(f'"{key}" must be {want} (it is {_json_type(value)})')
    for key in ("insecure-registries", "registry-mirrors", "allow-nondistributable-artifacts"):
        value = data.get(key)
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            out.type_errors.append(f'"{key}" must hold only strings')
    return out


def _json_type(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }.get(type(v), "something else")


@dataclass
class Sysconfig:
    """/etc/sysconfig/docker as Red Hat's docker package reads it (a shell fragment)."""

    path: Path
    exists: bool = False
    variables: dict[str, str] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    options_line: str | None = None


def parse_sysconfig(path: Path) -> Sysconfig:
    out = Sysconfig(path)
    text = read_text(path)
    if text is None:
        return out
    out.exists = True
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].strip()
        name, eq, value = line.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            continue
        try:
            words = shlex.split(value, comments=True)
        except ValueError as exc:
            out.errors.append(f"line {number}: {exc}")
            continue
        value_text = " ".join(words)
        out.variables[name.strip()] = value_text
        if name.strip() == "OPTIONS":
            # the init script expands $OPTIONS unquoted: the shell splits it on white space
            out.options = value_text.split()
            out.options_line = line
    return out


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of --flag=value / --flag value / bare --flag (-> "true") in an argument list."""
    found = None
    for i, arg in enumerate(args):
        if arg == flag:
            nxt = args[i + 1] if i + 1 < len(args) else ""
            found = (
                nxt
                if nxt and not nxt.startswith("-") and nxt.lower() in ("true", "false")
                else "true"
            )
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


def flag_values(args: list[str], flag: str) -> list[str]:
    out = []
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            out.append(args[i + 1])
        elif arg.startswith(flag + "="):
            out.append(arg.split("=", 1)[1])
    return out


def os_release(root: Path) -> dict[str, str]:
    text = read_text(root / "etc/os-release") or read_text(root / "usr/lib/os-release") or ""
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, eq, value = line.partition("=")
        if eq and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name.strip()):
            try:
                words = shlex.split(value)
            except ValueError:
                words = [value.strip().strip('"')]
            out[name.strip()] = " ".join(words)
    return out


def is_red_hat(release: dict[str, str]) -> bool:
    ids = {release.get("ID", "").lower(), *release.get("ID_LIKE", "").lower().split()}
    return bool(ids & RED_HAT_IDS)


def systemd_proxy_env(root: Path) -> dict[str, str]:
    """Environment= proxy settings from docker.service drop-ins (later files win)."""
    out: dict[str, str] = {}
    for folder in ("etc/systemd/system/docker.service.d", "run/systemd/system/docker.service.d"):
        d = root / folder
        try:
            files = sorted(p for p in d.iterdir() if p.suffix == ".conf")
        except OSError:
            continue
        for conf in files:
            for line in (read_text(conf) or "").splitlines():
                line = line.strip()
                if not line.startswith("Environment="):
                    continue
                try:
                    words = shlex.split(line[len("Environment=") :])
                except ValueError:
                    continue
                for word in words:
                    name, eq, value = word.partition("=")
                    if eq and name.upper() in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
                        out[name.upper()] = value
    return out


def daemon_proxy_settings(
    root: Path, daemon_json: dict[str, Any], running: dict[str, str]
) -> dict[str, tuple[str, str]]:
    """The docker daemon's proxy variables, each with where it is set: the docker.service
    drop-ins, then daemon.json `proxies` (which win over the environment since docker 23),
    then what the running daemon reports (/info: what it really uses)."""
    out: dict[str, tuple[str, str]] = {}
    for name, value in systemd_proxy_env(root).items():
        if value:
            out[name] = (value, "the docker.service drop-in's Environment=")
    cfg = daemon_json.get("proxies")
    if isinstance(cfg, dict):
        for key, name in (
            ("http-proxy", "HTTP_PROXY"),
            ("https-proxy", "HTTPS_PROXY"),
            ("no-proxy", "NO_PROXY"),
        ):
            if isinstance(cfg.get(key), str) and cfg[key]:
                out[name] = (cfg[key], "`proxies` in /etc/docker/daemon.json")
    for name, value in running.items():
        # the daemon masks a proxy's user-info in /info ("xxxxx:xxxxx@"): the same proxy
        # keeps the configured value, credentials and all
        if value and (name not in out or _no_userinfo(out[name][0]) != _no_userinfo(value)):
            out[name] = (value, "the running daemon's environment, as docker info shows it")
    return out


def _no_userinfo(url: str) -> str:
    scheme, sep, rest = url.strip().partition("://")
    netloc, slash, path = (rest if sep else scheme).partition("/")
    bare = f"{netloc.rpartition('@')[2]}{slash}{path}".rstrip("/")
    return f"{scheme.lower()}://{bare}" if sep else bare


def docker_ca_files(root: Path, host: str, port: int) -> list[Path]:
    """The CA files docker adds to the system store for one registry (certs.d/HOST[:PORT])."""
    folder = host if port == 443 else f"{host}:{port}"
    d = root / "etc/docker/certs.d" / folder
    try:
        return sorted(p for p in d.glob("*.crt") if p.is_file())
    except OSError:
        return []


def no_proxy_covers(no_proxy: str, host: str, port: int) -> bool:
    """Go's NO_PROXY rules (as docker applies them): *, exact, .suffix, suffix, CIDR (for a
    literal address only), :port."""
    host = host.lower().strip("[]")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        want_port = None
        if re.fullmatch(r".+:\d+", entry) and not entry.count(":") > 1:
            entry, want_port = entry.rsplit(":", 1)[0], int(entry.rsplit(":", 1)[1])
        if want_port is not None and want_port != port:
            continue
        try:
            net = ipaddress.ip_network(entry.strip("[]"), strict=False)
            if ipaddress.ip_address(host) in net:
                return True
            continue
        except ValueError:
            pass
        # Go (httpproxy): "*.x" is ".x"; ".x" covers the names under x, not x itself; a bare
        # "x" covers x and the names under it
        entry = entry[1:] if entry.startswith("*.") else entry
        if entry.startswith("."):
            if host.endswith(entry):
                return True
        elif host == entry or host.endswith("." + entry):
            return True
    return False


def registry_listed(entries: list[str], login_server: str, addresses: list[str]) -> str | None:
    """Which entry of an insecure / allow list covers the registry, as docker matches: the
    host[:port] name exactly, or an address of it inside a CIDR."""
    for entry in entries:
        e = str(entry).strip().lower()
        if "://" in e:
            e = e.split("://", 1)[1]
        e = e.rstrip("/")
        if e == login_server.lower():
            return str(entry)
        if "/" in e:
            try:
                net = ipaddress.ip_network(e, strict=False)
            except ValueError:
                continue
            for a in addresses:
                try:
                    if ipaddress.ip_address(a) in net:
                        return str(entry)
                except ValueError:
                    continue
    return None
