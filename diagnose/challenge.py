"""Parsing a registry's WWW-Authenticate challenge (Docker token spec, RFC 7235)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEADER = 8192


class ChallengeError(ValueError):
    """The challenge cannot be used; the message says why in one line."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")


def parse_params(text: str) -> dict[str, str | None]:
    """`a="b", c=d` as RFC 9110 auth-params (the way requests and Go's parsers read them):
    quoted values unquoted, a name without a value kept as None."""
    from urllib.request import parse_http_list

    out: dict[str, str | None] = {}
    for item in parse_http_list(text):
        if "=" not in item:
            out[item] = None
            continue
        name, value = item.split("=", 1)
        if value[:1] == value[-1:] == '"' and len(value) >= 2:
            value = value[1:-1].replace("\\\\", "\\").replace('\\"', '"')
        out[name] = value
    return out


def parse_challenge(header: str | None) -> Challenge:
    """The first Bearer or Basic challenge in the header; ChallengeError if there is none."""
    if header is None or not header.strip():
        raise ChallengeError("no WWW-Authenticate header")
    if len(header) > MAX_HEADER:
        raise ChallengeError(f"WWW-Authenticate header is {len(header)} bytes long")
    if any(ord(c) < 32 and c != "\t" for c in header):
        raise ChallengeError("WWW-Authenticate header has control characters")
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.strip().rstrip(",").lower()
    if scheme not in ("bearer", "basic"):
        raise ChallengeError(f"unsupported authentication scheme {scheme[:20]!r}")
    try:
        raw = parse_params(rest)
    except (ValueError, IndexError) as exc:
        raise ChallengeError(f"challenge parameters do not parse: {exc}") from None
    params = {str(k).strip().lower(): str(v) for k, v in raw.items() if k and v is not None}
    if scheme == "bearer":
        realm = params.get("realm")
        if not realm:
            raise ChallengeError("Bearer challenge has no realm")
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ChallengeError("Bearer realm is not an http(s) URL")
    return Challenge(scheme, params)
