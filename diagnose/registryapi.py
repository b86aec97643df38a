"""Reading a repository through the registry API with the credential the auth checks settled
on: the tag list, manifests (following an index to the host's platform), the image config and
blobs (storage redirects followed by hand, without the Authorization header)."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import SplitResult, urljoin, urlsplit

from diagnose.context import CheckContext
from diagnose.credentials import CredentialError
from diagnose.facts import (
    ACCESS_TOKEN,
    CHALLENGE,
    GRANT,
    PLATFORM_MANIFEST,
    TAGS,
)
from diagnose.secrets import safe_url

if TYPE_CHECKING:
    from diagnose import http as web
    from diagnose.models import Finding

MAX_MANIFEST = 4 * 1024 * 1024  # what the clients accept for a manifest (and a config)
MARGIN_S = 0.5  # a request ends this long before the check's deadline, so it can still report
MAX_REDIRECTS = 5
Auth = tuple[str, str] | None


class Getter(Protocol):
    def __call__(self, url: str, **kw: Any) -> web.Response: ...


class Requester(Protocol):
    def __call__(self, method: str, url: str, **kw: Any) -> web.Response: ...


class NotReadable(Exception):
    """The repository cannot be read this way; the message says why, in one line. `finding`:
    the registry's own answer (a 429, a 5xx, a cut transfer) that the check reports instead
    of skipping; None when another check reported it already."""

    def __init__(self, message: str, finding: Finding | None = None) -> None:
        super().__init__(message)
        self.finding = finding


class Refused(NotReadable):
    """A registry answer that is not a success, kept for the finding that names it."""

    def __init__(self, what: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"{what} is not readable (HTTP {status})")
        self.what, self.status, self.headers, self.body = what, status, headers, body


def auth_for(ctx: CheckContext) -> tuple[dict[str, str], Auth]:
    """Headers or basic credentials for this registry, from the facts the auth checks left."""
    ch = ctx.fact(CHALLENGE)
    if ch is not None and ch.scheme == "bearer":
        token = ctx.fact(ACCESS_TOKEN)
        if token is not None:
            return {"Authorization": f"Bearer {token.reveal()}"}, None
    if ch is not None and ch.scheme == "basic":
        try:
            cred = ctx.credential()
        except CredentialError:
            return {}, None
        if cred.kind == "password" and cred.secret is not None:
            return {}, (cred.username or "", cred.secret.reveal())
    return {}, None


def is_anonymous(ctx: CheckContext, headers: dict[str, str], auth: Auth) -> bool:
    """Whether requests go without a credential (rate limits count them per address)."""
    grant = ctx.fact(GRANT)
    if grant is not None and grant.mode == "anonymous":
        return True
    return not headers and auth is None


def requester(ctx: CheckContext) -> Requester:
    """Any method, without redirects, through the run's session and the proxy the clients
    would use, within the check's time: `call(method, url, **kw)`. The request ends at the
    check's deadline however slowly the server answers (`deadline=` sets an earlier one); a
    failure is raised as `wire.Broken`, saying how it broke and where (a proxy's own failure
    stays a ProxyError, for the proxy findings). Without `stream=True` the body is read here,
    at most MAX_MANIFEST bytes of it."""
    from diagnose import http as web
    from diagnose import wire

    session = ctx.http(verify=not ctx.options.insecure)
    home = (ctx.registry.login_server if ctx.registry else "").lower()

    def call(method: str, url: str, **kw: Any) -> web.Response:
        stream = kw.pop("stream", False)
        attempt = kw.pop("attempt", 1)
        until = kw.pop("deadline", None) or ctx.deadline - MARGIN_S
        host = urlsplit(url).netloc.rpartition("@")[2]
        role = role_of(url, home)
        t0 = time.monotonic()
        for again in (True, False):
            with wire.until(until) as guard:
                try:
                    resp = session.request(
                        method,
                        url,
                        allow_redirects=False,
                        timeout=(ctx.budget(5), wire.STALL_S),
                        proxies=ctx.proxies(url),
                        # a HEAD has no body to bound; streamed, urllib3 drops its connection
                        stream=method != "HEAD",
                        **kw,
                    )
                    break
                except web.ProxyError:
                    raise
                except web.RequestException as exc:
                    cut = wire.broken(
                        exc,
                        host=host,
                        role=role,
                        attempt=attempt if again else attempt + 1,
                        seconds=time.monotonic() - t0,
                        fired=guard.fired,
                    )
            # as Go's transport does: a request without a body, closed before any answer
            # (a kept-alive connection the server had just let go), is sent once more
            brk = cut.brk
            if not (again and brk.kind in ("closed", "reset") and brk.phase == "headers"):
                raise cut
            if method not in ("GET", "HEAD") or "data" in kw:
                raise cut
        resp._rd_role = role  # type: ignore[attr-defined]
        resp._rd_attempt = attempt  # type: ignore[attr-defined]
        if not stream and method != "HEAD":
            body = read_body(resp)
            resp._content = body[:MAX_MANIFEST]
        return resp

    return call


def role_of(url: str, home: str) -> str:
    """registry, or storage: the host (or another port of it) a blob redirect led to; home
    is the registry's host[:port]."""

    def where(parts: SplitResult, default: int) -> tuple[str, int]:
        return (parts.hostname or "").lower(), parts.port or default

    target = urlsplit(url)
    default = 443 if target.scheme == "https" else 80
    if not home or where(target, default) == where(urlsplit(f"//{home}"), default):
        return "registry"
    return "storage"


