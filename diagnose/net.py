"""Socket-level helpers shared by checks (they never import each other)."""

from __future__ import annotations

import errno
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diagnose.context import CheckContext


class ConnectError(Exception):
    """A TCP connection failed; `kind` is refused, reset, timeout, unreachable or error."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def classify(exc: BaseException) -> str:
    """refused, reset, timeout, unreachable or error: each points somewhere else."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno in (
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
        errno.EAFNOSUPPORT,
    ):
        return "unreachable"
    return "error"


def connect(address: str, port: int, timeout: float) -> tuple[socket.socket, float]:
    """An open TCP connection and how long the handshake took (ms)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    t0 = time.monotonic()
    try:
        sock.connect((address.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConnectError(classify(exc), f"{type(exc).__name__}: {exc}") from None
    return sock, (time.monotonic() - t0) * 1000


def registry_addresses(ctx: CheckContext) -> list[str]:
    """Where the run connects for this registry (the answers the dns check saw)."""
    reg = ctx.registry
    assert reg is not None
    return ctx.resolver.addresses(reg.host, reg.effective_port, ctx.budget(3.0))
