"""Many reports folded into one fleet report: how many machines were checked, which pass, and
every failing cause (check and code) with the hosts that share it, the largest group first.

Reports come from files, directories and standard input. A stream may hold any number of
reports one after another, each on one line (as a pod prints it) or pretty-printed (as
`--format json` writes a file), with or without the `[pod/NAME/CONTAINER] ` (or `pod/NAME `)
prefix `kubectl logs --prefix` puts before each line. The merge streams: one report is in
memory at a time, and what is kept per report is a name in the groups it belongs to, so
memory stays flat however many reports come in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from diagnose.models import REPORT_SCHEMA_ID

FLEET_SCHEMA_ID = "registry-diagnose/fleet/v1"
FLEET_REPORT_GROUP = "registry_diagnose.fleet_reports"
MAX_REPORT_BYTES = 64 * 1024 * 1024
PROBLEMS = ("fail", "error", "warn")
FAILING = ("fail", "error")
# `kubectl logs --prefix`: "[pod/NAME/CONTAINER] ", optionally a --timestamps stamp after it
_PREFIX = re.compile(
    r"(?:\[pod/([^/\]\s]+)(?:/[^\]\s]*)?\]|pod/([^/\s]+)(?:/\S*)?) "
    r"(?:\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d) )?"
)


class FleetInputError(ValueError):
    """Input that is not a report; one line naming the file, or the line of the stream."""


@dataclass
class FaqRef:
    title: str
    remediation: list[str]
    links: list[str]
    question: str = ""
    document: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "source": {"question": self.question, "document": self.document},
            "remediation": self.remediation,
            "links": self.links,
        }


@dataclass
class Group:
    """One cause (a check and its code) and the hosts it was found on."""

    check: str
    code: str
    status: str
    title: str
    summary: str
    faq: list[str]
    remediation: list[str]
    hosts: list[str] = field(default_factory=list)
    registries: dict[str, None] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.hosts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "code": self.code,
            "status": self.status,
            "count": self.count,
            "hosts": self.hosts,
            "title": self.title,
            "summary": self.summary,
            "registries": list(self.registries),
            "faq": self.faq,
            "remediation": self.remediation,
        }


@dataclass
class Fleet:
    """The merged view: counts, the passing and failing hosts, and the groups of causes."""

    reports: int = 0
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    groups: dict[tuple[str, str], Group] = field(default_factory=dict)
    faq: dict[str, FaqRef] = field(default_factory=dict)
    versions: dict[str, None] = field(default_factory=dict)

    def ordered(self) -> list[Group]:
        """Failures before warnings, then the largest group first, then by check and code."""
        return sorted(
            self.groups.values(),
            key=lambda g: (g.status not in FAILING, -g.count, g.check, g.code),
        )

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": FLEET_SCHEMA_ID,
            "reports": self.reports,
            "passed": self.passed,
            "failed": self.failed,
            "groups": [g.to_dict() for g in self.ordered()],
            "faq": {k: v.to_dict() for k, v in self.faq.items()},
            "tool_versions": list(self.versions),
        }

    def add(self, report: dict[str, Any], host: str) -> None:
        """Fold one report in; nothing of it is kept but what the groups need."""
        self.reports += 1
        status = report["summary"]["status"]
        (self.failed if status in FAILING else self.passed).append(host)
        version = report["tool"].get("version")
        if isinstance(version, str):
            self.versions.setdefault(version, None)
        faq = _dict(report.get("faq"))
        seen: set[tuple[str, str]] = set()
        for c in report["checks"]:
            if c["status"] not in PROBLEMS:
                continue
            key = (c["id"], c.get("code") or c["status"].upper())
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = Group(
                    check=key[0],
                    code=key[1],
                    status=c["status"],
                    title=_str(c.get("title")),
                    summary=_str(c.get("summary")),
                    faq=[k for k in c.get("faq") or [] if isinstance(k, str)],
                    remediation=[s for s in c.get("remediation") or [] if isinstance(s, str)],
                )
                for k in group.faq:
                    self._cite(k, faq.get(k))
            elif c["status"] in FAILING and group.status not in FAILING:
                group.status = c["status"]
            if isinstance(c.get("registry"), str):
                group.registries.setdefault(c["registry"], None)
            if key not in seen:  # a cause found for two registries of one host counts once
                seen.add(key)
                group.hosts.append(host)

    def _cite(self, key: str, entry: Any) -> None:
        if key in self.faq or not isinstance(entry, dict):
            return
        source = _dict(entry.get("source"))
        self.faq[key] = FaqRef(
            title=_str(entry.get("title")),
            remediation=[s for s in entry.get("remediation") or [] if isinstance(s, str)],
            links=[s for s in entry.get("links") or [] if isinstance(s, str)],
            question=_str(source.get("question")),
            document=_str(source.get("document")),
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


# ------------------------------------------------------------------------------- reading
def _checked(doc: Any, where: str) -> dict[str, Any]:
    """The parts of a report the merge reads, checked for shape (not the whole schema)."""
    if not isinstance(doc, dict) or doc.get("schema") != REPORT_SCHEMA_ID:
        raise FleetInputError(f"{where}: not a registry-diagnose report (no {REPORT_SCHEMA_ID})")
    summary, tool, checks = doc.get("summary"), doc.get("tool"), doc.get("checks")
    ok = (
        isinstance(summary, dict)
        and summary.get("status") in ("pass", "warn", "fail", "skip", "error")
        and isinstance(tool, dict)
        and isinstance(checks, list)
        and all(
            isinstance(c, dict)
            and isinstance(c.get("id"), str)
            and isinstance(c.get("status"), str)
            for c in checks
        )
    )
    if not ok:
        raise FleetInputError(f"{where}: a report without its summary, tool or checks")
    return doc


def host_of(report: dict[str, Any], fallback: str) -> str:
    """The report's node name (downward API or --node-name), else where it came from."""
    node = report.get("node")
    if isinstance(node, dict) and isinstance(node.get("name"), str) and node["name"]:
        return str(node["name"])
    return fallback


