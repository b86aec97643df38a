"""The token flow, one check per step, so the report shows where it breaks: (credentials, in
checks/credentials.py) -> auth-challenge -> refresh-token -> access-token -> scope ->
authorized-request."""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from diagnose.certadvice import CERTIFICATE_FAQ
from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext, Options
from diagnose.credentials import RELOGIN, Credential, CredentialError, jwt_claims
from diagnose.facts import ACCESS_TOKEN, API_ANSWER, CHALLENGE, GRANT, SCHEME, TAGS
from diagnose.findings import ANSWER_CODES, ANSWER_FAQ, REQUEST_CODES
from diagnose.models import Finding, Status, passed, problem, skipped
from diagnose.resolve import ResolveError

if TYPE_CHECKING:
    from diagnose.challenge import Challenge
    from diagnose.tokens import TokenError


def _challenge(ctx: CheckContext) -> Challenge | None:
    ctx.result("auth-challenge")
    return ctx.fact(CHALLENGE)


class AuthChallengeCheck(Check):
    id = "auth-challenge"
    title = "Authentication challenge"
    order = 80
    depends_on = ("api",)
    starts_after = ("dns",)
    timeout_s = 10.0
    faq_keys = (
        "network-connectivity",
        "registry-api-v2",
        "tls12",
        "proxy",
        "proxy-token-service",
        "proxy-tls-inspection",
        "proxy-https-scheme",
        "proxy-tls-scheme",
        *CERTIFICATE_FAQ,
    )
    codes = (
        Code.CONNECTIVITY_REALM_ERROR,
        Code.PROXY_TOKEN_REFUSED,
        Code.PROXY_TLS_INSPECTION,
        Code.PROXY_SCHEME_MISMATCH,
    )

    def run(self, ctx: CheckContext) -> Finding:

        reg = ctx.registry
        assert reg is not None
        ctx.result("api")
        answer = ctx.fact(API_ANSWER)
        if answer is None:
            return skipped("the api check had no answer")
        if answer.status == 200:
            return skipped("the registry answers /v2/ without credentials: no challenge")
        ch = answer.challenge
        if ch is None:
            return skipped("no challenge to follow")
        ctx.put(CHALLENGE, ch)
        if ch.scheme == "basic":
            return passed(
                "Basic authentication: the credential goes with every request", scheme="basic"
            )
        from urllib.parse import urlsplit

        realm = urlsplit(ch.realm or "")
        host = (realm.hostname or "").lower()
        port = realm.port or (443 if realm.scheme == "https" else 80)
        evidence: dict[str, Any] = {
            "scheme": "bearer",
            "realm": ch.realm,
            "service": ch.service,
            "realm_host": host,
        }
        if host == reg.host and port == reg.effective_port:
            return passed(
                f"Bearer tokens from {ch.realm} (the registry itself), service {ch.service}",
                **evidence,
            )
        try:
            addresses = ctx.resolver.addresses(host, port, ctx.budget(4.0))
        except ResolveError as exc:
            evidence["error"] = exc.kind
            return problem(
                Status.FAIL,
                f"the token service host {host} does not resolve: {exc}",
                code=Code.CONNECTIVITY_REALM_ERROR,
                faq=["network-connectivity"],
                remediation=[
                    f"This host must resolve and reach {host} as well as the registry: "
                    "check DNS, and allow HTTPS to it through firewalls and proxies."
                ],
                evidence=evidence,
            )
        evidence["realm_addresses"] = addresses
        from diagnose.http import warm

        # the connection the token requests will use, opened once, kept in the run's pool
        session = ctx.http(verify=not ctx.options.insecure)
        t0 = time.monotonic()
        try:
            version = warm(session, ch.realm or "", ctx.budget(5.0), ctx.proxies(ch.realm or ""))
        except Exception as exc:
            kind = _connect_kind(exc)
            evidence["error"] = kind
            through = _through_proxy(ctx, ch.realm or "", host, port, evidence)
            if through is not None:
                return through
            if kind == "tls":
                return _realm_tls(ctx, host, port, exc, evidence)
            return problem(
                Status.FAIL,
                f"cannot connect to the token service {host}:{port} ({kind})",
                code=Code.CONNECTIVITY_REALM_ERROR,
                faq=["network-connectivity"],
                remediation=[f"Allow HTTPS from this host to {host}:{port}."],
                evidence=evidence,
            )
        evidence["connect_ms"] = round((time.monotonic() - t0) * 1000, 2)
        if version:
            evidence["realm_tls"] = version
        return passed(
            f"Bearer tokens from {ch.realm} (reachable, {addresses[0]}), service {ch.service}",
            **evidence,
        )


