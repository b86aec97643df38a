"""Loading the FAQ knowledge base and matching error text against it."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from diagnose.models import FaqEntry


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
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KnowledgeBaseError(f"faq.toml: {key} lacks {exc}") from None
    return out


@cache
def _compiled() -> list[tuple[str, re.Pattern[str], int]]:
    return [
        (key, re.compile(pattern, re.IGNORECASE), entry.weight)
        for key, entry in load().items()
        for pattern in entry.patterns
    ]


@dataclass(frozen=True)
class Match:
    key: str
    pattern: str
    weight: int


def match_line(line: str) -> list[Match]:
    """Every knowledge-base entry one line of text points to, strongest first."""
    hits = [Match(k, p.pattern, w) for k, p, w in _compiled() if p.search(line[:4096])]
    return sorted(hits, key=lambda m: -m.weight)