def _prefix(line: str) -> tuple[str | None, str]:
    """(pod name, the rest) for a `kubectl logs --prefix` line; (None, line) otherwise."""
    if not line.startswith(("[pod/", "pod/")):
        return None, line
    m = _PREFIX.match(line)
    if m is None:
        return None, line
    return m.group(1) or m.group(2), line[m.end() :]


def read_stream(lines: Iterable[str], label: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every report in a stream, with the host it names (or the pod, or `label:LINE`).

    A report on one line is parsed at once; a pretty-printed one is gathered until its closing
    brace at the start of a line. Blank lines are ignored; anything else is not a report.
    """
    buf: list[str] = []
    size = 0
    start, pod = 0, None
    n = 0
    for n, raw in enumerate(lines, 1):
        name, line = _prefix(raw.rstrip("\r\n"))
        if not buf:
            text = line.strip()
            if not text:
                continue
            if not text.startswith("{"):
                raise FleetInputError(f"{label} line {n}: not a report: {_shown(text)}")
            start, pod = n, name
            if text.endswith("}"):
                doc = _parse(text)
                if doc is not None:
                    yield _checked(doc, f"{label} line {n}"), pod or f"{label}:{n}"
                    continue
            buf, size = [line], len(line)
            continue
        buf.append(line)
        size += len(line)
        if size > MAX_REPORT_BYTES:
            raise FleetInputError(f"{label} line {start}: a report larger than 64 MiB")
        if line.startswith("}"):
            doc = _parse("\n".join(buf))
            if doc is not None:
                buf, size = [], 0
                yield _checked(doc, f"{label} line {start}"), pod or f"{label}:{start}"
    if buf:
        raise FleetInputError(
            f"{label} line {start}: a report that does not end (or is not JSON) by line {n}"
        )


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _shown(text: str) -> str:
    clean = "".join(c if c.isprintable() else "?" for c in text[:60])
    return repr(clean + ("…" if len(text) > 60 else ""))


def files_of(inputs: Iterable[str]) -> Iterator[str]:
    """Each input as files: a directory gives its *.json files (recursively, sorted)."""
    for given in inputs:
        if given == "-":
            yield given
            continue
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.json") if p.is_file())
            if not found:
                raise FleetInputError(f"{given}: a directory with no *.json report in it")
            yield from (str(p) for p in found)
        elif path.is_file():
            yield given
        else:
            raise FleetInputError(f"{given}: no such file or directory")


def merge_inputs(inputs: Iterable[str], stdin: IO[str] | None = None) -> Fleet:
    """Every report of every input, folded into one fleet."""
    fleet = Fleet()
    for name in files_of(inputs):
        if name == "-":
            if stdin is None:
                raise FleetInputError("-: no standard input")
            try:
                for report, host in read_stream(stdin, "stdin"):
                    fleet.add(report, host_of(report, host))
            except UnicodeDecodeError:
                raise FleetInputError("stdin: not UTF-8 text, not a report") from None
            continue
        label = name
        try:
            with open(name, encoding="utf-8", errors="strict") as fh:
                count = 0
                for report, host in read_stream(fh, label):
                    count += 1
                    fallback = Path(name).stem if host == f"{label}:1" else host
                    fleet.add(report, host_of(report, fallback))
        except UnicodeDecodeError:
            raise FleetInputError(f"{label}: not UTF-8 text, not a report") from None
        except OSError as exc:
            raise FleetInputError(f"{label}: cannot be read: {exc.strerror}") from None
        if count == 0:
            raise FleetInputError(f"{label}: empty, not a report")
    if fleet.reports == 0:
        raise FleetInputError("no report in the input")
    return fleet


# ------------------------------------------------------------------------------ renderers
class FleetRenderer(Protocol):
    """Turns a fleet into text (registered in `registry_diagnose.fleet_reports`)."""

    def render_fleet(self, fleet: Fleet, color: bool = False) -> str: ...


def fleet_formats() -> dict[str, Any]:
    """The fleet formats installed, by name (entry points, not yet loaded)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=FLEET_REPORT_GROUP)}


def load_fleet_renderer(name: str) -> FleetRenderer:
    ep = fleet_formats()[name]
    obj = ep.load()
    renderer: FleetRenderer = obj() if isinstance(obj, type) else obj
    return renderer