def _through_proxy(
    ctx: CheckContext, realm: str, host: str, port: int, evidence: dict[str, Any]
) -> Finding | None:
    """The token service failed through the environment's proxy: try the proxy for it as a
    Go client would, and say what the proxy did (refused it, reset it, re-signed it)."""
    from diagnose.proxy import environment_role, judge_tunnel, proxy_for
    from diagnose.proxyprobe import ProxyUrl, dialer, seen_directly, try_proxy

    setting = proxy_for(realm, ctx.environ)
    if setting is None:
        return None
    proxy = ProxyUrl.parse(ctx.environ.get(setting.source.split()[-1], ""))
    if proxy is None:
        return None
    probe = try_proxy(
        proxy, host, port, trust=ctx.ssl_context(), dial=dialer(ctx), budget=ctx.budget
    )
    direct = seen_directly(ctx, probe, host, port)
    role = environment_role(setting)
    finding = judge_tunnel(probe, direct, role, host, port, token=True, evidence=evidence)
    return None if finding.status is Status.PASS else finding


def _realm_tls(
    ctx: CheckContext, host: str, port: int, exc: BaseException, evidence: dict[str, Any]
) -> Finding:
    """A token service whose TLS failed: in Go's words when its certificate is the cause
    (asked directly, so only when no proxy stands between)."""
    from diagnose.certadvice import advise
    from diagnose.endpoint import certificate_verdict

    realm = f"https://{host}:{port}/"
    verdict = None if ctx.proxies(realm) else certificate_verdict(ctx, host, port)
    if verdict is None or verdict.ok:
        return problem(
            Status.FAIL,
            f"TLS with the token service {host} failed: {_first_line(exc)}",
            code=Code.CONNECTIVITY_REALM_ERROR,
            faq=["network-connectivity", "tls12"],
            remediation=[
                "Check the token service's certificate and that this host "
                "trusts its issuer (--ca-bundle to test a CA file)."
            ],
            evidence=evidence,
        )
    advice = advise(verdict, host, port)
    evidence["verify"] = verdict.evidence()
    return problem(
        Status.FAIL,
        f"the token service {host} is not trusted: {advice.why}",
        code=Code.CONNECTIVITY_REALM_ERROR,
        faq=[*advice.faq, "tls12"],
        remediation=[
            f"Every client asks {host} for its tokens after the registry: its certificate "
            "must be acceptable to them as well as the registry's.",
            *advice.steps,
        ],
        evidence=evidence,
    )


