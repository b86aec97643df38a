"""The data every check, runner and renderer agrees on.

Results are frozen dataclasses and their JSON form is derived here, in one place, so that a new
report format never has to re-assemble a check's facts by hand.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from diagnose.secrets import scrub

REPORT_SCHEMA_ID = "registry-diagnose/report/v1"


class Status(enum.StrEnum):
    """Outcome of one check; ERROR means the check itself broke, not the registry."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def is_problem(self) -> bool:
        return self in (Status.WARN, Status.FAIL, Status.ERROR)


# Worst first: the run's overall status is the worst of its checks.
_SEVERITY = {Status.ERROR: 4, Status.FAIL: 3, Status.WARN: 2, Status.PASS: 1, Status.SKIP: 0}


def worst(statuses: Sequence[Status]) -> Status:
    """Overall status of a set of results (an empty run passes)."""
    if not statuses:
        return Status.PASS
    top = max(statuses, key=lambda s: _SEVERITY[s])
    return Status.PASS if top is Status.SKIP else top


def jsonable(value: Any) -> Any:
    """Coerce evidence into plain JSON types, so a check can never break a report.

    Every string passes through the secret scrubber on the way.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return scrub(value.decode("utf-8", "replace"))
    return scrub(str(value))


@dataclass(frozen=True)
class Finding:
    """What a check returns: the verdict and the facts behind it."""

    status: Status
    summary: str
    code: str | None = None
    faq: tuple[str, ...] = ()
    remediation: tuple[str, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)


def passed(summary: str, **evidence: Any) -> Finding:
    return Finding(Status.PASS, summary, evidence=evidence)


def skipped(summary: str, **evidence: Any) -> Finding:
    return Finding(Status.SKIP, summary, evidence=evidence)


def problem(
    status: Status,
    summary: str,
    *,
    code: enum.StrEnum,
    faq: Sequence[str],
    remediation: Sequence[str] = (),
    evidence: Mapping[str, Any] | None = None,
) -> Finding:
    """A warn/fail/error finding; code and FAQ keys are mandatory so every problem is actionable."""
    if not faq:
        raise ValueError("a problem finding must cite at least one FAQ key")
    return Finding(status, summary, code, tuple(faq), tuple(remediation), dict(evidence or {}))


@dataclass
class Issue:
    """One thing wrong among several a check found; `combine` turns them into one finding."""

    status: Status
    code: enum.StrEnum
    faq: list[str]
    text: str
    steps: list[str] = field(default_factory=list)


def combine(issues: Sequence[Issue], evidence: dict[str, Any]) -> Finding:
    """The worst issue sets status and code; every text, FAQ key and step is kept, in order."""
    top = max(issues, key=lambda i: _SEVERITY[i.status])
    evidence["codes"] = [i.code for i in issues]
    return problem(
        top.status,
        "; ".join(i.text for i in issues),
        code=top.code,
        faq=list(dict.fromkeys(k for i in issues for k in i.faq)),
        remediation=list(dict.fromkeys(s for i in issues for s in i.steps)),
        evidence=evidence,
    )


@dataclass(frozen=True)
class CheckResult:
    """A finding placed in the run: which check, for which registry, when and how long."""

    id: str
    title: str
    status: Status
    summary: str
    code: str | None
    faq: tuple[str, ...]
    remediation: tuple[str, ...]
    evidence: Mapping[str, Any]
    duration_s: float
    registry: str | None = None
    started_s: float = 0.0

    @classmethod
    def from_finding(
        cls,
        check_id: str,
        title: str,
        finding: Finding,
        *,
        duration_s: float,
        registry: str | None,
        started_s: float,
    ) -> CheckResult:
        return cls(
            id=check_id,
            title=title,
            status=finding.status,
            summary=scrub(finding.summary),
            code=finding.code,
            faq=tuple(finding.faq),
            remediation=tuple(scrub(s) for s in finding.remediation),
            evidence=jsonable(dict(finding.evidence)),
            duration_s=duration_s,
            registry=registry,
            started_s=started_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "registry": self.registry,
            "status": self.status.value,
            "summary": self.summary,
            "code": self.code,
            "faq": list(self.faq),
            "remediation": list(self.remediation),
            "evidence": jsonable(self.evidence),
            "started_s": round(self.started_s, 4),
            "duration_s": round(self.duration_s, 4),
        }


@dataclass(frozen=True)
class FaqEntry:
    """One answer of the knowledge base, written once and cited by many checks."""

    key: str
    title: str
    question: str
    document: str
    remediation: tuple[str, ...]
    links: tuple[str, ...]
    patterns: tuple[str, ...]
    weight: int = 1
    # patterns that only say "a pull failed" (ErrImagePull, "Error response from daemon"): they
    # never outrank an entry whose own evidence is on the line
    generic_patterns: tuple[str, ...] = ()
    # what tells this entry apart from others matching the same line (a check and what it shows)
    tell: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "source": {"question": self.question, "document": self.document},
            "remediation": list(self.remediation),
            "links": list(self.links),
        }


@dataclass(frozen=True)
class ImageRef:
    """An image reference as docker understands it, after its normalisation rules.

    `problems` holds what docker itself would refuse (an upper-case repository, a bad digest),
    kept so that the refusal is a finding with its remedy rather than an abrupt exit.
    """

    given: str
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        """What the manifest request names: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def normalized(self) -> str:
        out = f"{self.domain}/{self.path}"
        if self.tag or not self.digest:
            out += f":{self.tag or 'latest'}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "given": self.given,
            "normalized": self.normalized,
            "domain": self.domain,
            "repository": self.path,
            "tag": self.tag,
            "digest": self.digest,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class Registry:
    """A registry as the run understands it, after normalising what the user typed."""

    given: str
    host: str
    port: int | None
    scheme: str = "https"
    is_acr: bool = False
    cloud: str | None = None
    repository: str | None = None
    notes: tuple[str, ...] = ()
    host_given: str = ""
    image: ImageRef | None = None

    @property
    def login_server(self) -> str:
        """host[:port] exactly as docker should be given it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 80 if self.scheme == "http" else 443

    def to_dict(self) -> dict[str, Any]:
        return {
            "given": self.given,
            "login_server": self.login_server,
            "host": self.host,
            "port": self.effective_port,
            "scheme": self.scheme,
            "is_acr": self.is_acr,
            "cloud": self.cloud,
            "repository": self.repository,
            "image": self.image.to_dict() if self.image else None,
        }


@dataclass(frozen=True)
class ToolInfo:
    name: str
    version: str
    python: str
    platform: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "python": self.python,
            "platform": self.platform,
        }


@dataclass(frozen=True)
class Report:
    """A whole run: what was checked, what was found, and the FAQ answers cited."""

    tool: ToolInfo
    registries: tuple[Registry, ...]
    target_source: str
    started_at: str
    duration_s: float
    results: tuple[CheckResult, ...]
    faq: Mapping[str, FaqEntry]
    notes: tuple[str, ...] = ()
    # the node the run describes (Kubernetes: the downward API's spec.nodeName): its name, and
    # where the name came from ("env" for NODE_NAME, "option" for --node-name); None: unnamed
    node: tuple[str, str] | None = None

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for r in self.results:
            out[r.status.value] += 1
        return out

    @property
    def status(self) -> Status:
        return worst([r.status for r in self.results])

    def cited_faq(self) -> dict[str, FaqEntry]:
        keys: dict[str, None] = {}
        for r in self.results:
            for k in r.faq:
                keys[k] = None
        return {k: self.faq[k] for k in keys if k in self.faq}

    def exit_code(self, fail_on_warn: bool = False) -> int:
        """0 healthy (warnings allowed unless asked otherwise), 1 a problem to act on."""
        bad = {Status.FAIL, Status.ERROR} | ({Status.WARN} if fail_on_warn else set())
        return 1 if any(r.status in bad for r in self.results) else 0

    def to_dict(self) -> dict[str, Any]:
        node = {"node": {"name": self.node[0], "source": self.node[1]}} if self.node else {}
        return {
            "schema": REPORT_SCHEMA_ID,
            "tool": self.tool.to_dict(),
            **node,
            "target": {
                "source": self.target_source,
                "registries": [r.to_dict() for r in self.registries],
            },
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 4),
            "summary": {"counts": self.counts(), "status": self.status.value},
            "notes": list(self.notes),
            "checks": [r.to_dict() for r in self.results],
            "faq": {k: e.to_dict() for k, e in self.cited_faq().items()},
        }
