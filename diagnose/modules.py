"""Probe modules for `diagnose serve` and `diagnose watch`, read from the settings file.

A module, as in blackbox_exporter, names a set of checks and the settings they run with:

    [modules.private]
    checks = ["access-token", "manifest"]
    timeout = 20
    platform = "linux/arm64"
    username = "ci-bot"
    password-file = "/run/secrets/registry-password"   # or password-env = "REGISTRY_PASSWORD"

The command line's run options are every module's defaults; a key of the module wins. Secrets
come from an environment variable or a file the module names, read again at each probe (a
rotated secret is picked up without a restart), never from the settings file itself and never
from a probe's URL. A module can only read: `require = "push"` is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diagnose import config
from diagnose.credentials import UserInput
from diagnose.errors import UsageError
from diagnose.options import BY_NAME, FORBIDDEN_KEYS, OptionError
from diagnose.probe import SecretSource
from diagnose.secrets import Secret

DEFAULT = "default"
# keys a module takes from the settings file's vocabulary (converted as the file's are)
MODULE_KEYS = (
    "checks",
    "skip",
    "require",
    "timeout",
    "tries",
    "platform",
    "insecure",
    "ca-bundle",
    "nameserver",
    "docker-config",
    "pull-secret",
    "username",
)
# key -> (which secret, where from)
SECRET_KEYS = {
    "password-env": ("password", "env"),
    "password-file": ("password", "file"),
    "identity-token-env": ("identity_token", "env"),
    "identity-token-file": ("identity_token", "file"),
    "aad-token-env": ("aad_token", "env"),
    "aad-token-file": ("aad_token", "file"),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_SECRET = 64 * 1024


class ModuleError(UsageError):
    """A module that cannot be used, or a secret that cannot be read; one line, no secret."""


@dataclass(frozen=True)
class Secrets(SecretSource):
    """A module's credentials: the user name, and where each secret is read from."""

    module: str
    username: str | None
    sources: tuple[tuple[str, str, str], ...]  # (secret, "env" or "file", variable or path)
    environ: Mapping[str, str] = field(default_factory=dict)

    def read(self) -> UserInput:
        found: dict[str, Secret] = {}
        for what, kind, where in self.sources:
            text = _env(where, self.environ) if kind == "env" else _file(where)
            if not text:
                raise ModuleError(f"module {self.module}: {kind} {where} holds an empty secret")
            found[what] = Secret(text)
        return UserInput(
            username=self.username,
            password=found.get("password"),
            aad_token=found.get("aad_token"),
            identity_token=found.get("identity_token"),
        )


def _env(name: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name)
    if value is None:
        raise ModuleError(f"environment variable {name} is not set")
    return value.strip("\r\n")


def _file(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SECRET + 1)
    except OSError as exc:
        raise ModuleError(f"cannot read the secret file {path}: {exc.strerror}") from None
    if len(data) > MAX_SECRET:
        raise ModuleError(f"the secret file {path} is larger than 64 KiB")
    try:
        return data.decode("utf-8").strip("\r\n")
    except UnicodeDecodeError:
        raise ModuleError(f"the secret file {path} is not UTF-8") from None


@dataclass(frozen=True)
class ModuleSpec:
    """A module as the settings file gives it: run-settings fields (the names the command
    line's options have) and, when it names any, where its secrets come from."""

    name: str
    settings: dict[str, Any]
    secrets: Secrets | None = None


def load_modules(
    explicit: Path | None, cwd: Path, environ: Mapping[str, str] | None = None
) -> tuple[list[ModuleSpec], Path | None]:
    """The modules of the settings file (`--config`, else ./diagnose.toml, else
    `[tool.registry-diagnose]` of ./pyproject.toml), and which file it was."""
    if explicit is not None:
        path: Path | None = explicit
    else:
        path = next(
            (p for p in (cwd / "diagnose.toml", cwd / "pyproject.toml") if p.is_file()), None
        )
    if path is None:
        return [], None
    try:
        table = config._table(path, config._parse(path))
    except config.ConfigFileError as exc:
        raise ModuleError(str(exc)) from None
    raw = table.get("modules", {})
    if not isinstance(raw, dict):
        raise ModuleError(f"{path}: [modules] must be a table of [modules.NAME] tables")
    env = os.environ if environ is None else environ
    specs = [parse_module(str(name), body, path, env) for name, body in raw.items()]
    return specs, path


def parse_module(
    name: str,
    body: Any,
    path: Path | str = "settings",
    environ: Mapping[str, str] | None = None,
) -> ModuleSpec:
    """One [modules.NAME] table, checked key by key."""
    where = f"{path}: module {name!r}"
    if not _NAME.match(name):
        raise ModuleError(f"{where}: a module name is letters, digits, '.', '_' or '-'")
    if not isinstance(body, dict):
        raise ModuleError(f"{where} must be a table")
    settings: dict[str, Any] = {}
    sources: list[tuple[str, str, str]] = []
    for key, value in body.items():
        if key in FORBIDDEN_KEYS:
            raise ModuleError(
                f"{where}: {key!r} does not belong in a settings file; name where it is read "
                f"from instead ({key}-env = VARIABLE or {key}-file = PATH)"
            )
        if key in SECRET_KEYS:
            what, kind = SECRET_KEYS[key]
            if not isinstance(value, str) or not value.strip():
                raise ModuleError(f"{where}: {key!r} must name a variable or a file")
            if kind == "env" and not _ENV.match(value):
                raise ModuleError(f"{where}: {key!r} is not an environment variable name")
            if any(s[0] == what for s in sources):
                raise ModuleError(f"{where}: the {what.replace('_', ' ')} is named twice")
            sources.append((what, kind, value))
            continue
        if key not in MODULE_KEYS:
            known = ", ".join(sorted([*MODULE_KEYS, *SECRET_KEYS]))
            raise ModuleError(f"{where}: unknown key {key!r} (known: {known})")
        spec = BY_NAME[key.replace("-", "_")]
        try:
            spec.convert(value)  # refused now, at start, not at the first scrape
        except OptionError as exc:
            raise ModuleError(f"{where}: {exc}") from None
        settings[spec.name] = value  # settled with the command line's values, the same way
    if str(settings.get("require", "pull")).strip().lower() != "pull":
        raise ModuleError(f"{where}: require = 'push' would write to the registry; a probe reads")
    username = settings.get("username")
    has_password = any(s[0] == "password" for s in sources)
    if has_password and not username:
        raise ModuleError(f"{where}: a password source needs a username")
    if username and not has_password:
        raise ModuleError(f"{where}: username needs password-env or password-file")
    env = dict(os.environ if environ is None else environ)
    secrets = Secrets(name, username, tuple(sources), env) if sources else None
    if secrets is not None:
        secrets.read()  # a missing variable or file is found at start, not at the first scrape
    return ModuleSpec(name, settings, secrets)