def _connect_kind(exc: BaseException) -> str:
    """refused, timeout, unreachable, tls or error, for an exception of connecting."""
    import ssl

    text = f"{type(exc).__name__} {exc}".lower()
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, ssl.SSLError | ssl.CertificateError):
            return "tls"
        chain = chain.__cause__ or chain.__context__
    if "ssl" in text or "certificate" in text:
        return "tls"
    if "refused" in text:
        return "refused"
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "unreachable" in text or "no route" in text:
        return "unreachable"
    return "error"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _token_failure(
    step: str, code: Code, exc: TokenError, cred: Credential | None, server: str
) -> Finding:
    evidence = exc.evidence()
    status = exc.status
    stale = (
        cred is not None
        and cred.kind == "identity-token"
        and cred.source in ("auths", "credHelpers", "credsStore")
    )
    if exc.kind == "timeout":
        faq, steps = (
            ["client-timeout", "network-connectivity"],
            ["The token service did not answer in time; try again, and check the path to it."],
        )
    elif status == 401 and stale:
        evidence["stale_identity_token"] = True
        faq, steps = (
            ["permission-propagation", "admin-credentials"],
            [
                "The identity token docker stored is no longer accepted (stale or revoked).",
                RELOGIN.format(s=server),
            ],
        )
    elif status == 401:
        faq, steps = (
            ["admin-credentials", "pull-push-roles"],
            [
                "The token service rejected the credential: check the user name and password (for "
                "a service principal, whether its secret expired).",
                RELOGIN.format(s=server),
            ],
        )
    elif status == 403:
        faq, steps = (
            ["pull-push-roles", "permission-propagation"],
            [
                "The identity is known but not allowed: give it a role on the registry (AcrPull / "
                "AcrPush), then wait a few minutes and log in again."
            ],
        )
    elif status is not None and status >= 500:
        faq, steps = (
            ["client-timeout", "network-connectivity"],
            [
                "The token service is failing (HTTP 5xx): try again later; for ACR check the Azure "
                "status page."
            ],
        )
    else:
        faq, steps = (
            ["registry-api-v2"],
            [
                "The token service answered in a way this tool (and docker) cannot use; compare "
                "with `curl -v` against the realm."
            ],
        )
    said = f" HTTP {status}" if status else ""
    return problem(
        Status.FAIL,
        f"{step} failed:{said} {exc}",
        code=code,
        faq=faq,
        remediation=steps,
        evidence=evidence,
    )


class RefreshTokenCheck(Check):
    id = "refresh-token"
    title = "Refresh token (credential exchange)"
    order = 90
    depends_on = ("auth-challenge", "credentials")
    starts_after = ("dns",)
    timeout_s = 15.0
    faq_keys = (
        "admin-credentials",
        "pull-push-roles",
        "permission-propagation",
        "client-timeout",
        "network-connectivity",
        "registry-api-v2",
    )
    codes = (Code.CONNECTIVITY_REFRESH_TOKEN_ERROR,)

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.tokens import TokenError, obtain_grant, scope_for

        reg = ctx.registry
        assert reg is not None
        ch = _challenge(ctx)
        ctx.result("credentials")
        if ch is None:
            return skipped("no token flow: see auth-challenge")
        if ch.scheme == "basic":
            return skipped("Basic authentication: there is no token service")
        cred = ctx.credential()
        if cred.kind == "aad-token" and not reg.is_acr:
            return skipped("an Entra access token is exchanged by ACR only")
        try:
            scope = scope_for(reg.repository, _actions(ctx.options), reg.is_acr)
            grant = obtain_grant(ctx, ch, cred, scope)
        except TokenError as exc:
            return _token_failure(
                "getting a refresh token",
                Code.CONNECTIVITY_REFRESH_TOKEN_ERROR,
                exc,
                cred,
                reg.login_server,
            )
        ctx.put(GRANT, grant)
        if grant.mode == "anonymous":
            return skipped("anonymous: no refresh token to get", **grant.evidence)
        if grant.mode == "basic":
            return passed(
                "the token service accepted the password (GET with basic auth; it "
                "issues no refresh tokens)",
                **grant.evidence,
            )
        return passed(f"refresh token obtained: {grant.evidence.get('method')}", **grant.evidence)


def _actions(options: Options) -> tuple[str, ...]:
    return (
        ("pull", "push") if "push" in options.require or options.wait_for == "push" else ("pull",)
    )


