"""From an error message (or a whole log) to the FAQ answers that fit it, ranked with the cause
first, and the check-health command that tells the candidates apart.

A log is read from its end, where the failure is, in chunks: each chunk is lower-cased and
scanned once per trigger word (see diagnose.faq), and the knowledge base's regular expressions
run only on the lines that hold a trigger. Reading stops at 64 MiB or when the time budget is
spent, and the answer says how much was examined. Kubernetes output (`kubectl describe pod`,
`kubectl get events`) is read as it comes: the pull error inside the events is what gets
explained, ErrImagePull and ImagePullBackOff being only its symptoms.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from diagnose import faq
from diagnose.check import Check
from diagnose.secrets import scrub

READ_LIMIT = 64 * 1024 * 1024
CHUNK = 8 * 1024 * 1024
TIME_BUDGET_S = 1.0
PER_TRIGGER = 2_000
LINE_LIMIT = 4096
EXAMPLES = 3
CLOSE = 0.6  # a runner-up within this share of the top score is shown as a real alternative

_URL_HOST = re.compile(r"https?://([A-Za-z0-9.-]+(?::\d+)?)/")
_ACR = re.compile(r"\b([a-z0-9]{5,50}\.azurecr\.(?:io|cn|us))\b", re.IGNORECASE)
# Where an image reference sits in the clients' messages.
_REF_CHARS = r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*[A-Za-z0-9]"
_IMAGE_IN_TEXT = re.compile(
    r"(?:pulling image|pull image|failed to pull and unpack image|failed to resolve reference|"
    r"pull access denied for|manifest for|trying to pull(?: repository)?|image with reference|"
    r"docker pull|podman pull|back-off pulling image|error pulling image)"
    rf"\s+\\*\"?({_REF_CHARS})",
    re.IGNORECASE,
)
_IMAGE_IN_URL = re.compile(
    r"https?://([A-Za-z0-9.-]+(?::\d+)?)/v2/([a-z0-9._/-]+?)/manifests/([A-Za-z0-9_.:-]+)"
)


@dataclass
class Candidate:
    key: str
    title: str
    question: str
    score: int = 0
    hits: int = 0
    specific: bool = False
    examples: list[tuple[int, str]] = field(default_factory=list)
    remediation: tuple[str, ...] = ()
    checks: list[str] = field(default_factory=list)
    tell: str = ""


@dataclass
class Explanation:
    candidates: list[Candidate]
    lines_read: int
    matched_lines: int
    registries: list[str]
    command: str | None
    images: list[str] = field(default_factory=list)
    bytes_examined: int = 0
    bytes_total: int = 0
    alternatives: int = 0  # how many candidates fit about as well as the first


def read_blob(source: Path | IO[bytes] | IO[str]) -> tuple[bytes, int]:
    """The last READ_LIMIT bytes of a log (errors are at the end), and its whole size."""
    if isinstance(source, Path):
        with source.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - READ_LIMIT))
            return fh.read(READ_LIMIT), size
    data = source.read(READ_LIMIT + 1)
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return raw[-READ_LIMIT:], len(raw)


def read_lines(source: Path | IO[str]) -> list[str]:
    """Lines of a log, bounded (kept for callers that want lines)."""
    data, _ = read_blob(source)
    return data.decode("utf-8", "replace").splitlines()


def _candidate_lines(data: bytes, deadline: float) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of the lines holding a trigger word, read in chunks from the end (the most
    recent lines of each trigger first, at most PER_TRIGGER of them); and how many bytes were
    examined. A chunk is begun only if it can be finished before the deadline."""
    triggers = [t.encode() for t in faq.by_trigger()]
    spans: set[tuple[int, int]] = set()
    taken = dict.fromkeys(triggers, 0)
    end = len(data)
    examined = 0
    last_chunk_s = 0.0
    while end > 0:
        if examined and time.monotonic() + last_chunk_s > deadline:
            break
        t0 = time.monotonic()
        start = max(0, end - CHUNK)
        if start > 0:  # begin at a line boundary so no line is cut in two
            nl = data.rfind(b"\n", 0, start)
            start = nl + 1 if nl >= 0 else 0
        low = data[start:end].lower()
        for trig in triggers:
            pos = low.rfind(trig)
            while pos >= 0 and taken[trig] < PER_TRIGGER:
                ls = low.rfind(b"\n", 0, pos) + 1
                le = low.find(b"\n", pos)
                spans.add((start + ls, start + (len(low) if le < 0 else le)))
                taken[trig] += 1
                pos = low.rfind(trig, 0, ls) if ls > 0 else -1
        examined += end - start
        end = start
        last_chunk_s = time.monotonic() - t0
    return sorted(spans), examined


