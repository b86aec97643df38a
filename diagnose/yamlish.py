"""The block-style YAML that node configuration is written in (registries.d lookaside files,
Kubernetes Secrets, the kubelet's CredentialProviderConfig): mappings and sequences by
indentation, plain, quoted and `|` / `>` block scalars, and one-line flow lists and maps.

Not a YAML implementation: anchors, tags, multi-document streams and multi-line flow
collections are refused with a `YamlError` naming the line, never guessed at. JSON, being a
one-line flow map, is read too. Bounded: at most MAX_LINES lines and MAX_DEPTH levels.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_LINES = 20000
MAX_DEPTH = 32


class YamlError(ValueError):
    """The text is not the YAML subset read here; one line, naming the line number."""


def _scalar(text: str, n: int) -> Any:
    t = text.strip()
    if not t:
        return None
    if t[0] in "&*!":
        raise YamlError(f"line {n}: anchors, aliases and tags are not supported")
    if t[0] in "[{":
        return _flow(t, n)
    if t[0] == '"':
        try:
            return json.loads(t)
        except ValueError:
            raise YamlError(f"line {n}: unterminated double-quoted string") from None
    if t[0] == "'":
        if len(t) < 2 or not t.endswith("'"):
            raise YamlError(f"line {n}: unterminated single-quoted string")
        return t[1:-1].replace("''", "'")
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~"):
        return None
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    return t


def _flow(t: str, n: int) -> Any:
    try:
        return json.loads(t)
    except (ValueError, RecursionError):
        pass
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1].strip()
        return [] if not inner else [_scalar(x, n) for x in _split_flow(inner)]
    if t.startswith("{") and t.endswith("}"):
        out: dict[str, Any] = {}
        inner = t[1:-1].strip()
        for item in _split_flow(inner) if inner else []:
            k, sep, v = item.partition(":")
            if not sep:
                raise YamlError(f"line {n}: a flow map entry without ':'")
            out[str(_scalar(k, n))] = _scalar(v, n)
        return out
    raise YamlError(f"line {n}: flow collections must open and close on one line")


def _split_flow(inner: str) -> list[str]:
    parts, depth, cur, quote = [], 0, "", ""
    for ch in inner:
        if quote:
            cur += ch
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


_KEY = re.compile(
    r"""^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s#'"](?:[^#:]|:(?!\s|$))*?)\s*:(?:\s+|$)(.*)$"""
)


def loads(text: str) -> Any:
    """The document as dicts, lists and scalars."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    raw = text.splitlines()
    if len(raw) > MAX_LINES:
        raise YamlError(f"more than {MAX_LINES} lines")
    lines: list[tuple[int, int, str]] = []  # (line number, indent, content)
    for n, line in enumerate(raw, 1):
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise YamlError(f"line {n}: tabs are not allowed for indentation")
        stripped = line.strip()
        if stripped in ("---", "...") and not lines:
            continue
        if stripped == "---":
            raise YamlError(f"line {n}: more than one document")
        lines.append((n, len(line) - len(line.lstrip()), line))
    pos = 0

    def skip_blank() -> None:
        nonlocal pos
        while pos < len(lines) and not _strip_comment(lines[pos][2]).strip():
            pos += 1

    def block_scalar(indent: int, style: str) -> str:
        nonlocal pos
        out: list[str] = []
        inner = -1
        while pos < len(lines):
            _n, ind, line = lines[pos]
            if line.strip() and ind <= indent:
                break
            if line.strip() and inner < 0:
                inner = ind
            out.append(line[inner:] if inner >= 0 else "")
            pos += 1
        while out and not out[-1]:
            out.pop()
        return ("\n" if style.startswith("|") else " ").join(out) + "\n"

    def node(indent: int, depth: int) -> Any:
        nonlocal pos
        if depth > MAX_DEPTH:
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels")
        skip_blank()
        if pos >= len(lines):
            return None
        n, ind, line = lines[pos]
        content = _strip_comment(line).strip()
        if ind < indent:
            return None
        if content.startswith("- ") or content == "-":
            return seq(ind, depth)
        if content[:1] not in ("[", "{") and _KEY.match(content):
            return mapping(ind, depth)
        pos += 1
        return _scalar(content, n)

    def value_after(rest: str, n: int, ind: int, depth: int) -> Any:
        nonlocal pos
        rest = rest.strip()
        if rest in ("|", "|-", ">", ">-", "|+", ">+"):
            return block_scalar(ind, rest)
        if rest:
            return _scalar(rest, n)
        skip_blank()
        if pos < len(lines):
            _nn, nind, nline = lines[pos]
            nc = _strip_comment(nline).strip()
            if nind > ind or (nind == ind and nc.startswith("-")):
                return node(nind, depth + 1)
        return None

    def mapping(ind: int, depth: int) -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while True:
            skip_blank()
            if pos >= len(lines):
                return out
            n, i, line = lines[pos]
            content = _strip_comment(line).strip()
            if i < ind or (i == ind and content.startswith("-")):
                return out
            if i > ind:
                raise YamlError(f"line {n}: unexpected indentation")
            m = _KEY.match(content)
            if m is None:
                raise YamlError(f"line {n}: expected 'key: value'")
            key = _scalar(m.group(1), n)
            pos += 1
            out[str(key)] = value_after(m.group(2), n, ind, depth)

    def seq(ind: int, depth: int) -> list[Any]:
        nonlocal pos
        out: list[Any] = []
        while True:
            skip_blank()
            if pos >= len(lines):
                return out
            n, i, line = lines[pos]
            content = _strip_comment(line).strip()
            if i != ind or not (content.startswith("- ") or content == "-"):
                if i > ind:
                    raise YamlError(f"line {n}: unexpected indentation")
                return out
            rest = content[1:].strip()
            if _KEY.match(rest):
                # "- key: value" opens a mapping indented at the key
                inner = ind + (len(content) - len(rest))
                lines[pos] = (n, inner, " " * inner + rest)
                out.append(mapping(inner, depth + 1))
            else:
                pos += 1
                out.append(value_after(rest, n, ind, depth))

    result = node(0, 0)
    skip_blank()
    if pos < len(lines):
        raise YamlError(f"line {lines[pos][0]}: unexpected content")
    return result
