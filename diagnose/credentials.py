"""Finding the credential docker would use for a registry, from the same places in the same order.

Order: what the user gave this run (--username with a password, an Entra access token, an ACR
identity token), then the docker config: `credHelpers[registry]`, else `credsStore`, else
`auths[registry]` (base64 `auth` or `identitytoken`). Anonymous when there is none.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from diagnose.dockerconfig import ConfigError, load_config, load_pull_secret
from diagnose.errors import UsageError
from diagnose.secrets import Secret, register, scrub

HELPER_TIMEOUT_S = 10.0
TOKEN_USERNAME = "<token>"  # a helper's way of saying "Secret is an identity token"
ACR_TOKEN_USER = "00000000-0000-0000-0000-000000000000"


# the remedy for a stored credential that no longer works, worded once
RELOGIN = (
    "Log out and in again so docker stores a fresh credential: `docker logout {s}` then "
    "`docker login {s}`."
)


class CredentialError(Exception):
    """A credential source is there but unusable; `kind` names why (never the secret)."""

    def __init__(self, kind: str, message: str, **evidence: Any) -> None:
        super().__init__(scrub(message))
        self.kind = kind
        self.evidence = evidence


@dataclass(frozen=True)
class UserInput:
    """Credentials given to this run itself."""

    username: str | None = None
    password: Secret | None = None
    aad_token: Secret | None = None
    identity_token: Secret | None = None


@dataclass(frozen=True)
class Credential:
    """What will be presented to the registry, and where it came from."""

    # argument, identity-token, aad-token, credHelpers, credsStore, auths or anonymous
    source: str
    kind: str  # password, identity-token, aad-token, none
    username: str | None = None
    secret: Secret | None = None
    config_key: str | None = None
    helper: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def anonymous(self) -> bool:
        return self.kind == "none"

    def describe(self) -> dict[str, Any]:
        """Evidence about the credential: everything but the secret."""
        return {
            "source": self.source,
            "kind": self.kind,
            "username": self.username if self.kind == "password" else None,
            "config_key": self.config_key,
            "helper": self.helper,
            "notes": list(self.notes),
        }


def hostname_of_key(key: str) -> str:
    """docker's ConvertToHostname: drop the scheme and any path, keep host[:port]."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0]


def match_key(keys: list[str], login_server: str) -> tuple[str | None, list[str]]:
    """The config key docker would use for login_server, and near misses (other case)."""
    exact = [k for k in keys if hostname_of_key(k) == login_server]
    if exact:
        plain = [k for k in exact if k == login_server]
        return (plain or exact)[0], []
    near = [k for k in keys if hostname_of_key(k).lower() == login_server.lower()]
    return None, near