def explain_text(
    data: bytes | str,
    checks: Sequence[Check],
    *,
    total: int | None = None,
    budget_s: float = TIME_BUDGET_S,
) -> Explanation:
    """Rank the knowledge base's entries for a message or a log."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    kb = faq.load()
    spans, examined = _candidate_lines(raw, time.monotonic() + budget_s)
    found: dict[str, Candidate] = {}
    registries: dict[str, None] = {}
    images: dict[str, None] = {}
    matched = 0
    line_no, counted_to = 1, 0
    first = len(raw) - examined
    for start, end in spans:
        line_no += raw.count(b"\n", counted_to, start)
        counted_to = start
        if start < first:
            continue
        line = raw[start : min(end, start + LINE_LIMIT)].decode("utf-8", "replace")
        hits = faq.match_line(line)
        if not hits:
            continue
        matched += 1
        for m in _ACR.findall(line) + _URL_HOST.findall(line):
            registries.setdefault(m.lower(), None)
        for ref in _images(line):
            images.setdefault(ref, None)
        for hit in hits:
            entry = kb[hit.key]
            c = found.setdefault(
                hit.key,
                Candidate(
                    hit.key,
                    entry.title,
                    entry.question,
                    remediation=entry.remediation,
                    tell=entry.tell,
                ),
            )
            c.score += hit.score
            c.hits += 1
            c.specific = c.specific or not hit.generic
            if len(c.examples) < EXAMPLES:
                c.examples.append((line_no, scrub(line.strip())[:300]))
    by_key: dict[str, list[str]] = {}
    for check in checks:
        if not check.suggest or len(check.faq_keys) > len(kb) // 2:
            # measurements, and a check citing most of the knowledge base (a log reader),
            # tell no candidates apart
            continue
        for key in check.faq_keys:
            by_key.setdefault(key, []).append(check.id)
    # specific evidence first; generic entries (a pull failed, somewhere) only after it
    ranked = sorted(found.values(), key=lambda c: (not c.specific, -c.score, c.key))
    for c in ranked:
        c.checks = by_key.get(c.key, [])
    alternatives = 0
    if ranked:
        top = ranked[0]
        alternatives = sum(
            1 for c in ranked[1:] if c.specific == top.specific and c.score >= CLOSE * top.score
        )
    command = _command(ranked[: 1 + alternatives] or ranked[:1], images, registries)
    return Explanation(
        ranked,
        lines_read=raw.count(b"\n", first) + (1 if raw and not raw.endswith(b"\n") else 0),
        matched_lines=matched,
        registries=list(registries),
        command=command,
        images=list(images),
        bytes_examined=examined,
        bytes_total=total if total is not None else len(raw),
        alternatives=alternatives,
    )


def explain_lines(lines: Iterable[str], checks: Sequence[Check]) -> Explanation:
    """The same for lines already split."""
    return explain_text("\n".join(lines), checks)


def _images(line: str) -> list[str]:
    out = []
    for m in _IMAGE_IN_TEXT.finditer(line):
        ref = m.group(1).rstrip(".:,")
        if "/" in ref or ":" in ref or "@" in ref:
            out.append(ref)
    for m in _IMAGE_IN_URL.finditer(line):
        host, repo, ref = m.groups()
        sep = "@" if ref.startswith("sha256:") else ":"
        out.append(f"{host}/{repo}{sep}{ref}")
    return out


def _command(
    candidates: Sequence[Candidate], images: dict[str, None], registries: dict[str, None]
) -> str | None:
    if not candidates:
        return None
    ids: dict[str, None] = {}
    for c in candidates:
        for cid in c.checks:
            ids.setdefault(cid, None)
    target = next(iter(images), None) or next(iter(registries), "<registry>")
    return f"diagnose check-health {target}" + (f" --checks {','.join(ids)}" if ids else "")


def render_text(e: Explanation) -> str:
    if not e.candidates:
        return (
            f"No known registry error in {e.lines_read} line(s){_partial(e)}. Run "
            "`diagnose check-health <registry>` to look at the whole path.\n"
        )
    top = e.candidates[0]
    out = [
        f"{e.matched_lines} of {e.lines_read} line(s) match {len(e.candidates)} known "
        f"problem(s){_partial(e)}.",
        "",
    ]
    if e.alternatives:
        out.append(
            f"{1 + e.alternatives} causes fit about equally; what tells them apart is under each."
        )
    else:
        out.append(f"Most likely: {top.title}")
    if e.images:
        out.append(f"Image in the log: {', '.join(e.images[:3])}")
    out.append("")
    for i, c in enumerate(e.candidates, 1):
        label = "" if c.specific else "  (a symptom: the cause is in the lines around it)"
        out.append(f"{i}. {c.title}  [{c.key}]{label}")
        out.append(f"   FAQ: {c.question}")
        for number, line in c.examples:
            out.append(f"   line {number}: {line}")
        for j, step in enumerate(c.remediation, 1):
            out.append(f"   {j}) {step}")
        if c.tell:
            out.append(f"   tells it apart: {c.tell}")
        if c.checks:
            out.append(f"   checks that test it: {', '.join(c.checks)}")
        out.append("")
    if e.command:
        out.append("To tell these apart, run:" if e.alternatives else "To confirm it, run:")
        out.append(f"  {e.command}")
    return "\n".join(out) + "\n"


def _partial(e: Explanation) -> str:
    if e.bytes_examined >= e.bytes_total:
        return ""
    return (
        f" (the last {e.bytes_examined / 1e6:.0f} MB of {e.bytes_total / 1e6:.0f} MB were "
        "examined; cut the log around the failure to see the rest)"
    )


def render_json(e: Explanation) -> str:
    doc: dict[str, Any] = {
        "schema": "registry-diagnose/explain/v1",
        "lines_read": e.lines_read,
        "matched_lines": e.matched_lines,
        "bytes_examined": e.bytes_examined,
        "bytes_total": e.bytes_total,
        "registries": e.registries,
        "images": e.images,
        "command": e.command,
        "alternatives": e.alternatives,
        "candidates": [
            {
                "key": c.key,
                "title": c.title,
                "question": c.question,
                "score": c.score,
                "hits": c.hits,
                "specific": c.specific,
                "examples": [{"line": n, "text": t} for n, t in c.examples],
                "remediation": list(c.remediation),
                "tell": c.tell,
                "checks": c.checks,
            }
            for c in e.candidates
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