def getter(ctx: CheckContext) -> Getter:
    """GET without redirects, through the run's session and proxies, within the check's time."""
    call = requester(ctx)

    def get(url: str, **kw: Any) -> web.Response:
        return call("GET", url, **kw)

    return get


def read_body(resp: web.Response, limit: int = MAX_MANIFEST) -> bytes:
    """The body, up to just over limit (the caller tells a body over it by its length), and the
    response closed: a server that sends without end costs no more than limit. A transfer
    that breaks raises `wire.Broken` (bytes received, of how many, from where)."""
    from diagnose import wire

    host = urlsplit(resp.url or "").netloc.rpartition("@")[2]
    return wire.drain(
        resp,
        limit,
        host=host,
        role=getattr(resp, "_rd_role", "registry"),
        attempt=getattr(resp, "_rd_attempt", 1),
    ).data


def json_object(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """A JSON object from a registry's bytes, or None and what is wrong with them, in words
    a report can carry (invalid UTF-8 and where, the JSON error and where)."""
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as exc:
        byte = body[exc.start] if exc.start < len(body) else 0
        return None, f"is not valid UTF-8 (byte 0x{byte:02x} at offset {exc.start})"
    except json.JSONDecodeError as exc:
        return None, f"is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except (ValueError, RecursionError):
        return None, "is not JSON (it nests too deeply)"
    if not isinstance(doc, dict):
        return None, "is JSON, but not an object"
    return doc, ""


def base_url(ctx: CheckContext, repository: str | None = None) -> str:
    """https://<login server>/v2/<repository> (the registry's --repository by default)."""
    reg = ctx.registry
    assert reg is not None
    repo = repository or reg.repository
    assert repo
    scheme = "http" if reg.scheme == "http" else "https"
    return f"{scheme}://{reg.login_server}/v2/{repo}"


def manifest_for(
    ctx: CheckContext, repository: str | None = None, tag: str | None = None
) -> dict[str, Any]:
    """The image manifest of repository:tag (default: --repository and its first tag), read
    once per run and shared by the checks that need it; NotReadable when it cannot be read."""
    from diagnose import http as web

    reg = ctx.registry
    if repository is None and tag is None and reg is not None and reg.image is not None:
        # the image the user named is the one every check reads: the image checks' verdict
        # stands, and nothing is asked twice
        for check_id in ("manifest", "platform"):
            done = ctx.result(check_id)
            if done is not None and done.status.value not in ("pass", "warn"):
                raise NotReadable(f"see the {check_id} check: {done.summary[:120]}")
        held = ctx.fact(PLATFORM_MANIFEST)
        if held is not None:
            return held
        repository, tag = reg.repository, reg.image.reference

    def read() -> dict[str, Any]:
        from diagnose.findings import answer, request_failed

        headers, auth = auth_for(ctx)
        get = getter(ctx)
        base = base_url(ctx, repository)
        # the tag list the authorized-request check read already, rather than asking again
        kept = ctx.fact(TAGS) if reg is None or repository in (None, reg.repository) else None
        try:
            first = kept[0] if kept else None
            return image_manifest(
                get, base, tag or first or first_tag(get, base, headers, auth), headers, auth
            )
        except Refused as exc:
            finding = answer(
                exc.what,
                exc.status,
                exc.headers,
                exc.body,
                server=reg.login_server if reg else "",
                anonymous=is_anonymous(ctx, headers, auth),
                evidence={"url": safe_url(base)},
            )
            raise NotReadable(str(exc), finding) from None
        except web.RequestException as exc:
            finding = request_failed(ctx.environ, base, exc, "reading the manifest")
            raise NotReadable(finding.summary, finding) from None

    return ctx.once(f"manifest:{repository or ''}:{tag or ''}", read)


def host_platform() -> tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return "linux", arch


def first_tag(get: Getter, base: str, headers: dict[str, str], auth: Auth) -> str:
    tags = get(f"{base}/tags/list", headers=headers, auth=auth, stream=True)
    body = read_body(tags)
    if tags.status_code != 200:
        raise Refused("the tag list", tags.status_code, tags.headers, body)
    try:
        names = json.loads(body).get("tags") or []
    except (ValueError, AttributeError, RecursionError):
        raise NotReadable("the tag list is not JSON") from None
    if not isinstance(names, list) or not names:
        raise NotReadable("the repository has no tags")
    return str(names[0])


def image_manifest(
    get: Getter, base: str, ref: str, headers: dict[str, str], auth: Auth
) -> dict[str, Any]:
    """The image manifest for ref; an index is followed to the host's platform (else the first)."""
    from diagnose.oci import MANIFEST_ACCEPT

    for _ in range(3):
        m = get(
            f"{base}/manifests/{ref}",
            headers={**headers, "Accept": MANIFEST_ACCEPT},
            auth=auth,
            stream=True,
        )
        body = read_body(m)
        if m.status_code != 200:
            raise Refused(f"manifest {ref[:80]}", m.status_code, m.headers, body)
        if len(body) > MAX_MANIFEST:
            raise NotReadable(f"manifest {ref[:80]} is larger than {MAX_MANIFEST:,} bytes")
        doc, why = json_object(body)
        if doc is None:
            raise NotReadable(f"manifest {ref[:80]} {why}")
        entries = doc.get("manifests")
        if isinstance(entries, list) and entries:
            want_os, want_arch = host_platform()
            chosen = next(
                (
                    e
                    for e in entries
                    if isinstance(e, dict)
                    and isinstance(e.get("platform"), dict)
                    and e["platform"].get("os") == want_os
                    and e["platform"].get("architecture") == want_arch
                ),
                entries[0],
            )
            ref = str(chosen.get("digest") if isinstance(chosen, dict) else "")
            continue
        return doc
    raise NotReadable("the index nests too deeply")


def follow(
    call: Requester,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    auth: Auth,
    **kw: Any,
) -> tuple[web.Response, list[str]]:
    """A request whose redirects are followed by hand, as the clients follow them: the
    Authorization header and credentials never go to another host; a loop, or more than
    MAX_REDIRECTS, raises `wire.Broken` (kind redirects). (answer, the URLs it went through)."""
    from diagnose import wire

    home = (urlsplit(url).hostname or "").lower()
    seen = [url]
    resp = call(method, url, headers=headers, auth=auth, **kw)
    while resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
        resp.close()
        target = urljoin(url, resp.headers["Location"])
        if target in seen or len(seen) > MAX_REDIRECTS:
            loop = target in seen
            raise wire.Broken(
                wire.Break(
                    "redirects",
                    host=urlsplit(url).netloc,
                    role=getattr(resp, "_rd_role", "registry"),
                    phase="headers",
                    detail=(
                        f"a loop: {' -> '.join(safe_url(u) for u in [*seen[-3:], target])}"
                        if loop
                        else f"more than {MAX_REDIRECTS} redirects"
                    ),
                )
            )
        same = (urlsplit(target).hostname or "").lower() == home
        # a new request: the registry's Authorization header never travels to another host
        sent = (
            headers if same else {k: v for k, v in headers.items() if k.lower() != "authorization"}
        )
        resp = call(method, target, headers=sent, auth=auth if same else None, **kw)
        seen.append(target)
        url = target
    return resp, seen


def image_config(ctx: CheckContext, doc: dict[str, Any]) -> dict[str, Any] | None:
    """The image config (os, architecture), read once per run, whole and checked against its
    descriptor's digest and size; None when it cannot be read, or its bytes are not the ones
    named (the image-blobs check says which)."""
    from diagnose.content import config_read

    got = config_read(ctx, doc)
    if got is None or got.verdict != "ok" or got.data is None:
        return None
    try:
        data = json.loads(got.data)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
