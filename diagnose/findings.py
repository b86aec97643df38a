"""Findings that several checks reach for the same answer: a rate limit, a refusal, a registry
error, a request that never got an answer, a storage host out of reach.

Each is written once here, so that the same registry answer reads the same (code, FAQ keys,
remedy) whichever check met it; checks may not import each other, so this is their common
ground.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from diagnose.codes import Code
from diagnose.models import Finding, Status, problem
from diagnose.secrets import safe_url

if TYPE_CHECKING:
    from diagnose.oci import RateLimit, RegistryError
    from diagnose.wire import Break

STORAGE_FAQ = (
    "storage-endpoint",
    "redirect-auth-header",
    "firewall-propagation",
    "network-connectivity",
)


def messages(errors: list[RegistryError]) -> str:
    """The registry's own error messages, as a suffix for a summary (empty when none)."""
    from diagnose.oci import describe_errors

    text = describe_errors(errors)
    return f": {text}" if text else ""


# The codes a check may return when it meets a request that breaks (`request_failed`) or an
# answer that is not a success (`answer`): a check that uses these builders declares them.
REQUEST_CODES = (
    Code.REGISTRY_REQUEST_ERROR,
    Code.TRANSFER_CUT,
    Code.TRANSFER_STALLED,
    Code.REGISTRY_PROTOCOL_ERROR,
    Code.PROXY_ERROR,
)
ANSWER_CODES = (Code.RATE_LIMITED, Code.REGISTRY_DENIED, Code.REGISTRY_ERROR)
# the FAQ keys those findings may cite (the spec's error codes point to these too)
ANSWER_FAQ = (
    "rate-limit",
    "pull-push-roles",
    "firewall-propagation",
    "operation-not-allowed",
    "distribution-errors",
    "manifest-unknown",
    "repository-format",
    "admin-credentials",
    "registry-read-only",
    "content-trust",
    "nondistributable-artifacts",
    "body-size-limit",
    "client-timeout",
    "network-connectivity",
    "transfer-cut-short",
    "proxy",
)


def request_failed(env: Mapping[str, str], url: str, exc: Exception, what: str) -> Finding:
    """A request to a registry that answered /v2/ got no answer of its own, or its transfer
    broke: said how (reset, closed early, stalled, timed out, a header too large...)."""
    from diagnose import http as web
    from diagnose import wire

    if isinstance(exc, web.ProxyError):
        from diagnose.proxy import proxy_failure

        return proxy_failure(url, str(exc), 1, {"url": safe_url(url)}, env)
    if isinstance(exc, wire.Broken):
        brk = exc.brk
    else:
        host = url.split("/")[2] if url.count("/") >= 2 else url
        brk = wire.broken(exc, host=host.rpartition("@")[2]).brk
    return transfer_broken(what, brk, {"url": safe_url(url)})


# how a transfer broke -> (code, FAQ keys, what to do, with {where} for the host)
_BREAKS: dict[tuple[str, ...], tuple[Code, list[str], str]] = {
    ("reset", "closed"): (
        Code.TRANSFER_CUT,
        ["transfer-cut-short", "network-connectivity", "proxy"],
        "{where} ended the transfer before all of it arrived. When it stops at the same point "
        "every time, a proxy, load balancer or cache between this host and it limits body "
        "size or time: raise the limit, or go around it (NO_PROXY). A one-off cut is a "
        "network blip: the clients retry a layer, so retry the pull.",
    ),
    ("stalled", "timeout"): (
        Code.TRANSFER_STALLED,
        ["client-timeout", "transfer-cut-short", "network-connectivity"],
        "{where} stopped sending (or sends a trickle): docker and containerd wait on such a "
        "transfer until they give up. Look at the server's load and at what sits on the path "
        "(a proxy buffering the body, a saturated link), and retry.",
    ),
    ("header", "protocol", "redirects", "too-large"): (
        Code.REGISTRY_PROTOCOL_ERROR,
        ["distribution-errors", "proxy"],
        "The answer breaks HTTP or the limits the clients keep (a header line of at most 64 "
        "KiB, a bounded number of redirects, a manifest of at most 4 MiB): the clients fail "
        "the same way. Whatever answers on this name ({where}, or a proxy or captive portal "
        "in front of it) must be fixed, or gone around.",
    ),
}


def transfer_broken(what: str, brk: Break, evidence: dict[str, Any]) -> Finding:
    """One builder for every transfer that broke, whichever check moved the bytes."""
    code, faq, step = next(
        (v for kinds, v in _BREAKS.items() if brk.kind in kinds),
        (
            Code.REGISTRY_REQUEST_ERROR,
            ["network-connectivity", "client-timeout"],
            "The registry answered /v2/ but not this request: retry, and look at what sits "
            "between this host and {where} (proxy, load balancer).",
        ),
    )
    text = step.format(where=brk.where)
    return problem(
        Status.FAIL,
        f"{what}: {brk.describe()}",
        code=code,
        faq=faq,
        remediation=[text[:1].upper() + text[1:]],
        evidence={**evidence, "transfer": brk.to_dict()},
    )


