"""What a registry's answers mean: the distribution-spec error codes, rate-limit headers, and
platform matching for image indexes.

Every error code of the OCI distribution specification (and the few more the CNCF distribution
registry and ACR send) maps to the FAQ entry that explains it and a one-line remedy, so that any
check that reads a registry answer can turn it into an actionable finding.
"""

from __future__ import annotations

import json
import platform as _platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Accept lists as the clients send them for a manifest request (docker 20.10's distribution
# client and containerd's resolver both ask for these four, index types included).
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ErrorCode:
    """One registry error code: what it means, the FAQ entry, and what to do."""

    code: str
    meaning: str
    faq: tuple[str, ...]
    remedy: str


_CODES = [
    ErrorCode(
        "BLOB_UNKNOWN",
        "a blob the request names is not in the repository",
        ("manifest-unknown", "repository-format"),
        "The image refers to a layer or config the registry does not hold: push the image "
        "again, or ask the registry's owner whether garbage collection removed it.",
    ),
    ErrorCode(
        "BLOB_UPLOAD_INVALID",
        "the blob upload was refused as invalid",
        ("distribution-errors",),
        "Retry the push; if it persists, a proxy may be altering request bodies.",
    ),
    ErrorCode(
        "BLOB_UPLOAD_UNKNOWN",
        "the upload session is unknown (expired or cancelled)",
        ("distribution-errors", "client-timeout"),
        "Retry the push: upload sessions expire, and a load balancer without sticky sessions "
        "can send a chunk to a registry replica that does not know the upload.",
    ),
    ErrorCode(
        "DIGEST_INVALID",
        "the content does not match the digest it was sent with",
        ("distribution-errors",),
        "The data was altered in transit or on disk: retry, and check for a proxy that "
        "rewrites bodies or a disk that is full.",
    ),
    ErrorCode(
        "MANIFEST_BLOB_UNKNOWN",
        "the manifest names a blob the repository does not hold",
        ("manifest-unknown",),
        "Push the image's layers before its manifest (docker push does this): a partial push "
        "or a cross-repository mount that failed leaves this state.",
    ),
    ErrorCode(
        "MANIFEST_INVALID",
        "the registry refused the manifest as invalid",
        ("distribution-errors", "nondistributable-artifacts"),
        "Check the manifest's media type and its foreign-layer URLs (the registry may not "
        "allow them).",
    ),
    ErrorCode(
        "MANIFEST_UNKNOWN",
        "no manifest with that tag or digest in the repository",
        ("manifest-unknown",),
        "Check the tag or digest: list the repository's tags and pick one that exists.",
    ),
    ErrorCode(
        "MANIFEST_UNVERIFIED",
        "the manifest's signature could not be verified",
        ("distribution-errors", "content-trust"),
        "Schema 1 signed manifests are obsolete: push the image again with a current client.",
    ),
    ErrorCode(
        "NAME_INVALID",
        "the repository name is not valid",
        ("repository-format",),
        "Repository names are lower-case letters, digits and the separators . _ - /.",
    ),
    ErrorCode(
        "NAME_UNKNOWN",
        "the repository does not exist in this registry",
        ("manifest-unknown", "repository-format"),
        "Check the repository path (the full path, such as team/app) and the registry.",
    ),
    ErrorCode(
        "SIZE_INVALID",
        "the content length does not match the size given",
        ("distribution-errors",),
        "Retry; a proxy that re-encodes bodies can cause this.",
    ),
    ErrorCode(
        "TAG_INVALID",
        "the manifest's tag does not match the tag in the request",
        ("distribution-errors",),
        "Push with a current client: the manifest and the URL must name the same tag.",
    ),
    ErrorCode(
        "UNAUTHORIZED",
        "authentication is required (no credential, or one the registry does not accept)",
        ("admin-credentials", "pull-push-roles"),
        "Log in (`docker login <registry>`) with an identity allowed to pull.",
    ),
    ErrorCode(
        "DENIED",
        "the identity is known but the access is denied",
        ("pull-push-roles", "firewall-propagation", "operation-not-allowed"),
        "Give the identity a role that allows the action, or lift the network rule or lock "
        "that denies it (the registry's message says which).",
    ),
    ErrorCode(
        "UNSUPPORTED",
        "the operation is not supported (a registry in read-only or maintenance mode)",
        ("registry-read-only", "operation-not-allowed"),
        "The registry accepts no writes now: wait for maintenance to end, or ask its owner.",
    ),
    ErrorCode(
        "TOOMANYREQUESTS",
        "too many requests: a rate limit or throttling",
        ("rate-limit",),
        "Log in (authenticated pulls have higher limits), use a pull-through mirror, or retry "
        "after the time the registry gives.",
    ),
    ErrorCode(
        "PAGINATION_NUMBER_INVALID",
        "the page size asked for is not valid",
        ("distribution-errors",),
        "Ask for a smaller page (`n=`) of the tag list or catalog.",
    ),
    ErrorCode(
        "RANGE_INVALID",
        "the byte range of an upload chunk is not valid",
        ("distribution-errors",),
        "Upload chunks must be sent in order: retry the push from the start.",
    ),
    ErrorCode(
        "BLOB_UPLOAD_TOO_LARGE",
        "the upload is larger than the registry (or a proxy before it) accepts",
        ("body-size-limit",),
        "Raise the request body limit of the proxy in front of the registry.",
    ),
    ErrorCode(
        "UNAVAILABLE",
        "the registry is unavailable",
        ("client-timeout", "network-connectivity"),
        "Retry later; the registry or its storage is failing.",
    ),
    ErrorCode(
        "UNKNOWN",
        "the registry hit an internal error",
        ("distribution-errors",),
        "Retry; if it persists, the registry's own logs hold the cause.",
    ),
]
ERROR_CODES: dict[str, ErrorCode] = {c.code: c for c in _CODES}


@dataclass(frozen=True)
class RegistryError:
    """One entry of an `errors` array, with its message cut to a safe length."""

    code: str
    message: str

    @property
    def known(self) -> ErrorCode | None:
        return ERROR_CODES.get(self.code)


def parse_errors(body: bytes | str | None) -> list[RegistryError]:
    """The `errors` of a registry answer body (any shape tolerated; never raises)."""
    if not body:
        return []
    if isinstance(body, bytes):
        body = body[:BODY_LIMIT].decode("utf-8", "replace")
    try:
        data = json.loads(body[:BODY_LIMIT])
    except (ValueError, RecursionError):
        return []
    items = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    out = []
    for item in items[:20]:
        if not isinstance(item, dict):
            continue
        code = str(item.get("code") or "UNKNOWN").upper()[:64]
        message = " ".join(str(item.get("message") or "").split())[:300]
        out.append(RegistryError(code, message))
    return out


def describe_errors(errors: Sequence[RegistryError]) -> str:
    """`CODE: message; CODE: message` for a summary."""
    return "; ".join(f"{e.code}: {e.message}" if e.message else e.code for e in errors)


# ------------------------------------------------------------------------------ rate limits
@dataclass(frozen=True)
class RateLimit:
    """RateLimit-Limit / RateLimit-Remaining as Docker Hub and others send them."""

    limit: int | None
    remaining: int | None
    window_s: int | None
    source: str | None = None
    retry_after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "remaining": self.remaining,
            "window_s": self.window_s,
            "source": self.source,
            "retry_after_s": self.retry_after_s,
        }


