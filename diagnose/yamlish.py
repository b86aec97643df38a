"""The block-style YAML that node configuration is written in (registries.d lookaside files,
Kubernetes Secrets, the kubelet's CredentialProviderConfig, `kubectl get pod -o yaml`): mappings
and sequences by indentation, plain, quoted and `|` / `>` block scalars, and one-line flow lists
and maps. Plain and quoted scalars may run over several lines, folded as YAML folds them: that
is how kubectl writes a long message (an image pull error, for one).

Not a YAML implementation: anchors, tags, multi-document streams and multi-line flow
collections are refused with a `YamlError` naming the line, never guessed at. JSON, being a
one-line flow map, is read too. Bounded: at most MAX_LINES lines and MAX_DEPTH levels.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MAX_LINES = 20000
MAX_DEPTH = 32


class YamlError(ValueError):
    """The text is not the YAML subset read here; one line, naming the line number."""


def _scalar(text: str, n: int) -> Any:
    t = text.strip(" \t")
    if not t:
        return None
    if t[0] in "&*!":
        raise YamlError(f"line {n}: anchors, aliases and tags are not supported")
    if t[0] in "[{":
        return _flow(t, n)
    if t[0] == '"':
        end = _closing(t)
        if end != len(t) - 1:
            raise YamlError(f"line {n}: unterminated double-quoted string")
        return _unescape(t[1:-1], n)
    if t[0] == "'":
        if _closing(t) != len(t) - 1:
            raise YamlError(f"line {n}: unterminated single-quoted string")
        return t[1:-1].replace("''", "'")
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~"):
        return None
    if re.fullmatch(r"-?[0-9]+", t):
        return int(t)
    return t


_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.DOTALL)


def _unescape(body: str, n: int) -> str:
    """A double-quoted scalar's escapes (YAML's set, a superset of JSON's)."""

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code[0] in "xuU" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise YamlError(f"line {n}: unknown escape \\{code!r} in a double-quoted string")

    if '"' in _ESCAPE.sub("", body):
        raise YamlError(f"line {n}: a double-quoted string closes before its end")
    try:
        out = _ESCAPE.sub(one, body)
        # \ud83d\ude00, as JSON writes a character outside the BMP: one character
        return out.encode("utf-16", "surrogatepass").decode("utf-16")
    except (ValueError, OverflowError):
        raise YamlError(f"line {n}: an escape names no character") from None


def _closing(t: str) -> int:
    """Where the quoted scalar opening t closes (-1: not on this text)."""
    quote, i = t[0], 1
    while i < len(t):
        ch = t[i]
        if quote == '"' and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if quote == "'" and t[i + 1 : i + 2] == "'":
                i += 2
                continue
            return i
        i += 1
    return -1


def _fold(parts: list[str], double: bool) -> str:
    """Lines of a flow scalar as one string: a line break is a space, an empty line a newline;
    in double quotes a backslash at the end of a line joins the lines with nothing between."""
    out = parts[0] if len(parts) == 1 else parts[0].rstrip(" \t")
    breaks, joined = 0, False
    if double and len(parts) > 1 and (len(out) - len(out.rstrip("\\"))) % 2:
        out, joined = out[:-1], True
    for i, raw in enumerate(parts[1:], 1):
        last = i == len(parts) - 1
        line = raw.lstrip(" \t") if last else raw.strip(" \t")
        if not line and not last:
            breaks += 1
            continue
        if joined:
            pass
        elif breaks:
            out += "\n" * breaks
        else:
            out += " "
        out += line
        breaks, joined = 0, False
        if double and not last:
            tail = len(out) - len(out.rstrip("\\"))
            if tail % 2:
                out, joined = out[:-1], True
    if breaks:  # empty lines just before the closing quote
        out += "\n" * breaks
    return out


def _flow(t: str, n: int) -> Any:
    try:
        return json.loads(t)
    except (ValueError, RecursionError):
        pass
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1].strip(" \t")
        return [] if not inner else [_scalar(x, n) for x in _split_flow(inner)]
    if t.startswith("{") and t.endswith("}"):
        out: dict[str, Any] = {}
        inner = t[1:-1].strip(" \t")
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
    return [p for p in parts if p.strip(" \t")]


# YAML's white space is the space and the tab; str.strip() would take NBSP, NEL and more
def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(" \t")
    return line.rstrip(" \t")


_KEY = re.compile(
    r"""^("(?:[^"\\]|\\.)*"|'[^']*'|[^ \t#'"](?:[^#:]|:(?![ \t]|$))*?)[ \t]*:(?:[ \t]+|$)(.*)$"""
)