class AccessTokenCheck(Check):
    id = "access-token"
    title = "Access token for the scope"
    order = 100
    depends_on = ("refresh-token",)
    starts_after = ("dns",)
    timeout_s = 15.0
    faq_keys = RefreshTokenCheck.faq_keys
    codes = (Code.CONNECTIVITY_ACCESS_TOKEN_ERROR,)

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.tokens import TokenError, obtain_access_token, scope_for

        reg = ctx.registry
        assert reg is not None
        ch = _challenge(ctx)
        ctx.result("refresh-token")
        grant = ctx.fact(GRANT)
        if ch is None or ch.scheme == "basic" or grant is None:
            return skipped("no token flow: see auth-challenge and refresh-token")
        scope = scope_for(reg.repository, _actions(ctx.options), reg.is_acr)
        try:
            token, evidence = obtain_access_token(ctx, ch, grant, scope)
        except TokenError as exc:
            cred = None
            with contextlib.suppress(CredentialError):
                cred = ctx.credential()
            return _token_failure(
                f"getting an access token for {scope or 'the registry'}",
                Code.CONNECTIVITY_ACCESS_TOKEN_ERROR,
                exc,
                cred,
                reg.login_server,
            )
        ctx.put(ACCESS_TOKEN, token)
        life = evidence.get("expires_in")
        life_text = f", valid {life}s" if isinstance(life, int) else ""
        return passed(
            f"access token for {scope or 'the registry'} ({evidence['method']}{life_text})",
            **evidence,
        )


class ScopeCheck(Check):
    id = "scope"
    title = "Permissions in the token"
    order = 110
    depends_on = ("access-token",)
    starts_after = ("dns",)
    timeout_s = 10.0
    faq_keys = ("pull-push-roles", "permission-propagation")
    codes = (Code.TOKEN_SCOPE_ERROR,)

    def time_limit(self, options: Options) -> float:
        return options.propagation_timeout_s + 15.0 if options.wait_for else self.timeout_s

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.tokens import granted_actions

        reg = ctx.registry
        assert reg is not None
        ctx.result("access-token")
        token = ctx.fact(ACCESS_TOKEN)
        if token is None:
            return skipped("no access token to inspect")
        if not reg.repository:
            return skipped("no repository named (--repository): nothing to compare the token with")
        claims = jwt_claims(token.reveal())
        if claims is None:
            return skipped("the access token is opaque (not a JWT): its grants cannot be read")
        required = set(_actions(ctx.options))
        granted = granted_actions(claims, reg.repository)
        evidence: dict[str, Any] = {
            "repository": reg.repository,
            "required": sorted(required),
            "granted": sorted(granted),
            "issuer": claims.get("iss"),
            "audience": claims.get("aud"),
        }
        missing = required - granted
        if missing and ctx.options.wait_for:
            return self._wait(ctx, required, evidence)
        if missing:
            return self._missing(reg.login_server, reg.repository, missing, granted, evidence)
        return passed(
            f"the token grants {', '.join(sorted(granted))} on {reg.repository}", **evidence
        )

    def _missing(
        self,
        server: str,
        repo: str,
        missing: set[str],
        granted: set[str],
        evidence: dict[str, Any],
        waited: str = "",
    ) -> Finding:
        have = ", ".join(sorted(granted)) or "nothing"
        need = ", ".join(sorted(missing))
        role = "AcrPush" if "push" in missing else "AcrPull"
        return problem(
            Status.FAIL,
            f"the token grants {have} on {repo} but not {need}{waited}",
            code=Code.TOKEN_SCOPE_ERROR,
            faq=["pull-push-roles", "permission-propagation"],
            remediation=[
                f"Give the identity the {role} role (or a role with {need}) on the registry.",
                "If you just did, the grant can take minutes to reach the token service: log "
                f"out (`docker logout {server}`), wait a minute, and log in again.",
                f"`diagnose check-health {server} --repository {repo} --wait-for "
                f"{need.split(',')[0]}` watches for the grant to arrive.",
            ],
            evidence=evidence,
        )

    def _wait(self, ctx: CheckContext, required: set[str], evidence: dict[str, Any]) -> Finding:
        from diagnose.tokens import (
            TokenError,
            granted_actions,
            obtain_access_token,
            obtain_grant,
            scope_for,
        )

        reg = ctx.registry
        assert reg is not None and reg.repository is not None
        ch = _challenge(ctx)
        assert ch is not None
        cred = ctx.credential()
        started = time.monotonic()
        limit = started + ctx.options.propagation_timeout_s
        polls, delay, last_error = 0, 0.25, ""
        scope = scope_for(reg.repository, tuple(sorted(required)), reg.is_acr)
        granted: set[str] = set(evidence["granted"])
        while time.monotonic() + delay < min(limit, ctx.deadline - 0.5):
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            polls += 1
            try:
                grant = obtain_grant(ctx, ch, cred, scope)  # a fresh login, as the FAQ advises
                token, _ = obtain_access_token(ctx, ch, grant, scope)
            except TokenError as exc:
                last_error = str(exc)
                continue
            claims = jwt_claims(token.reveal()) or {}
            granted = granted_actions(claims, reg.repository)
            if required <= granted:
                took = time.monotonic() - started
                ctx.put(ACCESS_TOKEN, token)
                evidence.update(granted=sorted(granted), propagation_s=round(took, 2), polls=polls)
                return passed(
                    f"{', '.join(sorted(required))} granted on {reg.repository} after "
                    f"{took:.1f}s of waiting ({polls} polls)",
                    **evidence,
                )
        took = time.monotonic() - started
        evidence.update(
            granted=sorted(granted),
            waited_s=round(took, 1),
            polls=polls,
            last_error=last_error or None,
        )
        return self._missing(
            reg.login_server,
            reg.repository,
            required - granted,
            granted,
            evidence,
            waited=f" after waiting {took:.0f}s ({polls} fresh logins and tokens)",
        )


