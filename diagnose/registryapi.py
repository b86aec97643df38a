"""Reading a repository through the registry API with the credential the auth checks settled
on: the tag list and the manifests (following an index to the host's platform)."""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

from diagnose.challenge import Challenge
from diagnose.context import CheckContext
from diagnose.credentials import CredentialError
from diagnose.secrets import Secret

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
Getter = Callable[..., Any]


class NotReadable(Exception):
    """The repository cannot be read this way; the message says why, in one line."""


def auth_for(ctx: CheckContext) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Headers or basic credentials for this registry, from what the auth checks kept."""
    ch = ctx.kept("challenge")
    if isinstance(ch, Challenge) and ch.scheme == "bearer":
        token = ctx.kept("access_token")
        if isinstance(token, Secret):
            return {"Authorization": f"Bearer {token.reveal()}"}, None
    if isinstance(ch, Challenge) and ch.scheme == "basic":
        try:
            cred = ctx.credential()
        except CredentialError:
            return {}, None
        if cred.kind == "password" and cred.secret is not None:
            return {}, (cred.username or "", cred.secret.reveal())
    return {}, None


def getter(ctx: CheckContext) -> Getter:
    """GET without redirects, through the run's session and proxies, within the check's time."""
    from diagnose.http import environ_proxies

    session = ctx.http(verify=not ctx.options.insecure)

    def get(url: str, **kw: Any) -> Any:
        return session.get(
            url,
            allow_redirects=False,
            timeout=(ctx.budget(5), ctx.budget(10)),
            proxies=environ_proxies(url),
            **kw,
        )

    return get


def requester(ctx: CheckContext) -> Getter:
    """Any method, without redirects, through the run's session and the proxy the clients
    would use, within the check's time: `call(method, url, **kw)`."""
    from diagnose.http import environ_proxies

    session = ctx.http(verify=not ctx.options.insecure)

    def call(method: str, url: str, **kw: Any) -> Any:
        return session.request(
            method,
            url,
            allow_redirects=False,
            timeout=(ctx.budget(5), ctx.budget(10)),
            proxies=environ_proxies(url),
            **kw,
        )

    return call


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
        # the image the user named is the one every check reads (and the manifest check
        # already holds it when it passed)
        # the image checks read it already: their verdict stands, and nothing is asked twice
        for check_id in ("manifest", "platform"):
            done = ctx.result(check_id)
            if done is not None and done.status.value not in ("pass", "warn"):
                raise NotReadable(f"see the {check_id} check: {done.summary[:120]}")
        held = ctx.kept("platform_manifest")
        if isinstance(held, dict):
            return held
        repository, tag = reg.repository, reg.image.reference

    def read() -> dict[str, Any]:
        headers, auth = auth_for(ctx)
        get = getter(ctx)
        base = base_url(ctx, repository)
        # the tag list the authorized-request check read already, rather than asking again
        kept = ctx.kept("tags") if reg is None or repository in (None, reg.repository) else None
        try:
            first = str(kept[0]) if isinstance(kept, list) and kept else None
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


def first_tag(get: Getter, base: str, headers: dict[str, str], auth: tuple[str, str] | None) -> str:
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
    get: Getter, base: str, ref: str, headers: dict[str, str], auth: tuple[str, str] | None
) -> dict[str, Any]:
    """The image manifest for ref; an index is followed to the host's platform (else the first)."""
    for _ in range(3):
        m = get(f"{base}/manifests/{ref}", headers={**headers, "Accept": MANIFEST_TYPES}, auth=auth)
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
