"""TLS contexts that trust what a client trusts, made once per process.

Loading the system store into a context is the most expensive thing a run does on its own:
OpenSSL parses the whole CA bundle (some 140 certificates, about 25 ms of CPU) for every
context. A long-running exporter would pay that on every probe. So contexts are made once per
process and kept, keyed by everything their trust depends on (the CA files, their
modification times, SSL_CERT_FILE and SSL_CERT_DIR), and the system store is loaded from its
hashed folder when the host has one: OpenSSL then reads only the certificates a handshake
needs, when it needs them.

A kept context is shared between threads and runs, so nobody may change it. The ones handed to
urllib3 are kept apart ("http"): urllib3 turns their host name check off, the same way for
every session, because it matches host names itself.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

Role = Literal["handshake", "http"]

_LOCK = threading.Lock()
_KEPT: dict[tuple[Any, ...], ssl.SSLContext] = {}
_HASHED = re.compile(r"^[0-9a-f]{8}\.\d+$")
MAX_KEPT = 64


def _stamp(path: str | Path | None) -> tuple[str, int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


def _system_locations(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(cafile, capath) OpenSSL would use by default, SSL_CERT_FILE and SSL_CERT_DIR honoured
    as OpenSSL (and Go) honour them."""
    paths = ssl.get_default_verify_paths()
    cafile = environ.get(paths.openssl_cafile_env) or paths.cafile
    capath = environ.get(paths.openssl_capath_env) or paths.capath
    return cafile, capath


def _hashed(folder: str | None) -> bool:
    """Whether folder holds OpenSSL's hash links (then a lookup reads only what it needs)."""
    if not folder:
        return False
    try:
        with os.scandir(folder) as entries:
            return any(_HASHED.match(e.name) for e in entries)
    except OSError:
        return False


def _load_system(ctx: ssl.SSLContext, environ: Mapping[str, str]) -> None:
    cafile, capath = _system_locations(environ)
    explicit_file = bool(environ.get("SSL_CERT_FILE"))
    if capath and _hashed(capath) and not explicit_file:
        ctx.load_verify_locations(capath=capath)
        return
    if cafile and os.path.exists(cafile):
        ctx.load_verify_locations(cafile=cafile)
    if capath and os.path.isdir(capath):
        ctx.load_verify_locations(capath=capath)


def verifying_context(
    ca_files: Iterable[str | Path] = (),
    *,
    system: bool = True,
    verify: bool = True,
    role: Role = "handshake",
    environ: Mapping[str, str] | None = None,
) -> ssl.SSLContext:
    """A client context trusting the system store (unless system is False) and ca_files, with
    OpenSSL's verdicts brought close to Go's (see x509go.go_like); kept for the process.
    Unreadable CA files raise ssl.SSLError or OSError, as load_verify_locations does."""
    from diagnose.x509go import go_like

    env = os.environ if environ is None else environ
    files = tuple(str(f) for f in ca_files)
    key = (
        role,
        verify,
        system,
        tuple(_stamp(f) for f in files),
        env.get("SSL_CERT_FILE"),
        env.get("SSL_CERT_DIR"),
        _stamp(_system_locations(env)[0]) if system else None,
    )
    with _LOCK:
        kept = _KEPT.get(key)
    if kept is not None:
        return kept
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and host name checks
    if verify:
        if system:
            _load_system(ctx, env)
        for f in files:
            ctx.load_verify_locations(cafile=f)
        go_like(ctx)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with _LOCK:
        if len(_KEPT) >= MAX_KEPT:  # CA files that keep changing: start afresh
            _KEPT.clear()
        return _KEPT.setdefault(key, ctx)


def check_ca_file(path: Path) -> None:
    """Raise ValueError unless path is a PEM file with at least one certificate (without
    loading the system store: only the file is parsed)."""
    if not path.exists():
        raise ValueError("does not exist")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError):
        raise ValueError("holds no usable PEM certificate") from None