def loads(text: str) -> Any:
    """The document as dicts, lists and scalars."""
    if text.lstrip(" \t")[:1] in ("{", "["):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    # YAML 1.2's line breaks only: str.splitlines would also break at NEL, LS, PS, VT, FF
    raw = re.split(r"\r\n|\r|\n", text)
    if raw and raw[-1] == "":
        raw.pop()
    if len(raw) > MAX_LINES:
        raise YamlError(f"more than {MAX_LINES} lines")
    lines: list[tuple[int, int, str]] = []  # (line number, indent, content)
    for n, line in enumerate(raw, 1):
        if "\t" in line[: len(line) - len(line.lstrip(" \t"))]:
            raise YamlError(f"line {n}: tabs are not allowed for indentation")
        marker = line.rstrip(" \t") if line[:1] not in (" ", "\t") else ""
        if marker in ("---", "...") and not lines:
            continue
        if marker == "---":
            raise YamlError(f"line {n}: more than one document")
        lines.append((n, len(line) - len(line.lstrip(" \t")), line))
    pos = 0

    def skip_blank() -> None:
        nonlocal pos
        while pos < len(lines) and not _strip_comment(lines[pos][2]).strip(" \t"):
            pos += 1

    def block_scalar(indent: int, style: str) -> str:
        nonlocal pos
        out: list[str] = []
        inner = -1
        while pos < len(lines):
            _n, ind, line = lines[pos]
            if line.strip(" \t") and ind <= indent:
                break
            if line.strip(" \t") and inner < 0:
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
        content = _strip_comment(line).strip(" \t")
        if ind < indent:
            return None
        if content.startswith("- ") or content == "-":
            return seq(ind, depth)
        if content[:1] not in ("[", "{") and _KEY.match(content):
            return mapping(ind, depth)
        pos += 1
        return _scalar(content, n)

    def flow_scalar(first: str, n: int, ind: int) -> Any:
        """A plain or quoted scalar whose lines go on below, indented deeper than ind."""
        nonlocal pos
        quote = first[0] if first[0] in "'\"" else ""
        if not quote and (first[0] in "[{&*!|>%@`" or not _more(pos, ind)):
            return _scalar(first, n)
        if quote and _closing(first) >= 0:
            return _scalar(first, n)
        parts = [first[1:] if quote else first]
        while pos < len(lines) and len(parts) <= MAX_LINES:
            _nn, nind, raw = lines[pos]
            text = raw if quote else _strip_comment(raw)
            if text.strip(" \t") and nind <= ind:
                break
            if not quote:
                if not text.strip(" \t") and not _more(pos + 1, ind):
                    break  # blank lines after the scalar are not part of it
                if raw.strip(" \t") and not text.strip(" \t"):
                    break  # a comment line ends a plain scalar
                if _KEY.match(text.strip(" \t")):
                    raise YamlError(f"line {_nn}: a mapping inside a plain scalar")
            pos += 1
            end = _closing(quote + text.lstrip(" \t")) if quote else -1
            if end >= 0:
                body = text.lstrip(" \t")[: end - 1]
                if _strip_comment(text.lstrip(" \t")[end:]).strip(" \t"):
                    raise YamlError(f"line {_nn}: text after a closing quote")
                parts.append(body)
                folded = _fold(parts, quote == '"')
                return _unescape(folded, n) if quote == '"' else folded.replace("''", "'")
            parts.append(text)
        if quote:
            raise YamlError(f"line {n}: a quoted string that does not close")
        return _fold([p.strip(" \t") for p in parts], False)

    def _more(at: int, ind: int) -> bool:
        """Whether a non-blank line deeper than ind comes next (from `at`, past blanks)."""
        while at < len(lines) and not _strip_comment(lines[at][2]).strip(" \t"):
            if lines[at][2].strip(" \t"):
                return False  # a comment line
            at += 1
        return at < len(lines) and lines[at][1] > ind

    def value_after(rest: str, n: int, ind: int, depth: int) -> Any:
        nonlocal pos
        rest = rest.strip(" \t")
        if rest in ("|", "|-", ">", ">-", "|+", ">+"):
            return block_scalar(ind, rest)
        if rest:
            return flow_scalar(rest, n, ind)
        skip_blank()
        if pos < len(lines):
            _nn, nind, nline = lines[pos]
            nc = _strip_comment(nline).strip(" \t")
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
            content = _strip_comment(line).strip(" \t")
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
            content = _strip_comment(line).strip(" \t")
            if i != ind or not (content.startswith("- ") or content == "-"):
                if i > ind:
                    raise YamlError(f"line {n}: unexpected indentation")
                return out
            rest = content[1:].strip(" \t")
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


def load_file(path: Path, what: str, limit: int) -> Any:
    """The document in a file (at most `limit` bytes, UTF-8); YamlError names `what` and the
    file: missing, unreadable, too large, not UTF-8, or not this YAML."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise YamlError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise YamlError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if len(data) > limit:
        raise YamlError(f"{what} {path} is larger than {limit // 1024 // 1024} MiB")
    try:
        return loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise YamlError(f"{what} {path} is not UTF-8 (byte {exc.start})") from None
    except YamlError as exc:
        raise YamlError(f"{what} {path}: {exc}") from None
