"""One probe: a module's checks run once, in this process, against one target, and the facts a
monitor keeps from the report (success, phase timings, certificate expiry, rate limit, findings).

`diagnose serve` and `diagnose watch` both probe through here. A probe only reads: whatever the
options say, it asks for pull rights only, makes no push test, no throughput or speed test, and
reads a manifest with a HEAD where the registry counts pulls (Docker Hub counts a GET of a
manifest as a pull, a HEAD not), so that watching a registry never spends its rate limit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from diagnose.models import CheckResult, Registry, Report, Status

if TYPE_CHECKING:
    from diagnose.check import Check
    from diagnose.context import Options
    from diagnose.credentials import UserInput

# phase -> what a person calls one of them (singular, plural), for the watch summary
PHASES: dict[str, tuple[str, str]] = {
    "dns": ("DNS lookup", "DNS lookups"),
    "connect": ("connection", "connections"),
    "tls": ("TLS handshake", "TLS handshakes"),
    "token": ("token request", "token requests"),
    "manifest": ("manifest read", "manifest reads"),
    "blob_first_byte": ("blob's first byte", "blobs' first bytes"),
}
GOOD = (Status.PASS, Status.WARN)


class ProbeInputError(ValueError):
    """A target that cannot be probed; one line, safe to print (never echoes credentials)."""


class SecretSource:
    """Where a module's credentials come from; read again at every probe (see modules)."""

    def read(self) -> UserInput:
        raise NotImplementedError


@dataclass(frozen=True)
class Module:
    """A name for a set of checks and the options they run with, as blackbox_exporter has
    modules. `options` are already made safe for probes (see `for_probes`)."""

    name: str
    checks: tuple[Check, ...]
    options: Options
    secrets: SecretSource | None = None


@dataclass(frozen=True)
class Problem:
    """A warn, fail or error of one probe, with the HTTP status the check saw if any."""

    check: str
    status: str
    code: str
    http_status: int | None
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "code": self.code,
            "http_status": self.http_status,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class ProbeResult:
    """What a monitor keeps of one probe: small, so that thousands fit in memory."""

    target: str
    module: str
    success: bool
    started_at: float  # wall clock, seconds since the epoch
    finished: float  # time.monotonic() at the end, for ages
    duration_s: float
    checks: tuple[tuple[str, str], ...]  # (check id, status), in report order
    phases: Mapping[str, float]  # seconds
    cert_expiry: float | None  # seconds since the epoch
    rate_limit: tuple[int | None, int | None] | None  # (remaining, limit)
    problems: tuple[Problem, ...]

    @property
    def failures(self) -> tuple[Problem, ...]:
        """The problems that make the probe fail (fail and error; a warning does not)."""
        return tuple(p for p in self.problems if p.status != Status.WARN.value)

    def to_dict(self) -> dict[str, Any]:
        remaining, limit = self.rate_limit or (None, None)
        return {
            "time": datetime.fromtimestamp(self.started_at).astimezone().isoformat("T", "seconds"),
            "target": self.target,
            "module": self.module,
            "success": self.success,
            "duration_s": round(self.duration_s, 4),
            "phases_s": {k: round(v, 4) for k, v in self.phases.items()},
            "checks": dict(self.checks),
            "problems": [p.to_dict() for p in self.problems],
            "cert_expiry": self.cert_expiry,
            "rate_limit": {"remaining": remaining, "limit": limit} if self.rate_limit else None,
        }


def for_probes(options: Options) -> Options:
    """Options a probe may run with: pull only, nothing uploaded, nothing measured, no pull
    spent where pulls are counted, no waiting for a grant."""
    return replace(
        options,
        require=("pull",),
        push_test=False,
        throughput=False,
        wait_for=None,
        speedtest_mini=None,
        speedtest_server=None,
        spend_pulls=False,
    )


def writes_refused(*, push: bool, push_test: bool, throughput: bool, wait_for: bool) -> str | None:
    """Why options given to a probing command cannot be honoured, or None."""
    asked = [
        name
        for name, given in (
            ("--require push", push),
            ("--push-test", push_test),
            ("--throughput", throughput),
            ("--wait-for", wait_for),
        )
        if given
    ]
    if not asked:
        return None
    return (
        f"{', '.join(asked)}: a probe only reads (no upload, no data moved, no waiting), so that "
        "it is safe to point at a registry"
    )


