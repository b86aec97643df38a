"""`diagnose serve`: a Prometheus exporter in blackbox_exporter's convention, on our checks.

    /metrics                            the exporter's own metrics (process, probes in flight...)
    /probe?target=REF&module=NAME       one run of the module's checks against REF; the answer
                                        holds that probe's metrics only

The exposition is prometheus_client's: each probe's metrics are collected in a registry of their
own, made for that answer. Safe to point at a registry:

- at most `max_in_flight` probes run at once; a scrape that finds every slot taken waits for one
  within its scrape timeout, and the number of scrapes inside the exporter is bounded too;
- a target is probed at most once per `min_interval_s` (per module), however often it is
  scraped: in between the last result is served, with its age
  (`registry_diagnose_probe_result_age_seconds`); scrapes arriving while a probe of the same
  target runs share its result;
- a probe only reads (see diagnose.probe).
"""

from __future__ import annotations

import contextlib
import http.server
import signal
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from diagnose.models import Status
from diagnose.probe import Module, ProbeInputError, ProbeResult, parse_target, run_probe, target_key

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from diagnose.models import Registry

ProbeFn = Callable[[Module, "Registry", float], ProbeResult]
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
TIMEOUT_OFFSET_S = 0.5  # blackbox_exporter's default: answer before Prometheus gives up
MIN_PROBE_S = 1.0  # a probe given less time than this is not started


class UnknownModule(LookupError):
    """The module asked for is not configured."""


class Busy(RuntimeError):
    """No probe slot came free in time, and there is no earlier result to serve."""


@dataclass
class _Slot:
    """One (module, target): its last result, the probe running now if any, and when the
    last probe started (the minimum interval counts from there)."""

    last: ProbeResult | None = None
    running: threading.Event | None = None
    started: float = float("-inf")


class Prober:
    """Probes targets for scrapes under the two limits: probes in flight, interval per target."""

    def __init__(
        self,
        modules: Mapping[str, Module],
        *,
        max_in_flight: int = 8,
        min_interval_s: float = 30.0,
        max_pending: int = 512,
        max_targets: int = 10_000,
        run: ProbeFn = run_probe,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.modules = dict(modules)
        self.max_in_flight = max_in_flight
        self.min_interval_s = max(0.0, min_interval_s)
        self.max_pending = max_pending
        self.max_targets = max_targets
        self._run = run
        self._slots_free = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Lock()
        self._targets: OrderedDict[tuple[str, str], _Slot] = OrderedDict()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.pending = 0
        # (module, probed|cached|busy), every series there from the start (at 0)
        self.outcomes: Counter[tuple[str, str]] = Counter(
            {(m, o): 0 for m in self.modules for o in ("probed", "cached", "busy")}
        )

    def targets(self) -> int:
        with self._lock:
            return len(self._targets)

    def default_budget(self, module: str | None) -> float:
        mod = self.modules.get(module or "default")
        return (mod.options.timeout_s if mod else 30.0) + TIMEOUT_OFFSET_S

    def probe(self, target: str, module: str | None, budget_s: float) -> tuple[ProbeResult, float]:
        """The result for target and its age in seconds (0 for a probe run for this call)."""
        mod = self.modules.get(module or "default")
        if mod is None:
            raise UnknownModule(module)
        registry = parse_target(target, insecure=mod.options.insecure)
        key = (mod.name, target_key(registry))
        deadline = time.monotonic() + budget_s
        with self._lock:
            if self.pending >= self.max_pending:
                self.outcomes[(mod.name, "busy")] += 1
                raise Busy(f"{self.pending} scrapes already wait for a probe")
            slot = self._slot(key)
            now = time.monotonic()
            if slot.running is None and slot.last and now - slot.started < self.min_interval_s:
                self.outcomes[(mod.name, "cached")] += 1
                return slot.last, now - slot.last.finished
            own = slot.running is None
            if own:
                slot.running = threading.Event()
            running = slot.running
            assert running is not None
            self.pending += 1
        try:
            if own:
                return self._probe(mod, registry, slot, deadline)
            running.wait(max(0.0, deadline - time.monotonic()))  # the same target's probe
            return self._served(mod, slot)
        finally:
            with self._lock:
                self.pending -= 1
                if own:
                    slot.running = None
                    running.set()

    def _probe(
        self, mod: Module, registry: Registry, slot: _Slot, deadline: float
    ) -> tuple[ProbeResult, float]:
        wait = deadline - time.monotonic() - MIN_PROBE_S
        if wait < 0 or not self._slots_free.acquire(timeout=wait):
            return self._served(mod, slot)
        try:
            with self._lock:
                slot.started = time.monotonic()
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                self.outcomes[(mod.name, "probed")] += 1
            result = self._run(mod, registry, max(MIN_PROBE_S, deadline - time.monotonic()))
        finally:
            with self._lock:
                self.in_flight -= 1
            self._slots_free.release()
        with self._lock:
            slot.last = result
        return result, 0.0

    def _served(self, mod: Module, slot: _Slot) -> tuple[ProbeResult, float]:
        """The latest result there is (another scrape's probe, or an earlier one), else Busy."""
        with self._lock:
            last = slot.last
            self.outcomes[(mod.name, "cached" if last else "busy")] += 1
        if last is None:
            raise Busy(f"all {self.max_in_flight} probe slots stayed busy")
        return last, max(0.0, time.monotonic() - last.finished)

    def _slot(self, key: tuple[str, str]) -> _Slot:
        """The target's slot (under the lock); the least recently scraped idle ones are
        forgotten beyond max_targets, so that scrapes of ever new targets cannot grow memory."""
        slot = self._targets.get(key)
        if slot is None:
            slot = self._targets[key] = _Slot()
        self._targets.move_to_end(key)
        while len(self._targets) > self.max_targets:
            old_key, old = next(iter(self._targets.items()))
            if old.running is not None or old_key == key:
                break
            del self._targets[old_key]
        return slot


# ------------------------------------------------------------------------------ metrics
def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, labels=list(labels))


