"""The Docker Engine API over its socket (unix:// or tcp://), read-only GETs only."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlsplit

DEFAULT_HOST = "unix:///var/run/docker.sock"
BODY_LIMIT = 4 * 1024 * 1024


class EngineError(Exception):
    """kind: missing, permission, refused, timeout, protocol, unsupported."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def engine_get(docker_host: str, path: str, timeout: float) -> tuple[int, Any]:
    """GET path from the daemon at docker_host; (status, parsed JSON or text)."""
    url = urlsplit(docker_host)
    conn: http.client.HTTPConnection
    if url.scheme == "unix":
        conn = _UnixConnection(url.path or "/var/run/docker.sock", timeout)
    elif url.scheme in ("tcp", "http"):
        conn = http.client.HTTPConnection(
            url.hostname or "localhost", url.port or 2375, timeout=timeout
        )
    else:
        raise EngineError("unsupported", f"DOCKER_HOST scheme {url.scheme!r} is not supported")
    try:
        conn.request("GET", path, headers={"Host": "docker", "User-Agent": "registry-diagnose"})
        resp = conn.getresponse()
        body = resp.read(BODY_LIMIT)
    except FileNotFoundError:
        raise EngineError("missing", f"no socket at {docker_host}") from None
    except PermissionError:
        raise EngineError("permission", f"permission denied on {docker_host}") from None
    except ConnectionRefusedError:
        raise EngineError("refused", f"nothing answers on {docker_host}") from None
    except TimeoutError:
        raise EngineError("timeout", f"{docker_host} did not answer in {timeout:.0f}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise EngineError("protocol", f"{docker_host}: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    text = body.decode("utf-8", "replace")
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text