_RL_VALUE = re.compile(r"^\s*(\d{1,12})\s*(?:;(.*))?$")


def _rl_field(value: str | None) -> tuple[int | None, int | None]:
    if not value:
        return None, None
    m = _RL_VALUE.match(value[:200])
    if m is None:
        return None, None
    window = None
    for param in (m.group(2) or "").split(";"):
        key, _, val = param.strip().partition("=")
        if key.strip().lower() == "w" and val.strip().isascii() and val.strip().isdigit():
            window = int(val.strip())
    return int(m.group(1)), window


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    v = value.strip()[:100]
    if v.isascii() and v.isdigit():  # str.isdigit() also takes '²', which int() refuses
        return float(min(int(v), 7 * 86400))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    import datetime as dt

    if when.tzinfo is None:
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """The rate-limit facts in a response's headers, or None when it sends none."""
    lower = {k.lower(): v for k, v in headers.items()}
    limit, w1 = _rl_field(lower.get("ratelimit-limit") or lower.get("x-ratelimit-limit"))
    remaining, w2 = _rl_field(
        lower.get("ratelimit-remaining") or lower.get("x-ratelimit-remaining")
    )
    after = retry_after(lower.get("retry-after"))
    if limit is None and remaining is None and after is None:
        return None
    return RateLimit(limit, remaining, w1 or w2, lower.get("docker-ratelimit-source"), after)


