"""A token server for the tests: the Docker token specification (GET with basic auth), its
OAuth2 POST forms (password and refresh_token grants), and ACR's /oauth2/exchange. It signs RS256
JWTs with a key whose certificate the real registry trusts (rootcertbundle), so the registry
itself checks every token. Grants can change while a run is going, and the server can be told to
misbehave (401, 403, 500, slow, malformed)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ISSUER = "registry-diagnose-test-issuer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Signer:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    cert_file: Path

    @classmethod
    def create(cls, directory: Path) -> Signer:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token signer")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        path = directory / "token-signer.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, path)

    def jwt(self, claims: dict[str, Any]) -> str:
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(sig)}"

    def setup_token(self, repo: str, audience: str = "registry.test") -> str:
        """A pull and push token for repo, for the tests to put content in the registry."""
        now = int(time.time())
        return self.jwt(
            {
                "iss": ISSUER,
                "sub": "setup",
                "aud": audience,
                "exp": now + 600,
                "nbf": 0,
                "iat": now,
                "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}],
            }
        )


@dataclass
class TokenServer:
    signer: Signer
    service: str
    users: dict[str, str] = field(default_factory=dict)  # user -> password
    grants: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (user, repo)
    delayed: dict[tuple[str, str, str], float] = field(default_factory=dict)  # -> monotonic
    aad_tokens: dict[str, str] = field(default_factory=dict)  # aad token -> user
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    mode: str = "normal"  # normal, 401, 403, 500, slow, malformed, no-token, no-password-grant
    slow_s: float = 30.0
    port: int = 0
    host: str = "127.0.0.1"  # where serve() listens: the realm's host
    log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def realm(self) -> str:
        return f"https://{self.host}:{self.port}/token"

    def grant(self, user: str, repo: str, *actions: str, after_s: float | None = None) -> None:
        with self.lock:
            if after_s is None:
                self.grants.setdefault((user, repo), set()).update(actions)
            else:
                for a in actions:
                    self.delayed[(user, repo, a)] = time.monotonic() + after_s

    def revoke(self, user: str, repo: str) -> None:
        with self.lock:
            self.grants.pop((user, repo), None)

    def issue_refresh(self, user: str) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        with self.lock:
            self.refresh_tokens[token] = user
        return token

    def actions(self, user: str, repo: str, wanted: list[str]) -> list[str]:
        now = time.monotonic()
        with self.lock:
            have = set(self.grants.get((user, repo), set()))
            for (u, r, a), at in self.delayed.items():
                if u == user and r == repo and now >= at:
                    have.add(a)
        return [a for a in wanted if a in have or "*" in have]

    def access_token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            typ, name, wanted = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            if typ == "repository":
                access.append(
                    {"type": typ, "name": name, "actions": self.actions(user, name, wanted)}
                )
        now = int(time.time())
        return self.signer.jwt(
            {
                "iss": ISSUER,
                "sub": user,
                "aud": self.service,
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": str(uuid.uuid4()),
                "access": access,
            }
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ts: TokenServer

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode())

    def _misbehave(self) -> bool:
        mode = self.ts.mode
        if mode == "slow":
            time.sleep(self.ts.slow_s)
        if mode == "401":
            self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "nope"}]})
        elif mode == "403":
            self._json(403, {"errors": [{"code": "DENIED", "message": "forbidden"}]})
        elif mode == "500":
            self._send(500, b"internal error", "text/plain")
        elif mode == "malformed":
            self._send(200, b"<html>this is not json", "text/html")
        elif mode == "no-token":
            self._json(200, {"hello": "world"})
        else:
            return False
        return True

    def _basic_user(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return "anonymous" if not header else None
        try:
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.ts.users.get(user) == pw else None

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.ts.log.append({"method": "GET", "path": parts.path})
        if parts.path != "/token":
            self._json(404, {})
            return
        if self._misbehave():
            return
        q = parse_qs(parts.query)
        user = self._basic_user()
        if user is None:
            self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
            return
        token = self.ts.access_token(user, q.get("scope", []))
        self._json(200, {"token": token, "access_token": token, "expires_in": 300})

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self.ts.log.append(
            {"method": "POST", "path": parts.path, "grant_type": form.get("grant_type")}
        )
        if self._misbehave():
            return
        if parts.path == "/oauth2/exchange":
            user = self.ts.aad_tokens.get(form.get("access_token", ""))
            if form.get("grant_type") != "access_token" or user is None:
                self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad aad token"}]})
                return
            self._json(200, {"refresh_token": self.ts.issue_refresh(user)})
            return
        if parts.path != "/token":
            self._json(404, {})
            return
        grant = form.get("grant_type")
        scopes = form.get("scope", "").split() if form.get("scope") else []
        if grant == "password":
            if self.ts.mode == "no-password-grant":
                self._json(400, {"error": "unsupported_grant_type"})
                return
            user = form.get("username", "")
            if self.ts.users.get(user) != form.get("password"):
                self._json(401, {"error": "invalid_grant"})
                return
        elif grant == "refresh_token":
            user = self.ts.refresh_tokens.get(form.get("refresh_token", ""), "")
            if not user:
                self._json(401, {"error": "invalid_grant", "error_description": "unknown token"})
                return
        else:
            self._json(400, {"error": "unsupported_grant_type"})
            return
        answer: dict[str, Any] = {
            "access_token": self.ts.access_token(user, scopes),
            "expires_in": 300,
            "scope": " ".join(scopes),
        }
        if grant == "password" and form.get("access_type") == "offline":
            answer["refresh_token"] = self.ts.issue_refresh(user)
        self._json(200, answer)


@contextlib.contextmanager
def serve(ts: TokenServer, cert: Path, key: Path) -> Iterator[TokenServer]:
    handler = type("H", (_Handler,), {"ts": ts})
    httpd = http.server.ThreadingHTTPServer((ts.host, ts.port), handler)
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    ts.port = httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield ts
    finally:
        httpd.shutdown()
        httpd.server_close()


def token_auth_config(realm: str, service: str, signer_file: Path) -> str:
    return f"""auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {ISSUER}
    rootcertbundle: {signer_file}
"""