def _single(name: str, doc: str, number: float) -> Any:
    """A gauge with one sample and no labels."""
    gauge = _gauge(name, doc)
    gauge.add_metric([], float(number))
    return gauge


class ProbeCollector:
    """One probe's metrics, as prometheus_client collects them."""

    def __init__(self, result: ProbeResult, age_s: float) -> None:
        self.result = result
        self.age_s = age_s

    def collect(self) -> Iterable[Metric]:
        r = self.result
        remaining, limit = r.rate_limit or (None, None)
        for name, doc, number in (
            ("probe_success", "1 when no check failed or broke (warnings allowed)", r.success),
            ("probe_duration_seconds", "How long the probe's checks took", r.duration_s),
            (
                "probe_result_age_seconds",
                "Age of the result served: above 0 when it is an earlier probe's, kept because "
                "the target is probed at most once per minimum interval",
                self.age_s,
            ),
            (
                "tls_cert_expiry_timestamp_seconds",
                "When the registry's TLS certificate expires (Unix time)",
                r.cert_expiry,
            ),
            (
                "rate_limit_remaining",
                "Pulls left in the registry's rate-limit window (read with a HEAD)",
                remaining,
            ),
            ("rate_limit_limit", "Pulls allowed per rate-limit window (read with a HEAD)", limit),
        ):
            if number is not None:  # no sample rather than a made-up value
                yield _single(f"registry_diagnose_{name}", doc, number)
        status = _gauge(
            "registry_diagnose_check_status",
            "Status of each check of the probe, one-hot over pass, warn, fail, skip, error",
            ["check", "status"],
        )
        for check, got in r.checks:
            for s in Status:
                status.add_metric([check, s.value], 1.0 if s.value == got else 0.0)
        yield status
        phase = _gauge(
            "registry_diagnose_phase_duration_seconds",
            "Duration of each step of a pull: dns, connect, tls, token, manifest, and a blob's "
            "first byte (blob_first_byte); a step that failed or did not run has no sample",
            ["phase"],
        )
        for name, seconds in r.phases.items():
            phase.add_metric([name], seconds)
        yield phase
        finding = _gauge(
            "registry_diagnose_finding",
            "1 for every warning, failure or error of the probe, by check and code",
            ["check", "code", "status"],
        )
        for p in r.problems:
            finding.add_metric([p.check, p.code, p.status], 1.0)
        yield finding


class ExporterCollector:
    """The exporter's own state for /metrics: probes by outcome, in flight, the limits."""

    def __init__(self, prober: Prober) -> None:
        self.prober = prober

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily

        p = self.prober
        outcomes = CounterMetricFamily(
            "registry_diagnose_exporter_probes",
            "Scrapes of /probe by module and outcome: probed (the checks ran), cached (an "
            "earlier or concurrent probe's result served), busy (no result to serve: 503)",
            labels=["module", "outcome"],
        )
        with p._lock:
            counts = sorted(p.outcomes.items())
            values = (p.in_flight, p.peak_in_flight, p.pending, len(p._targets))
        for (module, outcome), n in counts:
            outcomes.add_metric([module, outcome], float(n))
        yield outcomes
        for name, doc, value in (
            ("probes_in_flight", "Probes running now", values[0]),
            ("probes_in_flight_peak", "Most probes ever running at once", values[1]),
            ("scrapes_pending", "Scrapes of /probe inside the exporter now", values[2]),
            ("targets", "Targets whose last result is kept", values[3]),
            ("max_probes_in_flight", "The bound on probes running at once", p.max_in_flight),
            ("min_interval_seconds", "Least time between two probes of a target", p.min_interval_s),
        ):
            yield _single(f"registry_diagnose_exporter_{name}", doc, value)


