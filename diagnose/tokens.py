"""Talking to a registry's token service: the Docker token specification, its OAuth2 forms,
and ACR's exchange of an Entra (AAD) access token for a registry refresh token.

Every call is made without following redirects and with the credential in the request only,
so no secret can travel to another host. Failures carry the HTTP status and the service's error
body with secrets scrubbed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from diagnose.challenge import Challenge
from diagnose.credentials import Credential
from diagnose.secrets import Secret, register, safe_url, scrub

if TYPE_CHECKING:
    from diagnose import http as web
    from diagnose.context import CheckContext

CLIENT_ID = "registry-diagnose"
BODY_LIMIT = 4096


class TokenError(Exception):
    """The token service said no, or said something unusable."""

    def __init__(
        self, kind: str, message: str, *, status: int | None = None, body: str = "", ms: float = 0.0
    ) -> None:
        super().__init__(scrub(message))
        self.kind = kind  # http, network, timeout, malformed, unsupported
        self.status = status
        self.body = scrub(body)[:500]
        self.ms = ms

    def evidence(self) -> dict[str, Any]:
        return {
            "error": self.kind,
            "status": self.status,
            "body": self.body,
            "ms": round(self.ms, 2),
        }


@dataclass
class Grant:
    """How later requests authenticate: a refresh token, basic credentials, or nothing."""

    mode: str  # refresh, basic, anonymous
    refresh_token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    # the access token the login itself returned, and for which scope: the same request as
    # docker's, and no second one for the same scope
    access_token: Secret | None = None
    access_scope: str | None = None
    access_expires_in: Any = None


def scope_for(repository: str | None, actions: tuple[str, ...], is_acr: bool) -> str | None:
    if repository:
        return f"repository:{repository}:{','.join(actions)}"
    return "registry:catalog:*" if is_acr else None


def _post(ctx: CheckContext, url: str, form: dict[str, str]) -> tuple[int, dict[str, Any], float]:
    return _call(ctx, "POST", url, data=form)


def _call(ctx: CheckContext, method: str, url: str, **kw: Any) -> tuple[int, dict[str, Any], float]:
    from diagnose import http as web
    from diagnose import wire

    session = ctx.http(verify=not ctx.options.insecure)
    t0 = time.monotonic()
    # ends at the check's deadline, however slowly the token service answers
    guard = wire.until(ctx.deadline - 0.5)
    try:
        with guard as g:
            resp = session.request(
                method,
                url,
                allow_redirects=False,
                stream=True,
                timeout=(ctx.budget(5.0), ctx.budget(10.0)),
                proxies=ctx.proxies(url),
                **kw,
            )
            raw = _read(resp)
    except web.Timeout:
        raise TokenError(
            "timeout", f"{method} {safe_url(url)} timed out", ms=(time.monotonic() - t0) * 1000
        ) from None
    except web.RequestException as exc:
        said = wire.how(exc, url, role="token", fired=g.fired).rsplit(", on attempt", 1)[0]
        raise TokenError(
            "timeout" if g.fired else "network",
            f"{method} {safe_url(url)}: {said}",
            ms=(time.monotonic() - t0) * 1000,
        ) from None
    ms = (time.monotonic() - t0) * 1000
    text = raw.decode("utf-8", "replace")
    if resp.status_code != 200:
        raise TokenError(
            "http",
            f"{method} {safe_url(url)} answered HTTP {resp.status_code}",
            status=resp.status_code,
            body=text,
            ms=ms,
        )
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError:
        raise TokenError(
            "malformed",
            f"{method} {safe_url(url)} answered 200 but not with a JSON object",
            status=200,
            body=text,
            ms=ms,
        ) from None
    for key in ("token", "access_token", "refresh_token"):
        if isinstance(data.get(key), str):
            register(data[key])
    return resp.status_code, data, ms


def _read(resp: web.Response) -> bytes:
    try:
        data = b""
        for chunk in resp.iter_content(BODY_LIMIT):
            data += chunk
            if len(data) >= 64 * BODY_LIMIT:
                break
        return data
    finally:
        resp.close()


def _token(data: dict[str, Any], *names: str) -> Secret:
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and value:
            return Secret(value)
    raise TokenError(
        "malformed",
        f"the answer has no {' or '.join(names)}",
        status=200,
        body=", ".join(sorted(str(k) for k in data)),
    )


def exchange_url(challenge: Challenge) -> str:
    realm = urlsplit(challenge.realm or "")
    return urlunsplit((realm.scheme, realm.netloc, "/oauth2/exchange", "", ""))


def obtain_grant(
    ctx: CheckContext, challenge: Challenge, cred: Credential, scope: str | None = None
) -> Grant:
    """Step 2: turn the credential into what the token service will take for access tokens.

    With a password the scope is asked for in the same request, as docker does: the answer
    carries the access token too, and step 3 then needs no request of its own."""
    realm, service = challenge.realm or "", challenge.service or ""
    if cred.anonymous:
        return Grant("anonymous", evidence={"method": "anonymous"})
    assert cred.secret is not None
    if cred.kind == "identity-token":
        return Grant(
            "refresh",
            refresh_token=cred.secret,
            evidence={"method": "identity token used as the refresh token"},
        )
    if cred.kind == "aad-token":
        url = exchange_url(challenge)
        _, data, ms = _post(
            ctx,
            url,
            {
                "grant_type": "access_token",
                "service": service,
                "access_token": cred.secret.reveal(),
            },
        )
        return Grant(
            "refresh",
            refresh_token=_token(data, "refresh_token"),
            evidence={
                "method": "POST /oauth2/exchange (Entra access token)",
                "url": safe_url(url),
                "ms": round(ms, 2),
            },
        )
    user, password = cred.username or "", cred.secret
    try:
        _, data, ms = _post(
            ctx,
            realm,
            {
                "grant_type": "password",
                "username": user,
                "password": password.reveal(),
                "service": service,
                "client_id": CLIENT_ID,
                "access_type": "offline",
                **({"scope": scope} if scope else {}),
            },
        )
        refresh = data.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            access = data.get("access_token")
            return Grant(
                "refresh",
                refresh_token=Secret(refresh),
                username=user,
                evidence={
                    "method": "OAuth2 password grant",
                    "url": safe_url(realm),
                    "ms": round(ms, 2),
                },
                access_token=Secret(access) if isinstance(access, str) and access else None,
                access_scope=scope,
                access_expires_in=data.get("expires_in"),
            )
    except TokenError as exc:
        if exc.kind != "http" or exc.status not in (400, 404, 405):
            raise
    # the plain Docker token flow: GET the realm with basic auth
    params = {"service": service, "client_id": CLIENT_ID}
    if scope:
        params["scope"] = scope
    _, data, ms = _call(ctx, "GET", realm, params=params, auth=(user, password.reveal()))
    token = _token(data, "token", "access_token")
    return Grant(
        "basic",
        username=user,
        password=password,
        evidence={
            "method": "GET realm with basic auth",
            "url": safe_url(realm),
            "ms": round(ms, 2),
        },
        access_token=token,
        access_scope=scope,
        access_expires_in=data.get("expires_in"),
    )


def obtain_access_token(
    ctx: CheckContext, challenge: Challenge, grant: Grant, scope: str | None
) -> tuple[Secret, dict[str, Any]]:
    """Step 3: an access token for scope, the way docker asks for one (none asked for when the
    login already returned one for this scope)."""
    realm, service = challenge.realm or "", challenge.service or ""
    if grant.access_token is not None and grant.access_scope == scope:
        return grant.access_token, {
            "method": grant.evidence.get("method", "login"),
            "same_request_as_login": True,
            "scope": scope,
            "ms": grant.evidence.get("ms"),
            "expires_in": grant.access_expires_in,
        }
    if grant.mode == "refresh":
        assert grant.refresh_token is not None
        form = {
            "grant_type": "refresh_token",
            "refresh_token": grant.refresh_token.reveal(),
            "service": service,
            "client_id": CLIENT_ID,
        }
        if scope:
            form["scope"] = scope
        _, data, ms = _post(ctx, realm, form)
        method = "OAuth2 refresh_token grant"
    else:
        params = {"service": service, "client_id": CLIENT_ID}
        if scope:
            params["scope"] = scope
        auth = None
        if grant.mode == "basic" and grant.password is not None:
            auth = (grant.username or "", grant.password.reveal())
        _, data, ms = _call(ctx, "GET", realm, params=params, auth=auth)
        method = "GET realm" + (" with basic auth" if auth else " anonymously")
    token = _token(data, "access_token", "token")
    return token, {
        "method": method,
        "scope": scope,
        "ms": round(ms, 2),
        "expires_in": data.get("expires_in"),
    }


def granted_actions(claims: dict[str, Any], repository: str) -> set[str]:
    """The actions a registry token grants on a repository (Docker token `access` claim)."""
    out: set[str] = set()
    access = claims.get("access")
    if not isinstance(access, list):
        return out
    for item in access:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "repository" and item.get("name") == repository:
            actions = item.get("actions")
            if isinstance(actions, list):
                out |= {str(a) for a in actions}
    if "*" in out:
        out |= {"pull", "push", "delete"}
    return out