class AuthorizedRequestCheck(Check):
    id = "authorized-request"
    title = "Authorized request"
    order = 120
    depends_on = ("scope",)
    starts_after = ("dns",)
    timeout_s = 15.0
    faq_keys = (*ANSWER_FAQ, "permission-propagation")
    codes = (
        Code.REGISTRY_AUTH_ERROR,
        Code.REPOSITORY_NOT_FOUND,
        Code.CONNECTIVITY_FORBIDDEN_ERROR,
        *REQUEST_CODES,
        *ANSWER_CODES,
    )

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose import http as web

        reg = ctx.registry
        assert reg is not None
        ch = _challenge(ctx)
        ctx.result("scope")
        if ch is None:
            return skipped("no authentication in use: see auth-challenge")
        headers: dict[str, str] = {}
        auth = None
        if ch.scheme == "basic":
            try:
                cred = ctx.credential()
            except CredentialError:
                return skipped("no usable credential: see credentials")
            if cred.anonymous or cred.kind != "password" or cred.secret is None:
                return skipped("Basic authentication needs a user name and password")
            auth = (cred.username or "", cred.secret.reveal())
            how = "the password"
        else:
            token = ctx.fact(ACCESS_TOKEN)
            if token is None:
                return skipped("no access token: see access-token")
            headers["Authorization"] = f"Bearer {token.reveal()}"
            how = "the token"
        scheme = "http" if reg.scheme == "http" else "https"
        ctx.result("tls")
        if ctx.fact(SCHEME) == "http":
            scheme = "http"
        path = f"/v2/{reg.repository}/tags/list" if reg.repository else "/v2/"
        url = f"{scheme}://{reg.login_server}{path}"
        from diagnose.findings import answer, request_failed
        from diagnose.registryapi import read_body, requester

        call = requester(ctx)  # bounded: the check's deadline, and at most 4 MiB of body
        t0 = time.monotonic()
        try:
            resp = call("GET", url, headers=headers, auth=auth, stream=True)
            raw = read_body(resp)
        except web.RequestException as exc:
            return request_failed(ctx.environ, url, exc, f"GET {path}")
        ms = (time.monotonic() - t0) * 1000
        body = raw[:2000].decode("utf-8", "replace") if resp.status_code != 200 else ""
        evidence: dict[str, Any] = {"url": url, "status": resp.status_code, "ms": round(ms, 2)}
        if resp.status_code == 429 or resp.status_code >= 500:
            return answer(
                f"GET {path}",
                resp.status_code,
                resp.headers,
                raw,
                server=reg.login_server,
                anonymous=False,
                evidence=evidence,
            )
        if resp.status_code == 200:
            tags: list[str] = []
            if reg.repository:
                try:
                    data = json.loads(raw)
                    tags = [str(t) for t in (data.get("tags") or [])][:1000]
                except (ValueError, AttributeError, TypeError, RecursionError):
                    tags = []
                ctx.put(TAGS, tags)
                evidence["tags"] = len(tags)
            what = f"{len(tags)} tag(s) in {reg.repository}" if reg.repository else "/v2/"
            return passed(f"the registry accepted {how}: GET {path} -> 200, {what}", **evidence)
        evidence["body"] = body[:300]
        if resp.status_code == 404 and "push" in ctx.options.require and reg.repository:
            return passed(
                f"repository {reg.repository} does not exist yet on {reg.login_server}: the "
                "first push creates it",
                **evidence,
            )
        if resp.status_code == 404:
            return problem(
                Status.FAIL,
                f"repository {reg.repository} does not exist on {reg.login_server}",
                code=Code.REPOSITORY_NOT_FOUND,
                faq=["repository-format"],
                remediation=[
                    "Check the repository name (lower case, the full path such as "
                    "team/app); list what exists with the registry's catalog."
                ],
                evidence=evidence,
            )
        if resp.status_code == 403:
            return problem(
                Status.FAIL,
                f"GET {path} is forbidden (403)",
                code=Code.CONNECTIVITY_FORBIDDEN_ERROR,
                faq=["firewall-propagation", "pull-push-roles"],
                remediation=[
                    "The registry refuses this client: a network rule or a repository "
                    "permission; check both."
                ],
                evidence=evidence,
            )
        faq = (
            ["admin-credentials"]
            if ch.scheme == "basic"
            else ["permission-propagation", "pull-push-roles"]
        )
        if resp.status_code == 401 and ch.scheme != "basic" and reg.repository:
            return problem(
                Status.FAIL,
                f"the registry rejected {how} for {reg.repository} (GET {path} -> 401): either "
                "the identity may not read this repository, or the repository does not exist "
                "(ACR answers 401, not 404, for both)",
                code=Code.REGISTRY_AUTH_ERROR,
                faq=["pull-push-roles", "permission-propagation", "manifest-unknown"],
                remediation=[
                    "Tell the two apart: with the same login, read a repository you know exists; "
                    "if that works, this name is wrong (list them: `az acr repository list -n "
                    "<registry>`, or the registry's catalog).",
                    "If the repository exists, give the identity a pull role on it, wait a "
                    "minute, and log in again (grants take time to reach the token service).",
                ],
                evidence=evidence,
            )
        return problem(
            Status.FAIL,
            f"the registry rejected {how}: GET {path} -> HTTP {resp.status_code}",
            code=Code.REGISTRY_AUTH_ERROR,
            faq=faq,
            remediation=[
                "The token service issued a token the registry does not accept: its "
                "permissions may not have reached the registry yet, or the two "
                "disagree on issuer or service. Wait a minute and log in again."
                if ch.scheme != "basic"
                else "Check the user name and password; `docker login` with them again."
            ],
            evidence=evidence,
        )
