"""Settings files for pipelines: `diagnose.toml`, or `[tool.registry-diagnose]` in
pyproject.toml. Keys are the long option names (diagnose.options makes them from the same
table as the flags); the command line wins over the file, and a value from either goes through
the same converter."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from diagnose.errors import UsageError
from diagnose.options import OptionError, from_table

MAX_BYTES = 1024 * 1024


class ConfigFileError(UsageError):
    """The settings file cannot be used; one line, naming the file and the key."""


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
    """Option name -> value as the file gives it (converted later, as command line values
    are), and which file it was (if any)."""
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
    try:
        return from_table(path, table), path
    except OptionError as exc:
        raise ConfigFileError(str(exc)) from None
