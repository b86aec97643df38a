"""The registry API: GET /v2/ must answer 200, or 401 with a usable challenge."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import urljoin, urlsplit

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.facts import API_ANSWER, PROXY_TLS, SCHEME, ApiAnswer
from diagnose.models import Finding, Status, passed, problem
from diagnose.retry import RetriesExhausted

MAX_REDIRECTS = 5
BODY_LIMIT = 2048
TRANSIENT_STATUS = (502, 503, 504)


class _Transient(Exception):
    """A 502/503/504: worth another try, and the answer to report if tries run out."""

    def __init__(self, answer: tuple[Any, float, float]) -> None:
        super().__init__(f"HTTP {answer[0].status_code}")
        self.answer = answer


class ApiCheck(Check):
    id = "api"
    title = "Registry API /v2/"
    order = 50
    depends_on = ("tls",)
    starts_after = ("dns",)
    timeout_s = 15.0
    faq_keys = (
        "registry-api-v2",
        "firewall-propagation",
        "network-connectivity",
        "client-timeout",
        "proxy",
        "proxy-tls-inspection",
        "certificate-trust",
    )
    codes = (
        Code.CONNECTIVITY_CHALLENGE_ERROR,
        Code.CONNECTIVITY_FORBIDDEN_ERROR,
        Code.CONNECTIVITY_ERROR,
        Code.PROXY_ERROR,
        Code.PROXY_TLS_INSPECTION,
    )

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose import http as web
        from diagnose.challenge import ChallengeError, parse_challenge
        from diagnose.http import safe_headers

        reg = ctx.registry
        assert reg is not None
        scheme = reg.scheme
        if ctx.options.insecure:  # only then may the tls check have fallen back to plain HTTP
            ctx.result("tls")
            scheme = ctx.fact(SCHEME) or scheme
        url = f"{scheme}://{reg.login_server}/v2/"
        session = ctx.http(verify=not ctx.options.insecure)
        _spare_connections(session, url, ctx.proxies(url))
        hops: list[dict[str, Any]] = []
        seen: set[str] = set()
        evidence: dict[str, Any] = {"url": url, "hops": hops}

        def get(url: str) -> tuple[Any, float, float]:
            from diagnose import wire

            t0 = time.monotonic()
            # ends at the check's deadline even when the server trickles its headers
            with wire.until(ctx.deadline - 0.5) as guard:
                try:
                    resp = session.get(
                        url,
                        allow_redirects=False,
                        stream=True,
                        timeout=(ctx.budget(5.0), ctx.budget(10.0)),
                        proxies=ctx.proxies(url),
                    )
                except (web.ProxyError, web.SSLError):
                    raise
                except web.RequestException as exc:
                    host = urlsplit(url).netloc
                    raise wire.broken(
                        exc, host=host, seconds=time.monotonic() - t0, fired=guard.fired
                    ) from None
            answer = (resp, (time.monotonic() - t0) * 1000, time.time())
            if resp.status_code in TRANSIENT_STATUS:
                raise _Transient(answer)
            return answer

        def transient(exc: BaseException) -> bool:
            from diagnose.wire import Broken

            if isinstance(exc, Broken) and exc.brk.kind == "timeout":
                return False  # the deadline ended it: no time for another try
            return isinstance(exc, _Transient | web.ConnectionError | web.Timeout)

        resp: Any = None
        ms = received_at = 0.0
        for _ in range(MAX_REDIRECTS + 1):
            seen.add(url)
            try:
                (resp, ms, received_at), attempts = ctx.retry(partial(get, url), transient)
            except RetriesExhausted as exc:
                if isinstance(exc.last, _Transient):
                    (resp, ms, received_at), attempts = exc.last.answer, exc.attempts
                else:
                    return self._inspected(ctx, url, exc, evidence) or self._no_response(
                        url, exc, evidence, ctx.options.environ
                    )
            body = _read_body(resp)
            hops.append(
                {
                    "url": url,
                    "status": resp.status_code,
                    "ms": round(ms, 2),
                    "attempts": attempts,
                    "headers": safe_headers(resp.headers),
                    **({"body": body} if resp.status_code >= 400 else {}),
                }
            )
            if resp.status_code not in (301, 302, 303, 307, 308):
                break
            location = resp.headers.get("Location")
            if not location:
                return self._challenge_error(
                    f"HTTP {resp.status_code} redirect without a Location header", evidence
                )
            url = urljoin(url, location)
            if url in seen:
                return self._challenge_error(f"/v2/ redirects in a loop (back to {url})", evidence)
        else:
            return self._challenge_error(
                f"/v2/ redirected more than {MAX_REDIRECTS} times", evidence
            )

        status = resp.status_code
        headers = resp.headers
        evidence.update(
            status=status,
            final_url=url,
            api_version=headers.get("Docker-Distribution-API-Version"),
            date=headers.get("Date"),
            received_at=round(received_at, 3),
            ms=round(ms, 2),
        )
        answer = ApiAnswer(
            status=status,
            final_url=url,
            date=headers.get("Date"),
            received_at=received_at,
        )
        ctx.put(API_ANSWER, answer)
        if len(hops) > 1 and urlsplit(url).hostname != reg.host:
            evidence["redirected_to_host"] = urlsplit(url).hostname
        version = headers.get("Docker-Distribution-API-Version")
        vtext = f", {version}" if version else ""
        if status == 200:
            return passed(f"GET /v2/ answered 200 without credentials{vtext}", **evidence)
        if status == 401:
            try:
                ch = parse_challenge(headers.get("WWW-Authenticate"))
            except ChallengeError as exc:
                return self._challenge_error(f"401 with an unusable challenge: {exc}", evidence)
            evidence["challenge"] = {"scheme": ch.scheme, **ch.params}
            ctx.put(API_ANSWER, replace(answer, challenge=ch))
            where = f" realm {ch.realm}" if ch.realm else ""
            service = f" service {ch.service}" if ch.service else ""
            return passed(
                f"GET /v2/ asks for {ch.scheme.capitalize()} auth:{where}{service}{vtext}",
                **evidence,
            )
        if status == 403:
            return problem(
                Status.FAIL,
                "GET /v2/ is forbidden (403): the registry refuses this client",
                code=Code.CONNECTIVITY_FORBIDDEN_ERROR,
                faq=["firewall-propagation", "network-connectivity"],
                remediation=[
                    "The registry's network rules do not admit this host's address: add it (or "
                    "its network) to the registry firewall, or use the private endpoint.",
                    "After changing firewall rules, wait a few minutes and run this again.",
                ],
                evidence=evidence,
            )
        what = {404: "404 Not Found: this is not a registry API (wrong host or port?)"}.get(
            status, f"HTTP {status} instead of 200 or 401"
        )
        return self._challenge_error(f"GET /v2/ answered {what}", evidence)

    def _challenge_error(self, summary: str, evidence: dict[str, Any]) -> Finding:
        return problem(
            Status.FAIL,
            summary,
            code=Code.CONNECTIVITY_CHALLENGE_ERROR,
            faq=["registry-api-v2"],
            remediation=[
                "Check that the login server is the registry's own name and port, not a web "
                "site or a proxy's address.",
                "Compare with `curl -sv https://<login server>/v2/`: a registry answers 200, or "
                "401 with a `WWW-Authenticate: Bearer realm=...,service=...` header.",
            ],
            evidence=evidence,
        )

    def _inspected(
        self, ctx: CheckContext, url: str, exc: RetriesExhausted, evidence: dict[str, Any]
    ) -> Finding | None:
        """TLS failed through the environment's proxy, and the proxy check saw that proxy
        re-sign the registry's certificate with a CA this host does not trust: say so."""
        from diagnose import http as web

        if not isinstance(exc.last, web.SSLError) or not ctx.proxies(url):
            return None
        ctx.result("proxy")
        seen = ctx.fact(PROXY_TLS)
        if seen is None or seen.trusted or seen.reissued is False:
            return None
        from diagnose.proxy import proxy_tls_failure

        evidence.update(error=type(exc.last).__name__, attempts=exc.attempts)
        compared = seen.reissued is not None
        return proxy_tls_failure(url, seen.issuer, compared, exc.attempts, evidence, ctx.environ)

    def _no_response(
        self, url: str, exc: RetriesExhausted, evidence: dict[str, Any], env: Mapping[str, str]
    ) -> Finding:
        from diagnose import http as web

        last = exc.last
        evidence.update(error=type(last).__name__, attempts=exc.attempts)
        if isinstance(last, web.ProxyError):
            from diagnose.proxy import proxy_failure

            return proxy_failure(url, str(last), exc.attempts, evidence, env)
        from diagnose.wire import Broken

        if isinstance(last, web.SSLError):
            from diagnose.x509go import go_reason

            why = go_reason(last)
            summary = f"GET {url} failed in TLS" + (f" ({why})" if why else "")
            faq = ["certificate-trust" if why else "network-connectivity", "tls12"]
        elif isinstance(last, Broken):
            evidence["transfer"] = last.brk.to_dict()
            evidence["error"] = last.brk.kind
            summary = f"GET {url}: {last.brk.describe().rsplit(', on attempt', 1)[0]}"
            faq = (
                ["client-timeout", "network-connectivity"]
                if last.brk.kind in ("stalled", "timeout")
                else ["network-connectivity", "registry-api-v2"]
            )
        else:
            summary, faq = f"GET {url} got no answer", ["network-connectivity"]
        return problem(
            Status.FAIL,
            f"{summary} after {exc.attempts} attempt(s)",
            code=Code.CONNECTIVITY_ERROR,
            faq=faq,
            remediation=[
                "The TCP and TLS checks passed, so look at what sits between this "
                "host and the registry: an HTTP proxy (HTTPS_PROXY, NO_PROXY) or a "
                "load balancer."
            ],
            evidence=evidence,
        )


SPARE_CONNECTIONS = 2


def _spare_connections(session: Any, url: str, proxies: dict[str, str]) -> None:
    """Open a few more connections to the registry while /v2/ opens its own, in the run's
    pool: the checks that later ask the registry things at the same time (the tag list, the
    manifest, an upload, blobs) then find one idle instead of each paying for TCP and TLS."""
    import threading

    from diagnose.http import warm

    def open_one() -> None:
        with contextlib.suppress(Exception):  # the api check itself reports what fails
            warm(session, url, 5.0, proxies)

    for _ in range(SPARE_CONNECTIONS):
        threading.Thread(target=open_one, daemon=True).start()


def _read_body(resp: Any) -> str:
    """The start of the body. A small body is read to its end, so that the kept-alive
    connection goes back to the run's pool for the checks that talk to the registry next."""
    data = b""
    with contextlib.suppress(Exception):  # a body that breaks mid-read is still an answer
        for chunk in resp.iter_content(BODY_LIMIT):
            data += chunk
            if len(data) > 16 * BODY_LIMIT:
                break
    resp.close()
    return data[:BODY_LIMIT].decode("utf-8", "replace")
