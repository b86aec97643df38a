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


def request_failed(env: Mapping[str, str], url: str, exc: Exception, what: str) -> Finding:
    """A request to a registry that answered /v2/ got no answer of its own."""
    import requests

    if isinstance(exc, requests.exceptions.ProxyError):
        from diagnose.proxy import proxy_failure

        return proxy_failure(url, str(exc), 1, {"url": safe_url(url)}, env)
    return problem(
        Status.FAIL,
        f"{what} failed: {type(exc).__name__}",
        code=Code.REGISTRY_REQUEST_ERROR,
        faq=["network-connectivity", "client-timeout"],
        remediation=[
            "The registry answered /v2/ but not this request: retry, and look at what sits "
            "between this host and the registry (proxy, load balancer)."
        ],
        evidence={"url": safe_url(url), "error": type(exc).__name__},
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