def human_window(seconds: int | None) -> str:
    if not seconds:
        return "the registry's window"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


# -------------------------------------------------------------------------------- platforms
@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


_ARCH = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


class PlatformError(ValueError):
    """A --platform value that is not os/arch[/variant]."""


def parse_platform(text: str) -> Platform:
    """os/arch[/variant] with the clients' normalisations (x86_64 -> amd64, aarch64 -> arm64)."""
    parts = [p.strip().lower() for p in text.strip().split("/")]
    if not 2 <= len(parts) <= 3 or not all(re.fullmatch(r"[a-z0-9._-]{1,32}", p) for p in parts):
        raise PlatformError(
            f"platform {text[:40]!r}: write it as os/arch[/variant], e.g. linux/arm64"
        )
    arch = _ARCH.get(parts[1], parts[1])
    variant = parts[2] if len(parts) == 3 else None
    if arch == "arm64" and variant in ("v8", None):
        variant = None
    return Platform(parts[0], arch, variant)


def host_platform() -> Platform:
    """The platform this machine's clients pull for (docker: the daemon's OS and CPU)."""
    machine = _platform.machine().lower()
    arch = _ARCH.get(machine, machine)
    variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine)
    return Platform("linux", arch, variant)


def _variant_ok(want: Platform, have: Platform) -> bool:
    if want.architecture == "arm" and want.variant:
        # containerd's matcher: an arm/v7 host also runs v6 and v5 images
        order = ["v5", "v6", "v7", "v8"]
        if have.variant is None:
            return True
        if have.variant in order and want.variant in order:
            return order.index(have.variant) <= order.index(want.variant)
        return have.variant == want.variant
    if want.variant is None:
        return have.variant in (None, "v8") or want.architecture != "arm64"
    return have.variant == want.variant


def platform_of(entry: Mapping[str, Any]) -> Platform | None:
    raw = entry.get("platform")
    if not isinstance(raw, dict):
        return None
    os_, arch = raw.get("os"), raw.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str):
        return None
    variant = raw.get("variant") if isinstance(raw.get("variant"), str) else None
    if arch == "arm64" and variant == "v8":
        variant = None
    return Platform(os_.lower(), _ARCH.get(arch.lower(), arch.lower()), variant)


def choose(entries: Sequence[Any], want: Platform) -> dict[str, Any] | None:
    """The index entry a client on `want` pulls, as containerd's default matcher picks it:
    the first entry whose os and architecture match (and variant fits); None when none does.
    Attestation manifests (platform unknown/unknown) never match."""
    for e in entries:
        if not isinstance(e, dict):
            continue
        p = platform_of(e)
        if p is None:
            continue
        if p.os == want.os and p.architecture == want.architecture and _variant_ok(want, p):
            return e
    return None


def platforms_in(entries: Sequence[Any]) -> list[str]:
    """The platforms an index offers, attestation entries left out."""
    out = []
    for e in entries:
        if isinstance(e, dict):
            p = platform_of(e)
            if p is not None and p.os != "unknown":
                out.append(str(p))
    return out