def parse_target(text: str, *, insecure: bool = False) -> Registry:
    """A registry name or image reference to probe; ProbeInputError when it is neither, or
    when it carries credentials (they come from the module, never from the URL)."""
    from diagnose.reference import ReferenceError, is_image_reference, parse_reference
    from diagnose.target import TargetError, parse_registry, registry_for_image

    raw = (text or "").strip()
    if not raw:
        raise ProbeInputError("no target given (target=REGISTRY or an image reference)")
    authority = raw.partition("://")[2] if "://" in raw else raw
    if "@" in authority.split("/", 1)[0]:
        raise ProbeInputError(
            "the target carries user-info: credentials come from the module (an environment "
            "variable or a file it names), never from the URL"
        )
    try:
        if is_image_reference(raw):
            return registry_for_image(parse_reference(raw), insecure=insecure)
        return parse_registry(raw, insecure=insecure)
    except (ReferenceError, TargetError) as exc:
        raise ProbeInputError(str(exc)) from None


def target_key(registry: Registry) -> str:
    """One name per target, whatever spelling it was given in."""
    if registry.image is not None:
        return registry.image.normalized
    return f"{registry.scheme}://{registry.login_server}"


def run_probe(module: Module, registry: Registry, timeout_s: float | None = None) -> ProbeResult:
    """Run the module's checks once against registry (within timeout_s when given)."""
    from diagnose import runner

    options = module.options
    if module.secrets is not None:
        options = replace(options, credentials=module.secrets.read())
    if timeout_s is not None:
        options = replace(options, timeout_s=max(1.0, min(options.timeout_s, timeout_s)))
    wall = time.time()
    report = runner.run(module.checks, [registry], options, target_source="probe")
    return summarize(report, target_key(registry), module.name, wall)


def summarize(report: Report, target: str, module: str, started_at: float) -> ProbeResult:
    """The facts a monitor keeps from a report."""
    by_id = {r.id: r for r in report.results}
    problems = tuple(
        Problem(r.id, r.status.value, r.code or "", _http_status(r), r.summary[:300])
        for r in report.results
        if r.status.is_problem
    )
    return ProbeResult(
        target=target,
        module=module,
        success=report.exit_code() == 0,
        started_at=started_at,
        finished=time.monotonic(),
        duration_s=report.duration_s,
        checks=tuple((r.id, r.status.value) for r in report.results),
        phases=phases(by_id),
        cert_expiry=_cert_expiry(by_id.get("tls")),
        rate_limit=_rate_limit(by_id.get("manifest")),
        problems=problems,
    )


def phases(by_id: Mapping[str, CheckResult]) -> dict[str, float]:
    """Seconds per phase, from the evidence of the checks that passed (or warned): a failed
    step's time says nothing about how long the step takes."""

    def ev(check_id: str) -> Mapping[str, Any]:
        r = by_id.get(check_id)
        return r.evidence if r is not None and r.status in GOOD else {}

    queries = ev("dns").get("queries")
    answered = (
        [q.get("ms") for q in queries.values() if isinstance(q, dict)]
        if isinstance(queries, dict)
        else []
    )
    connections = ev("tcp").get("connections")
    connected = (
        [c.get("ms") for c in connections.values() if isinstance(c, dict) and c.get("ok")]
        if isinstance(connections, dict)
        else []
    )
    manifest = ev("manifest")
    blobs = ev("image-blobs").get("first_byte_ms")
    found: dict[str, float | None] = {
        "dns": _first(answered),  # A first, as the clients ask
        "connect": _least(connected),
        "tls": _number(ev("tls").get("handshake_ms")),
        "token": _number(ev("access-token").get("ms")),
        "manifest": _sum(manifest.get("head_ms"), manifest.get("get_ms")),
        "blob_first_byte": _number(blobs if blobs is not None else ev("blob-redirect").get("ms")),
    }
    return {k: v / 1000 for k, v in found.items() if v is not None}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value >= 0 else None


def _first(values: Sequence[Any]) -> float | None:
    return next((n for n in map(_number, values) if n is not None), None)


def _least(values: Sequence[Any]) -> float | None:
    numbers = [n for n in map(_number, values) if n is not None]
    return min(numbers) if numbers else None


def _sum(*values: Any) -> float | None:
    numbers = [n for n in map(_number, values) if n is not None]
    return sum(numbers) if numbers else None


def _http_status(result: CheckResult) -> int | None:
    status = result.evidence.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return status
    return None


def _cert_expiry(tls: CheckResult | None) -> float | None:
    cert = tls.evidence.get("certificate") if tls is not None else None
    not_after = cert.get("not_after") if isinstance(cert, dict) else None
    if not isinstance(not_after, str):
        return None
    try:
        return datetime.fromisoformat(not_after).timestamp()
    except ValueError:
        return None


def _rate_limit(manifest: CheckResult | None) -> tuple[int | None, int | None] | None:
    rl = manifest.evidence.get("rate_limit") if manifest is not None else None
    if not isinstance(rl, dict):
        return None
    remaining, limit = rl.get("remaining"), rl.get("limit")
    if not isinstance(remaining, int) and not isinstance(limit, int):
        return None
    return (
        remaining if isinstance(remaining, int) else None,
        limit if isinstance(limit, int) else None,
    )
