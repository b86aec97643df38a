"""Loading the FAQ knowledge base and matching error text against it.

Matching has to be fast on a large log and right on a single pasted line. Every pattern is
indexed by a trigger: a short lower-case word that any text it matches must contain (taken from
the pattern's own literal text with the standard library's regular expression parser). A log is
scanned once per trigger at C speed, and the full regular expressions run only on the few lines
that hold a trigger. A match scores by the entry's weight and by how much literal text the
pattern pins down, so a long specific message beats a short common phrase; "generic" patterns
(ErrImagePull, `Error response from daemon`) say only that something failed and never outrank
an entry with evidence of its own.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from diagnose.models import FaqEntry

# The words lines are gated on. Each pattern's literal text must contain one of them (a test
# enforces it), so a line without any of them cannot match anything.
TRIGGERS = (
    "x509",
    "certificat",
    "timeout",
    "timed out",
    "deadline",
    "canceled",
    "refused",
    "reset by peer",
    "unreachable",
    "no route",
    "no such host",
    "lookup ",
    "name resolution",
    "not known",
    "eof",
    "authori",
    "authenticat",
    "denied",
    "forbidden",
    "not allowed",
    "autoris",
    "manifest",
    "not found",
    "toomanyrequests",
    "many requests",
    "rate limit",
    "qps",
    "proxy",
    "tunnel",
    "signature",
    "policy",
    "short-name",
    "space left",
    "register layer",
    "applylayer",
    "too large",
    "413",
    "quota",
    "storage",
    "http response",
    "insecure",
    "tls",
    "protocol",
    "imagepull",
    "pull image",
    "pulling image",
    "pull access",
    "pull and unpack",
    "trying to pull",
    "pullimage",
    "platform",
    "exec format",
    "foreign",
    "nondistributable",
    "fwlink",
    "trust",
    "notary",
    "format",
    "lowercase",
    "requested data",
    "unsupported",
    "read-only",
    "method not allowed",
    "aka.ms",
    "cloudf",
    "blob",
    "data.azurecr",
    "privatelink",
    "public network",
    "daemon",
    "admin",
    "password",
    "quarantine",
    "digest",
    "name_",
    "size_",
    "check-health",
    "docker_command",
    "not found",
    "token",
    "scope",
    "slow",
    "taking too long",
    "push",
    "operation",
    "/v2/",
    "appear to be",
    "look like",
    "only mode",
    "writing response",
    "current time",
    "rejected",
    "blocked",
    "registries",
    "hosts.toml",
    "config_path",
    "ca cert",
    "cannot be set",
    "auth.json",
    "registry_auth",
    "unexpected commit",
    "credentials - err",
    "number of bytes",
)


class KnowledgeBaseError(Exception):
    """The shipped knowledge base is broken: a packaging bug, reported in one line."""


@cache
def load() -> dict[str, FaqEntry]:
    """The knowledge base, keyed by stable slug."""
    text = resources.files("diagnose").joinpath("faq.toml").read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeBaseError(f"faq.toml does not parse: {exc}") from None
    out: dict[str, FaqEntry] = {}
    for key, raw in data.items():
        if not isinstance(raw, dict):
            raise KnowledgeBaseError(f"faq.toml: {key} is not a table")
        try:
            out[key] = FaqEntry(
                key=key,
                title=str(raw["title"]),
                question=str(raw["question"]),
                document=str(raw["document"]),
                remediation=tuple(str(s) for s in raw["remediation"]),
                links=tuple(str(s) for s in raw.get("links", ())),
                patterns=tuple(str(s) for s in raw.get("patterns", ())),
                weight=int(raw.get("weight", 1)),
                generic_patterns=tuple(str(s) for s in raw.get("generic_patterns", ())),
                tell=str(raw.get("tell", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KnowledgeBaseError(f"faq.toml: {key} lacks {exc}") from None
    return out


@dataclass(frozen=True)
class Pattern:
    """One pattern of the knowledge base, ready to match."""

    key: str
    regex: re.Pattern[str]
    weight: int
    generic: bool
    trigger: str
    literal: int  # characters of literal text it pins down: how specific it is

    @property
    def score(self) -> int:
        return self.weight * (10 + self.literal)


def _literal_runs(pattern: str) -> tuple[list[str], int]:
    """The runs of literal characters a pattern requires at its top level, and their total.

    Groups, classes and repeats end a run (what is inside them may not be there); an optional
    element does too. Case is folded, as matching ignores it."""
    from re import _parser  # type: ignore[attr-defined]

    try:
        parsed: Any = _parser.parse(pattern, re.IGNORECASE)
    except re.error:
        return [], 0
    runs: list[str] = []
    run: list[str] = []
    total = 0
    for op, arg in parsed:
        if str(op) == "LITERAL":
            run.append(chr(arg).lower())
            total += 1
            continue
        if run:
            runs.append("".join(run))
            run = []
    if run:
        runs.append("".join(run))
    return runs, total


def trigger_for(pattern: str) -> str | None:
    """The trigger word a pattern's matches always contain, or None when it has none."""
    runs, _ = _literal_runs(pattern)
    for run in sorted(runs, key=len, reverse=True):
        for trigger in TRIGGERS:
            if trigger in run:
                return trigger
    return None


@cache
def patterns() -> tuple[Pattern, ...]:
    out = []
    for key, entry in load().items():
        for text, generic in [(p, False) for p in entry.patterns] + [
            (p, True) for p in entry.generic_patterns
        ]:
            trigger = trigger_for(text)
            if trigger is None:
                raise KnowledgeBaseError(f"faq.toml: {key}: no trigger word in {text!r}")
            _, literal = _literal_runs(text)
            out.append(
                Pattern(
                    key,
                    re.compile(text, re.IGNORECASE),
                    entry.weight,
                    generic,
                    trigger,
                    literal,
                )
            )
    return tuple(out)


@cache
def by_trigger() -> dict[str, tuple[Pattern, ...]]:
    groups: dict[str, list[Pattern]] = {}
    for p in patterns():
        groups.setdefault(p.trigger, []).append(p)
    return {t: tuple(ps) for t, ps in groups.items()}


@dataclass(frozen=True)
class Match:
    key: str
    pattern: str
    weight: int
    score: int = 0
    generic: bool = False


def match_line(line: str) -> list[Match]:
    """Every knowledge-base entry one line of text points to, strongest first (one match per
    entry: its most specific pattern); generic matches come after every specific one."""
    text = line[:4096]
    low = text.lower()
    best: dict[str, Match] = {}
    for trigger, group in by_trigger().items():
        if trigger not in low:
            continue
        for p in group:
            if not p.regex.search(text):
                continue
            held = best.get(p.key)
            if held is None:
                best[p.key] = Match(p.key, p.regex.pattern, p.weight, p.score, p.generic)
            elif held.pattern != p.regex.pattern:
                # several patterns of one entry on one line: their evidence adds up, and a
                # specific one makes the whole match specific
                best[p.key] = Match(
                    p.key,
                    held.pattern if held.score >= p.score else p.regex.pattern,
                    p.weight,
                    held.score + p.score,
                    held.generic and p.generic,
                )
    return sorted(best.values(), key=lambda m: (m.generic, -m.score, m.key))