def answer(
    what: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    server: str,
    anonymous: bool,
    evidence: dict[str, Any],
    denied_code: Code = Code.REGISTRY_DENIED,
) -> Finding:
    """Any answer that is not a success, wherever a check meets it: a 429 (or TOOMANYREQUESTS)
    with the rate-limit headers, a 403 (or DENIED) with the registry's words, any other code
    with its meaning. Never a skip."""
    from diagnose.oci import parse_errors, rate_limit

    errors = parse_errors(body)
    rl = rate_limit(headers)
    codes = {e.code for e in errors}
    evidence = {
        **evidence,
        "status": status,
        "errors": [e.__dict__ for e in errors],
        "rate_limit": rl.to_dict() if rl else None,
    }
    if status == 429 or "TOOMANYREQUESTS" in codes:
        return rate_limited(rl, anonymous, server, evidence, errors)
    if status == 403 or "DENIED" in codes:
        return denied(server, what, errors, evidence, denied_code)
    return registry_error(what, status, errors, evidence)


def blob_mismatch(
    what: str,
    want_digest: str,
    want_size: int | None,
    got_digest: str | None,
    got_size: int,
    where: str,
    evidence: dict[str, Any],
    *,
    over: bool = False,
) -> Finding:
    """A blob read whole whose bytes are not the ones its descriptor names (over: it sent
    more than the descriptor's size, and reading stopped there)."""
    evidence = {
        **evidence,
        "digest": want_digest,
        "size": want_size,
        "received_digest": got_digest,
        "received_size": got_size,
    }
    if want_size is not None and (over or got_size != want_size):
        sent = f"more than {want_size:,} bytes" if over else f"{got_size:,} bytes"
        return problem(
            Status.FAIL,
            f"{what}: {where} sent {sent} where its descriptor says {want_size:,}: "
            "the clients refuse it (a size mismatch)",
            code=Code.BLOB_SIZE_MISMATCH,
            faq=["blob-digest-mismatch", "transfer-cut-short"],
            remediation=_MISMATCH_STEPS,
            evidence=evidence,
        )
    return problem(
        Status.FAIL,
        f"{what}: the bytes {where} sent hash to {str(got_digest)[:19]}…, not "
        f"{want_digest[:19]}…: the clients refuse it (a digest mismatch)",
        code=Code.BLOB_DIGEST_MISMATCH,
        faq=["blob-digest-mismatch"],
        remediation=_MISMATCH_STEPS,
        evidence=evidence,
    )


_MISMATCH_STEPS = [
    "The registry (or a cache or proxy on the way) serves bytes that are not the blob the "
    "manifest names: docker, containerd and podman check every byte and stop the pull.",
    "Fetch the blob yourself (`curl -L` on /v2/<repo>/blobs/<digest>, then `sha256sum`): the "
    "same wrong bytes from the registry itself mean damaged storage: push the image again. "
    "Right bytes there mean something on the path rewrites them: take it out (NO_PROXY).",
]


def manifest_too_large(what: str, seen: int, limit: int, evidence: dict[str, Any]) -> Finding:
    """A manifest over the size the clients read (no more than that was read)."""
    return problem(
        Status.FAIL,
        f"{what} is larger than the {limit // (1024 * 1024)} MiB the clients accept "
        f"(more than {limit:,} bytes; reading stopped there): the pull fails",
        code=Code.MANIFEST_TOO_LARGE,
        faq=["distribution-errors"],
        remediation=[
            "docker, containerd and containers/image read at most 4 MiB of a manifest. A "
            "manifest that large is either not a manifest (a proxy or portal answering with "
            "something else, a server that never ends its body) or an index with far too many "
            "entries: push a smaller one.",
        ],
        evidence={**evidence, "bytes_read": seen, "limit": limit},
    )


def manifest_digest_mismatch(
    what: str,
    stated: str,
    actual: str,
    said_by: str,
    evidence: dict[str, Any],
    refused_by: str = "the clients reject it",
) -> Finding:
    """A manifest whose bytes do not hash to the digest stated for it (the one pinned in the
    reference, or the registry's Docker-Content-Digest)."""
    return problem(
        Status.FAIL,
        f"{what} hashes to {actual[:19]}…, but {said_by} says {stated[:19]}…: {refused_by}",
        code=Code.MANIFEST_DIGEST_MISMATCH,
        faq=["distribution-errors", "blob-digest-mismatch"],
        remediation=[
            "Something between this host and the registry alters the manifest (a caching "
            "proxy or mirror), or the registry serves a damaged one: pull without the "
            "proxy, or report it to the registry's owner."
        ],
        evidence={**evidence, "stated_digest": stated, "content_digest": actual},
    )


