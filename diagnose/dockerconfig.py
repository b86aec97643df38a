"""Reading the docker client configuration (config.json) the way docker finds it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_CONFIG_BYTES = 4 * 1024 * 1024


class ConfigError(ValueError):
    """config.json cannot be used; the message is one line and holds no secret."""


def config_dir(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """--docker-config, else $DOCKER_CONFIG, else ~/.docker: docker's own order."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    return Path(env.get("HOME") or Path.home()) / ".docker"


def load_config(path: Path) -> dict[str, Any] | None:
    """The parsed config, None when there is none; ConfigError when it is unusable."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg never contains the document's text, so no secret can leak through it
        raise ConfigError(f"{path} line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    return parsed


def registry_keys(config: Mapping[str, Any]) -> list[str]:
    """Registries the user has logged in to or set a credential helper for, in file order."""
    keys: list[str] = []
    for section in ("auths", "credHelpers"):
        value = config.get(section)
        if isinstance(value, dict):
            keys.extend(str(k) for k in value if str(k).strip())
    return list(dict.fromkeys(keys))


def load_pull_secret(path: Path) -> dict[str, Any]:
    """The docker config inside an image pull secret: a `kubernetes.io/dockerconfigjson` (or
    legacy `dockercfg`) Secret manifest in YAML or JSON, as `kubectl get secret -o yaml`
    prints it, or the bare `.dockerconfigjson` content. ConfigError names what is wrong."""
    import base64
    import binascii

    from diagnose.yamlish import YamlError, load_file

    try:
        doc = load_file(path, "pull secret", MAX_CONFIG_BYTES)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"pull secret {path}: expected a Secret manifest or a docker config")
    if "auths" in doc and "kind" not in doc:
        return doc
    if doc.get("kind") != "Secret":
        raise ConfigError(f"pull secret {path}: kind is {doc.get('kind')!r}, not 'Secret'")
    kind = str(doc.get("type") or "")
    field = {"kubernetes.io/dockerconfigjson": ".dockerconfigjson"}.get(kind, ".dockercfg")
    if kind not in ("kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"):
        raise ConfigError(
            f"pull secret {path}: type {kind!r} is not kubernetes.io/dockerconfigjson: the "
            "kubelet ignores it for image pulls"
        )
    raw: str | None = None
    string_data = doc.get("stringData")
    if isinstance(string_data, dict) and isinstance(string_data.get(field), str):
        raw = string_data[field]
    encoded = doc.get("data")
    if raw is None and isinstance(encoded, dict) and isinstance(encoded.get(field), str):
        try:
            raw = base64.b64decode(encoded[field], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ConfigError(
                f"pull secret {path}: data[{field!r}] is not base64 of UTF-8"
            ) from None
    if raw is None:
        raise ConfigError(f"pull secret {path}: it has no {field} in data or stringData")
    try:
        inner = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise ConfigError(f"pull secret {path}: {field} is not JSON") from None
    if not isinstance(inner, dict):
        raise ConfigError(f"pull secret {path}: {field} must be a JSON object")
    return inner if field == ".dockerconfigjson" else {"auths": inner}
