"""Reading a repository through the registry API with the credential the auth checks settled
on: the tag list, manifests (following an index to the host's platform), the image config and
blobs (storage redirects followed by hand, without the Authorization header)."""

from __future__ import annotations

import json
import platform
import time
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin, urlsplit

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
    import requests

MAX_MANIFEST = 4 * 1024 * 1024  # what the clients accept for a manifest (and a config)
Auth = tuple[str, str] | None


class Getter(Protocol):
    def __call__(self, url: str, **kw: Any) -> requests.Response: ...


class Requester(Protocol):
    def __call__(self, method: str, url: str, **kw: Any) -> requests.Response: ...


class NotReadable(Exception):
    """The repository cannot be read this way; the message says why, in one line."""


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
    would use, within the check's time: `call(method, url, **kw)`."""
    session = ctx.http(verify=not ctx.options.insecure)

    def call(method: str, url: str, **kw: Any) -> requests.Response:
        return session.request(
            method,
            url,
            allow_redirects=False,
            timeout=(ctx.budget(5), ctx.budget(10)),
            proxies=ctx.proxies(url),
            **kw,
        )

    return call


def getter(ctx: CheckContext) -> Getter:
    """GET without redirects, through the run's session and proxies, within the check's time."""
    call = requester(ctx)

    def get(url: str, **kw: Any) -> requests.Response:
        return call("GET", url, **kw)

    return get


def read_body(resp: requests.Response, limit: int = MAX_MANIFEST) -> bytes:
    """The body, up to just over limit (the caller tells a body over it by its length), and the
    response closed: a server that sends without end costs no more than limit."""
    try:
        data = b""
        for chunk in resp.iter_content(16 * 1024):
            data += chunk
            if len(data) > limit:
                break
        return data
    finally:
        resp.close()


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
    import requests

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
        except requests.RequestException as exc:
            raise NotReadable(f"reading it failed ({type(exc).__name__})") from None

    return ctx.once(f"manifest:{repository or ''}:{tag or ''}", read)


def host_platform() -> tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return "linux", arch


def first_tag(get: Getter, base: str, headers: dict[str, str], auth: Auth) -> str:
    tags = get(f"{base}/tags/list", headers=headers, auth=auth)
    if tags.status_code != 200:
        raise NotReadable(f"the tag list is not readable (HTTP {tags.status_code})")
    try:
        names = tags.json().get("tags") or []
    except (ValueError, AttributeError):
        raise NotReadable("the tag list is not JSON") from None
    if not names:
        raise NotReadable("the repository has no tags")
    return str(names[0])


def image_manifest(
    get: Getter, base: str, ref: str, headers: dict[str, str], auth: Auth
) -> dict[str, Any]:
    """The image manifest for ref; an index is followed to the host's platform (else the first)."""
    from diagnose.oci import MANIFEST_ACCEPT

    for _ in range(3):
        m = get(
            f"{base}/manifests/{ref}", headers={**headers, "Accept": MANIFEST_ACCEPT}, auth=auth
        )
        if m.status_code != 200:
            raise NotReadable(f"manifest {ref} is not readable (HTTP {m.status_code})")
        try:
            doc = m.json()
        except ValueError:
            raise NotReadable("the manifest is not JSON") from None
        if not isinstance(doc, dict):
            raise NotReadable("the manifest is not a JSON object")
        entries = doc.get("manifests")
        if isinstance(entries, list) and entries:
            want_os, want_arch = host_platform()
            chosen = next(
                (
                    e
                    for e in entries
                    if isinstance(e, dict)
                    and (e.get("platform") or {}).get("os") == want_os
                    and (e.get("platform") or {}).get("architecture") == want_arch
                ),
                entries[0],
            )
            ref = str(chosen.get("digest"))
            continue
        return doc
    raise NotReadable("the index nests too deeply")


def fetch_blob(
    ctx: CheckContext, digest: str, *, limit: int = 0
) -> tuple[int, bytes | None, dict[str, Any]]:
    """GET (limit > 0: the body up to limit) or probe (limit 0: one byte) a blob, following a
    storage redirect by hand without the Authorization header. (status, body, facts)."""
    headers, auth = auth_for(ctx)
    call = requester(ctx)
    url = f"{base_url(ctx)}/blobs/{digest}"
    extra = {} if limit else {"Range": "bytes=0-0"}
    facts: dict[str, Any] = {}
    t0 = time.monotonic()
    resp = call("GET", url, headers={**headers, **extra}, auth=auth, stream=True)
    for _ in range(3):
        if resp.status_code not in (301, 302, 303, 307, 308) or not resp.headers.get("Location"):
            break
        resp.close()
        target = urljoin(url, resp.headers["Location"])
        host = (urlsplit(target).hostname or "").lower()
        facts.setdefault("redirects", []).append(safe_url(target))
        facts["storage_host"] = host
        same = host == (urlsplit(url).hostname or "").lower()
        # a new request: the registry's Authorization header never travels to another host
        try:
            resp = call(
                "GET",
                target,
                headers={**(headers if same else {}), **extra},
                auth=auth if same else None,
                stream=True,
            )
        except OSError as exc:  # requests' errors are OSErrors: the storage host failed
            why = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
            facts.update(status=0, storage_error=f"{safe_url(target)}: {why}")
            return 0, None, facts
        url = target
    facts["status"] = resp.status_code
    # until the answer's headers, storage redirects included
    facts["first_byte_ms"] = round((time.monotonic() - t0) * 1000, 2)
    if not limit:
        resp.close()
        return resp.status_code, None, facts
    return resp.status_code, read_body(resp, limit)[:limit], facts


def image_config(ctx: CheckContext, doc: dict[str, Any]) -> dict[str, Any] | None:
    """The image config (os, architecture), read once per run; None when it cannot be."""
    desc = doc.get("config")
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        return None
    digest = desc["digest"]

    def read() -> dict[str, Any] | None:
        try:
            status, body, _ = fetch_blob(ctx, digest, limit=MAX_MANIFEST)
        except Exception:
            return None
        if status not in (200, 206) or body is None:
            return None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    result: dict[str, Any] | None = ctx.once(f"config:{digest}", read)
    return result