def rate_limited(
    rl: RateLimit | None,
    anonymous: bool,
    server: str,
    evidence: dict[str, Any],
    errors: list[RegistryError] | None = None,
) -> Finding:
    """429 / TOOMANYREQUESTS, or a limit already at 0: what the window is and what to do."""
    from diagnose.oci import human_window

    window = human_window(rl.window_s if rl else None)
    who = "anonymous requests from this address" if anonymous else "this account"
    counts = ""
    if rl is not None and rl.limit is not None:
        left = rl.remaining if rl.remaining is not None else 0
        counts = f" ({left} of {rl.limit} pulls left per {window})"
    steps = []
    if anonymous:
        steps.append(
            f"Log in (`docker login {server}`): authenticated pulls have their own, higher limit."
        )
    steps.append(
        "Pull through a mirror or a registry of your own (for Docker Hub images, ACR's "
        "artifact cache or `az acr import`), so that each node does not count against the limit."
    )
    if rl is not None and rl.retry_after_s is not None:
        steps.append(f"Retry after {rl.retry_after_s:.0f} s (the registry's Retry-After).")
    else:
        steps.append(f"Or wait: the limit counts pulls over {window}.")
    return problem(
        Status.FAIL,
        f"the registry refuses more pulls by {who}: rate limited{counts}{messages(errors or [])}",
        code=Code.RATE_LIMITED,
        faq=["rate-limit"],
        remediation=steps,
        evidence=evidence,
    )


def denied(
    server: str, what: str, errors: list[RegistryError], evidence: dict[str, Any], code: Code
) -> Finding:
    """403 / DENIED: a firewall rule, a role, or a lock; the registry's message says which."""
    from diagnose.oci import describe_errors

    text = describe_errors(errors).lower()
    if "client with ip" in text or "firewall" in text or "network" in text:
        faq, steps = (
            ["firewall-propagation", "network-connectivity"],
            [
                "The registry's network rules do not admit this host's address (the message names "
                "it): add it to the registry's firewall, or reach the registry through its private "
                "endpoint. Rule changes take a few minutes to apply.",
            ],
        )
    elif "disallowed" in text or "not allowed" in text or "locked" in text or "quarantine" in text:
        faq, steps = (
            ["operation-not-allowed"],
            [
                "The registry refuses this operation on this repository or image: it may be "
                "locked (`az acr repository show` shows write-enabled / read-enabled), "
                "quarantined, or the registry may be on a retired tier or out of storage.",
            ],
        )
    else:
        faq, steps = (
            ["pull-push-roles", "firewall-propagation"],
            [
                "The identity is known but not allowed: give it a role with the action (AcrPull / "
                "AcrPush, or a repository-scoped token), then log in again; or lift the network "
                "rule that refuses this host.",
            ],
        )
    return problem(
        Status.FAIL,
        f"{what} is refused (403 DENIED){messages(errors)}",
        code=code,
        faq=faq,
        remediation=steps,
        evidence=evidence,
    )


def registry_error(
    what: str, status: int, errors: list[RegistryError], evidence: dict[str, Any]
) -> Finding:
    """Any other answer: the spec's error code decides the FAQ entry and the remedy."""
    known = [e.known for e in errors if e.known is not None]
    faq: list[str] = []
    steps: list[str] = []
    for k in known:
        faq.extend(f for f in k.faq if f not in faq)
        steps.append(f"{k.code}: {k.remedy}")
    if not faq:
        faq = (
            ["client-timeout", "network-connectivity"] if status >= 500 else ["distribution-errors"]
        )
        steps = [
            "The registry is failing (HTTP 5xx): retry later; for ACR, check the Azure status page."
            if status >= 500
            else "The registry answered in a way the clients cannot use: compare with "
            "`skopeo inspect --debug`."
        ]
    meaning = f" ({known[0].meaning})" if known else ""
    return problem(
        Status.FAIL,
        f"{what} answered HTTP {status}{messages(errors)}{meaning}",
        code=Code.REGISTRY_ERROR,
        faq=faq,
        remediation=steps,
        evidence=evidence,
    )


def storage_unreachable(summary: str, hosts: list[str], evidence: dict[str, Any]) -> Finding:
    """A blob redirect to a storage host this machine cannot use."""
    names = ", ".join(hosts)
    return problem(
        Status.FAIL,
        summary,
        code=Code.STORAGE_REDIRECT_ERROR,
        faq=list(STORAGE_FAQ),
        remediation=[
            f"Layers are downloaded from {names}, not from the registry's own name: this host "
            "must resolve and reach it over HTTPS (firewall, proxy, NO_PROXY, private DNS).",
            "For ACR with dedicated data endpoints or a private endpoint, "
            "<registry>.<region>.data.azurecr.io needs the same DNS and firewall rules as the "
            "login server.",
            "Clients that follow the redirect must drop the Authorization header (no "
            "`curl -L -H Authorization`): the storage host rejects it.",
        ],
        evidence=evidence,
    )
