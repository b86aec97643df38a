"""Keeping secrets out of everything the tool writes.

Two layers: a `Secret` wrapper whose str() and repr() never show the value, so a secret cannot
slip into an f-string by accident; and `scrub`, which every summary, remediation step and piece
of evidence passes through before it reaches a report. `scrub` removes every secret value this
process has seen (registered when a credential is loaded or a token received) and anything that
looks like a token, an Authorization value or URL user-info.
"""

from __future__ import annotations

import re
import threading

REDACTED = "<redacted>"
_MIN_LEN = 4

_known: set[str] = set()
_lock = threading.Lock()

_PATTERNS = [
    # JSON Web Tokens (three base64url parts, header starting with {" -> eyJ)
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # Authorization values
    re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # user-info in URLs
    re.compile(r"(?i)(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
    # key=value secrets in query strings and form bodies
    re.compile(
        r"(?i)\b(password|passwd|secret|refresh_token|access_token|identitytoken|"
        r"identity_token|client_secret|token|auth|sig|signature)(=|\"\s*:\s*\")"
        r"[^\s\"&,}]{4,}"
    ),
]


class Secret:
    """A value that must never be printed; call reveal() where it is really needed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    def __str__(self) -> str:
        return REDACTED

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def register(value: str | None) -> None:
    """Remember a secret value so scrub() removes it wherever it appears."""
    if value and len(value) >= _MIN_LEN:
        with _lock:
            _known.add(value)
            # the same value base64-encoded in a user:password pair is caught by the patterns;
            # its bare base64 form is registered by whoever decodes it


def scrub(text: str) -> str:
    """text with every known secret and every token-looking value replaced."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern in _PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: m.group(1) + " " + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text
