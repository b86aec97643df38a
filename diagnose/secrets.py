"""Keeping secrets out of everything the tool writes.

Two layers: a `Secret` wrapper whose str() and repr() never show the value, so a secret cannot
slip into an f-string by accident; and the redaction rules, which every summary, remediation step
and piece of evidence passes through before it reaches a report (`scrub`), and every file of a
support bundle before it is written (`Redactor`, which also counts what it removed, by kind).
The rules remove every secret value this process has seen (registered when a credential is
loaded or a token received) and anything that looks like a token, an Authorization value, URL
user-info, a connection string or a private key.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

REDACTED = "<redacted>"
_MIN_LEN = 4

_known: set[str] = set()
_by_length: tuple[str, ...] = ()  # _known, longest first (one inside another goes after it)
_lock = threading.Lock()

# (kind, pattern, replacement) in the order they apply.
Rule = tuple[str, re.Pattern[str], Callable[[re.Match[str]], str]]

SECRET_KEYS = (
    "password|passwd|pwd|secret|client_secret|refresh_token|access_token|identitytoken|"
    "identity_token|registrytoken|token|auth|sig|signature|accountkey|sharedaccesskey|apikey|"
    "api_key"
)
RULES: list[Rule] = [
    (
        "private-key",
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|\Z)", re.S
        ),
        lambda m: (
            f"-----BEGIN {m.group(1)}PRIVATE KEY-----{REDACTED}-----END {m.group(1)}"
            "PRIVATE KEY-----"
        ),
    ),
    (
        "jwt",
        re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
        lambda m: REDACTED,
    ),
    (
        "authorization",
        re.compile(r"(?i)\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{8,}"),
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
    ),
    ("url-userinfo", re.compile(r"(?i)(?<=://)[^/\s:@\"']+:[^/\s@\"']+(?=@)"), lambda m: REDACTED),
    (
        "connection-string",
        re.compile(
            r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd)(=)[^;\s\"']+"
        ),
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
    ),
    (
        "key-value",
        re.compile(rf"(?i)\b({SECRET_KEYS})(=|\"\s*:\s*\")[^\s\"&,;}}]{{4,}}"),
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
    ),
    # `password = "x"` in TOML (containerd's config.toml, hosts.toml headers)
    (
        "key-value",
        re.compile(rf"(?i)\b({SECRET_KEYS})(\s*=\s*[\"'])[^\"'\n]{{4,}}"),
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
    ),
    # "password: x" in YAML, logs and env dumps; not for words as common as "auth" or "token"
    (
        "key-value",
        re.compile(
            r"(?i)\b(password|passwd|secret|client_secret|refresh_token|access_token|identitytoken|"
            r"accountkey|api_key|apikey)(:\s*)[^\s\"&,;}]{4,}"
        ),
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
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
    """Remember a secret value so every later redaction removes it wherever it appears."""
    if value and len(value) >= _MIN_LEN:
        with _lock:
            if value not in _known:
                _known.add(value)
                _sort()


def forget_all_but(keep: list[str]) -> None:
    """Forget every secret registered since `known_secrets()` returned keep (a test harness
    running many commands in one process gives each its own, as separate processes would)."""
    with _lock:
        _known.intersection_update(keep)
        _sort()


def _sort() -> None:
    global _by_length
    _by_length = tuple(sorted(_known, key=len, reverse=True))


def known_secrets() -> tuple[str, ...]:
    return _by_length  # replaced whole, never changed in place: no lock needed to read it


# Every rule needs one of these words on the line: text without any is left as it is without
# running the rules one by one (most evidence: names, numbers, statuses).
_MAY_HOLD_SECRET = re.compile(
    r"(?i)-----BEGIN|eyJ|bearer|basic|://|accountkey|sharedaccess|pass|pwd|secret|token|auth|"
    r"sig|apikey|api_key"
)


def _apply(text: str, counts: Counter[str] | None) -> str:
    for value in known_secrets():
        if value in text:
            if counts is not None:
                counts["known-secret"] += text.count(value)
            text = text.replace(value, REDACTED)
    if not _MAY_HOLD_SECRET.search(text):
        return text
    for kind, pattern, repl in RULES:

        def sub(
            m: re.Match[str], kind: str = kind, repl: Callable[[re.Match[str]], str] = repl
        ) -> str:
            out = repl(m)
            if counts is not None and out != m.group(0):
                counts[kind] += 1
            return out

        text = pattern.sub(sub, text)
    return text


def scrub(text: str) -> str:
    """text with every known secret and every secret-looking value replaced."""
    if not text:
        return text
    return _apply(text, None)


_HOST = re.compile(
    r"(?<![\w.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9])(?![\w-])"
)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# Names that are not hosts of the customer: file names and our own identifiers.
_NOT_HOSTS = re.compile(
    r"(?i)\.(json|toml|yaml|yml|md|html|txt|log|conf|py|sh|tar|gz|crt|pem|key|xml|d)$"
    r"|^(registry-diagnose|docker\.service|containerd\.service)$"
)


_FIELD = re.compile(
    r"(password|passwd|passphrase|secret|token|credential|apikey|accountkey|sharedaccesskey|"
    r"signature|privatekey|connectionstring|^auth$|^pwd$|^sig$)"
)


def secret_field(name: str) -> bool:
    """A configuration or JSON field whose value is a secret, by its name."""
    flat = re.sub(r"[-_.\s]", "", name.lower())
    return bool(_FIELD.search(flat))


class Redactor:
    """The layer every bundle file passes through; counts what it removed, never the values."""

    def __init__(self, *, redact_hosts: bool = False) -> None:
        self.counts: Counter[str] = Counter()
        self.redact_hosts = redact_hosts
        self._placeholders: dict[str, str] = {}

    def _placeholder(self, kind: str, value: str) -> str:
        key = value.lower()
        found = self._placeholders.get(key)
        if found is None:
            n = sum(1 for v in self._placeholders.values() if v.startswith(kind)) + 1
            found = self._placeholders[key] = f"{kind}-{n}"
        self.counts[kind] += 1
        return found

    def text(self, text: str) -> str:
        text = _apply(text, self.counts)
        if self.redact_hosts:
            text = self._hosts(text)
        return text

    def _hosts(self, text: str) -> str:
        def ip(m: re.Match[str]) -> str:
            try:
                addr = ipaddress.ip_address(m.group(0))
            except ValueError:
                return m.group(0)
            if addr.is_unspecified:
                return m.group(0)
            return f"<{self._placeholder('ip', m.group(0))}>"

        def host(m: re.Match[str]) -> str:
            value = m.group(0)
            if _NOT_HOSTS.search(value) or value.replace(".", "").isdigit():
                return value
            return f"<{self._placeholder('host', value)}>"

        text = _IPV6.sub(ip, text)
        text = _IPV4.sub(ip, text)
        return _HOST.sub(host, text)

    def data(self, value: Any) -> Any:
        """A JSON-like structure with secret fields emptied and every string redacted."""
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                key = self.text(str(k)) if self.redact_hosts else str(k)
                if secret_field(str(k)) and isinstance(v, str) and v:
                    self.counts["secret-field"] += 1
                    out[key] = REDACTED
                else:
                    out[key] = self.data(v)
            return out
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def summary(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def safe_url(url: str) -> str:
    """A URL fit for a report or a log: no user-info, no query string (storage URLs carry
    signatures there), no fragment."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def shown(text: str, limit: int = 60) -> str:
    """User input echoed back in an error line: printable, bounded, never with user-info."""
    head, sep, tail = text.partition("://")
    rest = tail if sep else head
    hostpart, slash, path = rest.partition("/")
    if "@" in hostpart:
        hostpart = "…@" + hostpart.rpartition("@")[2]
    text = (head + sep if sep else "") + hostpart + slash + path
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return repr(clean if len(clean) <= limit else clean[: limit - 1] + "…")