def exporter_registry(prober: Prober) -> CollectorRegistry:
    """What /metrics serves: the process, platform and GC collectors and the exporter's own."""
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
    )

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(ExporterCollector(prober))
    return registry


def probe_registry(result: ProbeResult, age_s: float) -> CollectorRegistry:
    """A registry made for one /probe answer: that probe's metrics only."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(ProbeCollector(result, age_s))
    return registry


# --------------------------------------------------------------------------------- HTTP
INDEX = b"""registry-diagnose exporter
/metrics                          the exporter's own metrics
/probe?target=REF&module=NAME     probe a registry or an image (module optional)
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ExporterServer
    server_version = "registry-diagnose"

    def do_GET(self) -> None:
        try:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._expose(self.server.metrics)
            elif url.path == "/probe":
                self._probe(url.query)
            elif url.path == "/":
                self._text(200, INDEX.decode())
            else:
                self._text(404, "not found: /metrics or /probe?target=REF&module=NAME")
        except Exception as exc:  # one line, never a traceback in the log
            with contextlib.suppress(OSError):
                self._text(500, f"internal error: {type(exc).__name__}")

    def _probe(self, query: str) -> None:
        from diagnose.modules import ModuleError

        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=8, strict_parsing=False)
        except ValueError:
            self._text(400, "too many query parameters")
            return
        unknown = sorted(set(params) - {"target", "module"})
        if unknown or any(len(v) != 1 for v in params.values()):
            self._text(400, "only target= and module= are taken, once each")
            return
        module = params.get("module", [""])[0] or None
        target = params.get("target", [""])[0]
        prober = self.server.prober
        budget = _budget(self.headers.get(SCRAPE_TIMEOUT_HEADER), prober.default_budget(module))
        try:
            result, age = prober.probe(target, module, budget)
        except ProbeInputError as exc:
            self._text(400, f"target: {exc}")
        except UnknownModule:
            known = ", ".join(sorted(prober.modules))
            self._text(400, f"unknown module (configured: {known})")
        except Busy as exc:
            self._text(503, f"busy: {exc}", retry_after=True)
        except ModuleError as exc:
            self._text(500, str(exc))
        else:
            self._expose(probe_registry(result, age))

    def _expose(self, registry: CollectorRegistry) -> None:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        body = encoder(registry)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _text(self, code: int, text: str, retry_after: bool = False) -> None:
        body = (text.rstrip("\n") + "\n").encode("utf-8", "replace")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if retry_after:
            self.send_header("Retry-After", "5")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every few seconds per target would bury everything else."""


def _budget(header: str | None, default: float) -> float:
    """Time a probe may take: Prometheus's scrape timeout less the offset, as blackbox does."""
    try:
        given = float(header) if header else None
    except ValueError:
        given = None
    if given is None or not 0 < given < 86_400:
        return default
    return max(0.5, given - TIMEOUT_OFFSET_S)


class ExporterServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # Prometheus scrapes every target of a job at about the same time

    def __init__(self, address: tuple[str, int], prober: Prober) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.prober = prober
        self.metrics = exporter_registry(prober)
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            print(f"diagnose serve: {type(exc).__name__} answering a scrape", file=sys.stderr)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (every address) -> (host, port); ValueError if not."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r}: write HOST:PORT, [IPv6]:PORT or :PORT")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ":PORT" asks for every address
    return host, int(port)


def serve(server: ExporterServer, announce: Callable[[str], None]) -> None:
    """Answer scrapes until SIGTERM or SIGINT (a container's stop), then return. The server
    runs in a thread so that the signal handler never has to stop the loop it interrupts;
    it works as process 1 of a container, which gets no default signal handling."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=server.serve_forever, name="exporter", daemon=True)
    thread.start()
    announce(f"diagnose serve: listening on {server.url} (/metrics, /probe?target=REF&module=NAME)")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        for s, handler in previous.items():
            signal.signal(s, handler)
