"""Settings files for pipelines: `diagnose.toml`, or `[tool.registry-diagnose]` in
pyproject.toml. Keys are the long option names; the command line wins over the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from diagnose.choices import FailOn, Need, Runtime

MAX_BYTES = 1024 * 1024


class ConfigFileError(ValueError):
    """The settings file cannot be used; one line, naming the file and the key."""


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TypeError("a non-empty string")
    return v


def _strings(v: Any) -> list[str]:
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return list(v)
    raise TypeError("a list of strings")


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError("a number")
    return float(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("a whole number")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("true or false")
    return v


def _duration(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise TypeError("a duration such as 90s or 10m")
    return str(v)


def _choice(kind: type[FailOn] | type[Need] | type[Runtime]) -> Any:
    def convert(v: Any) -> Any:
        try:
            return kind(v)
        except ValueError:
            raise TypeError(" or ".join(k.value for k in kind)) from None

    return convert


# file key -> (settings field, converter)
KEYS: dict[str, tuple[str, Any]] = {
    "registries": ("registries", _strings),
    "registry": ("registries", lambda v: [_text(v)]),
    "checks": ("checks", _strings),
    "skip": ("skip", _strings),
    "fail-on": ("fail_on", _choice(FailOn)),
    "timeout": ("timeout", _number),
    "tries": ("tries", _int),
    "host-root": ("host_root", lambda v: Path(_text(v))),
    "docker-config": ("docker_config", lambda v: Path(_text(v))),
    "ca-bundle": ("ca_bundle", lambda v: Path(_text(v))),
    "nameserver": ("nameserver", _text),
    "insecure": ("insecure", _bool),
    "repository": ("repository", _text),
    "username": ("username", _text),
    "require": ("require", _choice(Need)),
    "wait-for": ("wait_for", _choice(Need)),
    "propagation-timeout": ("propagation_timeout", _duration),
    "report": ("report", _strings),
    "docker-host": ("docker_host", _text),
    "throughput": ("throughput", _bool),
    "image": ("image", _text),
    "platform": ("platform", _text),
    "pull-secret": ("pull_secret", lambda v: Path(_text(v))),
    "image-credential-provider-config": (
        "image_credential_provider_config",
        lambda v: Path(_text(v)),
    ),
    "image-credential-provider-bin-dir": (
        "image_credential_provider_bin_dir",
        lambda v: Path(_text(v)),
    ),
    "runtime": ("runtime", lambda v: [_choice(Runtime)(x) for x in _strings(v)]),
    "streams": ("streams", _int),
    "throughput-seconds": ("throughput_seconds", _number),
    "slow-below": ("slow_below", _number),
}
FORBIDDEN = {"password", "token", "identity-token", "aad-token", "secret"}


def _parse(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()[: MAX_BYTES + 1]
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigFileError(f"{path} is larger than 1 MiB")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path} is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None


def _table(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        table = tool.get("registry-diagnose", {}) if isinstance(tool, dict) else {}
    else:
        table = data.get("registry-diagnose", data)
    if not isinstance(table, dict):
        raise ConfigFileError(f"{path}: [registry-diagnose] must be a table")
    return table


def load_settings(explicit: Path | None, cwd: Path) -> tuple[dict[str, Any], Path | None]:
    """Settings field -> value from the settings file, and which file it was (if any)."""
    if explicit is not None:
        path: Path | None = explicit
    elif (cwd / "diagnose.toml").is_file():
        path = cwd / "diagnose.toml"
    elif (cwd / "pyproject.toml").is_file():
        path = cwd / "pyproject.toml"
    else:
        return {}, None
    assert path is not None
    table = _table(path, _parse(path))
    if path.name == "pyproject.toml" and not table and explicit is None:
        return {}, None
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "modules":  # probe modules of `serve` and `watch`: diagnose.modules reads them
            continue
        if key in FORBIDDEN:
            raise ConfigFileError(
                f"{path}: {key!r} does not belong in a settings file; use "
                "REGISTRY_DIAGNOSE_PASSWORD or --password-stdin"
            )
        if key not in KEYS:
            raise ConfigFileError(
                f"{path}: unknown setting {key!r} (known: {', '.join(sorted(KEYS))})"
            )
        name, convert = KEYS[key]
        try:
            out[name] = convert(value)
        except TypeError as exc:
            raise ConfigFileError(f"{path}: {key!r} must be {exc}") from None
    return out, path