def run_helper(
    helper: str, server: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`docker-credential-<helper> get`, fed the server on stdin, as docker calls it."""
    name = f"docker-credential-{helper}"
    env = dict(os.environ if environ is None else environ)
    path = shutil.which(name, path=env.get("PATH"))
    if path is None:
        raise CredentialError("helper-missing", f"{name} is not on PATH", helper=helper)
    try:
        proc = subprocess.run(
            [path, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CredentialError(
            "helper-timeout", f"{name} did not answer within {HELPER_TIMEOUT_S:g}s", helper=helper
        ) from None
    except OSError as exc:
        raise CredentialError(
            "helper-failed", f"{name} cannot run: {exc.strerror}", helper=helper
        ) from None
    if proc.returncode != 0:
        said = scrub(
            proc.stdout.decode("utf-8", "replace").strip()
            or proc.stderr.decode("utf-8", "replace").strip()
        )[:200]
        kind = "helper-not-found" if "not found" in said.lower() else "helper-failed"
        raise CredentialError(
            kind, f"{name} get failed (exit {proc.returncode}): {said}", helper=helper
        )
    try:
        data = json.loads(proc.stdout.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not an object")
        username, secret = str(data.get("Username", "")), str(data.get("Secret", ""))
    except (ValueError, UnicodeDecodeError):
        raise CredentialError(
            "helper-failed",
            f"{name} get printed something that is not its JSON answer",
            helper=helper,
        ) from None
    register(secret)
    return {"Username": username, "Secret": secret}


def _decode_auth(value: str, key: str) -> tuple[str, Secret]:
    try:
        raw = base64.b64decode(value.strip(), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CredentialError(
            "config-auth", f"the auth value for {key} is not base64 of user:password"
        ) from None
    register(value)
    user, sep, password = raw.partition(":")
    if not sep or not user:
        raise CredentialError("config-auth", f"the auth value for {key} is not user:password")
    return user, Secret(password)


def _from_helper(
    helper: str, server: str, source: str, environ: Mapping[str, str] | None, notes: list[str]
) -> Credential:
    try:
        answer = run_helper(helper, server, environ)
    except CredentialError as exc:
        if exc.kind != "helper-not-found":
            raise
        return Credential(
            source,
            "none",
            helper=helper,
            notes=(*notes, f"docker-credential-{helper} has no login for {server}"),
        )
    user, secret = answer["Username"], answer["Secret"]
    if not secret:
        return Credential(
            source,
            "none",
            helper=helper,
            notes=(*notes, "the helper has no credential for this registry"),
        )
    if user == TOKEN_USERNAME:
        return Credential(
            source, "identity-token", None, Secret(secret), helper=helper, notes=tuple(notes)
        )
    return Credential(source, "password", user, Secret(secret), helper=helper, notes=tuple(notes))


def find_credential(
    login_server: str,
    given: UserInput,
    config_dir: Path,
    environ: Mapping[str, str] | None = None,
    pull_secret: Path | None = None,
) -> Credential:
    """The credential docker would present for login_server (raises CredentialError); with an
    image pull secret, the one the kubelet would take from it instead."""
    if pull_secret is not None and not (given.username or given.identity_token or given.aad_token):
        cred = _from_config(login_server, pull_secret, environ, pull_secret=True)
        source = "pull-secret" if cred.source == "auths" else cred.source
        return replace(
            cred, source=source, notes=(*cred.notes, f"from the pull secret {pull_secret}")
        )
    if given.aad_token:
        return Credential("aad-token", "aad-token", None, given.aad_token)
    if given.identity_token:
        return Credential("identity-token", "identity-token", None, given.identity_token)
    if given.username and given.password:
        return Credential("argument", "password", given.username, given.password)
    if given.username and not given.password:
        raise CredentialError(
            "no-password",
            "--username was given without a password "
            "(--password-stdin or REGISTRY_DIAGNOSE_PASSWORD)",
        )
    return _from_config(login_server, config_dir / "config.json", environ)


def _from_config(
    login_server: str, path: Path, environ: Mapping[str, str] | None, pull_secret: bool = False
) -> Credential:
    """The credential a docker config file (or a pull secret's) holds for login_server."""
    try:
        config = load_pull_secret(path) if pull_secret else load_config(path)
    except ConfigError as exc:
        raise CredentialError("config-invalid", str(exc), config=str(path)) from None
    if config is None:
        return Credential("anonymous", "none", notes=(f"no docker config at {path}",))
    notes: list[str] = []
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        key, near = match_key([str(k) for k in helpers], login_server)
        if key is not None:
            return _from_helper(str(helpers[key]), key, "credHelpers", environ, notes)
        if near:
            raise CredentialError(
                "case-mismatch",
                f"credHelpers has {near[0]!r}, which differs from {login_server!r} only by case",
                config_key=near[0],
            )
    auths = config.get("auths")
    auth_keys = [str(k) for k in auths] if isinstance(auths, dict) else []
    key, near = match_key(auth_keys, login_server)
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        server = key or login_server
        cred = _from_helper(store, server, "credsStore", environ, notes)
        if not cred.anonymous or key is None:
            if near and cred.anonymous:
                raise CredentialError(
                    "case-mismatch",
                    f"the login is stored under {near[0]!r}, "
                    f"which differs from {login_server!r} only by case",
                    config_key=near[0],
                )
            return cred
    if key is None:
        if near:
            raise CredentialError(
                "case-mismatch",
                f"auths has {near[0]!r}, which differs from {login_server!r} only by case",
                config_key=near[0],
            )
        return Credential("anonymous", "none", notes=(f"no login for {login_server} in {path}",))
    if key != login_server:
        notes.append(f"stored under {key!r}; docker matches it after removing the scheme and path")
    entry = auths[key] if isinstance(auths, dict) else None
    if not isinstance(entry, dict):
        raise CredentialError("config-auth", f"auths[{key!r}] is not an object", config_key=key)
    identity = entry.get("identitytoken")
    if isinstance(identity, str) and identity:
        user = None
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            user, _ = _decode_auth(entry["auth"], key)
        return Credential(
            "auths", "identity-token", user, Secret(identity), config_key=key, notes=tuple(notes)
        )
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        user, password = _decode_auth(auth, key)
        return Credential("auths", "password", user, password, config_key=key, notes=tuple(notes))
    if entry.get("username") and entry.get("password"):
        return Credential(
            "auths",
            "password",
            str(entry["username"]),
            Secret(str(entry["password"])),
            config_key=key,
            notes=tuple(notes),
        )
    return Credential(
        "anonymous",
        "none",
        config_key=key,
        notes=(
            *notes,
            f"auths[{key!r}] holds no credential (a credential store may have been removed)",
        ),
    )


def read_expose_token(path: Path) -> tuple[Secret, str | None]:
    """The token and login server from `az acr login --expose-token` output (JSON)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CredentialError(
            "token-file", f"{path} is not az acr login --expose-token output: {type(exc).__name__}"
        ) from None
    token = data.get("accessToken") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise CredentialError("token-file", f"{path} has no accessToken")
    server = data.get("loginServer")
    return Secret(token), str(server) if isinstance(server, str) else None


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, unverified (the registry verifies it); None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        pad = "=" * (-len(parts[1]) % 4)
        data = json.loads(base64.urlsafe_b64decode(parts[1] + pad).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return None
    return data if isinstance(data, dict) else None


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def user_input(
    username: str | None,
    password_stdin: bool,
    token_file: Path | None,
    environ: Mapping[str, str],
    stdin: IO[bytes] | None,
    stdin_tty: bool,
) -> UserInput:
    """The credentials given to this run itself (flags, standard input, environment): never
    echoed, never put in a report. Bad input raises a one-line UsageError."""
    password = None
    if password_stdin:
        if stdin is None or stdin_tty:
            raise UsageError("--password-stdin needs the password piped in")
        text = stdin.read(64 * 1024).decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            raise UsageError("--password-stdin read an empty password")
        password = Secret(text)
        if not username:
            raise UsageError("a password was given without --username")
    elif environ.get("REGISTRY_DIAGNOSE_PASSWORD"):
        password = Secret(environ["REGISTRY_DIAGNOSE_PASSWORD"])
    if username and password is None:
        raise UsageError(
            "--username needs a password: --password-stdin or REGISTRY_DIAGNOSE_PASSWORD"
        )
    if not username:
        password = None
    identity = None
    if token_file is not None:
        try:
            identity, _server = read_expose_token(token_file)
        except CredentialError as exc:
            raise UsageError(str(exc)) from None
    elif environ.get("REGISTRY_DIAGNOSE_IDENTITY_TOKEN"):
        identity = Secret(environ["REGISTRY_DIAGNOSE_IDENTITY_TOKEN"])
    aad = None
    if environ.get("REGISTRY_DIAGNOSE_AAD_TOKEN"):
        aad = Secret(environ["REGISTRY_DIAGNOSE_AAD_TOKEN"])
    return UserInput(username=username, password=password, aad_token=aad, identity_token=identity)
