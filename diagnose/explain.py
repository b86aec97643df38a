"""From an error message (or a whole log) to the FAQ answers that fit it, ranked, and the checks
that tell the candidates apart."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from diagnose import faq
from diagnose.check import Check
from diagnose.secrets import scrub

READ_LIMIT = 64 * 1024 * 1024
MAX_LINES = 2_000_000
EXAMPLES = 3

_URL_HOST = re.compile(r"https?://([A-Za-z0-9.-]+(?::\d+)?)/")
_ACR = re.compile(r"\b([a-z0-9]{5,50}\.azurecr\.(?:io|cn|us))\b")


@dataclass
class Candidate:
    key: str
    title: str
    question: str
    score: int = 0
    hits: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    remediation: tuple[str, ...] = ()
    checks: list[str] = field(default_factory=list)


@dataclass
class Explanation:
    candidates: list[Candidate]
    lines_read: int
    matched_lines: int
    registries: list[str]
    command: str | None


def read_lines(source: Path | IO[str]) -> list[str]:
    """Lines of a log, bounded: a huge file is read from its last 64 MiB (errors are recent)."""
    if isinstance(source, Path):
        with source.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - READ_LIMIT))
            data = fh.read(READ_LIMIT)
        text = data.decode("utf-8", "replace")
        if size > READ_LIMIT:
            text = text.split("\n", 1)[-1]
    else:
        text = source.read(READ_LIMIT)
    return text.splitlines()[-MAX_LINES:]


def explain_lines(lines: Iterable[str], checks: Sequence[Check]) -> Explanation:
    kb = faq.load()
    found: dict[str, Candidate] = {}
    registries: dict[str, None] = {}
    read = matched = 0
    for number, line in enumerate(lines, 1):
        read += 1
        hits = faq.match_line(line)
        if not hits:
            continue
        matched += 1
        for m in _ACR.findall(line) + _URL_HOST.findall(line):
            registries.setdefault(m.lower(), None)
        seen: set[str] = set()
        for hit in hits:
            if hit.key in seen:
                continue
            seen.add(hit.key)
            entry = kb[hit.key]
            c = found.setdefault(
                hit.key,
                Candidate(hit.key, entry.title, entry.question, remediation=entry.remediation),
            )
            c.score += hit.weight
            c.hits += 1
            if len(c.examples) < EXAMPLES:
                c.examples.append((number, scrub(line.strip())[:300]))
    by_key: dict[str, list[str]] = {}
    for check in checks:
        for key in check.faq_keys:
            by_key.setdefault(key, []).append(check.id)
    ranked = sorted(found.values(), key=lambda c: (-c.score, -kb[c.key].weight, c.key))
    for c in ranked:
        c.checks = by_key.get(c.key, [])
    command = None
    if ranked:
        ids: dict[str, None] = {}
        for c in ranked[:5]:
            for cid in c.checks:
                ids.setdefault(cid, None)
        target = next(iter(registries), "<registry>")
        command = f"diagnose check-health {target}" + (f" --checks {','.join(ids)}" if ids else "")
    return Explanation(ranked, read, matched, list(registries), command)


def render_text(e: Explanation) -> str:
    if not e.candidates:
        return (
            f"No known registry error in {e.lines_read} line(s). Run "
            "`diagnose check-health <registry>` to look at the whole path.\n"
        )
    out = [
        f"{e.matched_lines} of {e.lines_read} line(s) match {len(e.candidates)} known "
        "problem(s), most likely first:",
        "",
    ]
    for i, c in enumerate(e.candidates, 1):
        out.append(f"{i}. {c.title}  [{c.key}]")
        out.append(f"   FAQ: {c.question}")
        for number, line in c.examples:
            out.append(f"   line {number}: {line}")
        for j, step in enumerate(c.remediation, 1):
            out.append(f"   {j}) {step}")
        if c.checks:
            out.append(f"   checks that test it: {', '.join(c.checks)}")
        out.append("")
    if len(e.candidates) > 1 and e.command:
        out.append("To tell these apart, run:")
    elif e.command:
        out.append("To confirm it, run:")
    if e.command:
        out.append(f"  {e.command}")
    return "\n".join(out) + "\n"


def render_json(e: Explanation) -> str:
    doc: dict[str, Any] = {
        "schema": "registry-diagnose/explain/v1",
        "lines_read": e.lines_read,
        "matched_lines": e.matched_lines,
        "registries": e.registries,
        "command": e.command,
        "candidates": [
            {
                "key": c.key,
                "title": c.title,
                "question": c.question,
                "score": c.score,
                "hits": c.hits,
                "examples": [{"line": n, "text": t} for n, t in c.examples],
                "remediation": list(c.remediation),
                "checks": c.checks,
            }
            for c in e.candidates
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
