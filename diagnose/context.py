"""What a check is handed: the registry, the run's options, its deadline and shared services.

Checks talk to each other only through the run: `ctx.result("dns")` waits for a dependency and
returns its finished result (status and summary, for the report), and `ctx.fact(KEY)` returns
what it learnt for others under a typed key (diagnose.facts); never the other check's code.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from diagnose.credentials import Credential, UserInput, find_credential
from diagnose.dockerconfig import config_dir
from diagnose.facts import ACTIVE_RUNTIMES, Fact
from diagnose.models import CheckResult, ImageRef, Registry
from diagnose.options import default
from diagnose.resolve import HostResolver
from diagnose.retry import with_retries

if TYPE_CHECKING:
    import ssl

    from diagnose import http as web
    from diagnose.x509pool import Trust

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """Everything that changes how checks look at the world: the run options (declared, with
    their defaults, in diagnose.options) as the run uses them, and the environment the command
    was given."""

    host_root: Path = default("host_root")
    docker_config: Path | None = None
    ca_bundle: Path | None = None
    nameserver: tuple[str, int] | None = None
    insecure: bool = False
    timeout_s: float = default("timeout")
    tries: int = default("tries")
    credentials: UserInput = field(default_factory=UserInput)
    # what the identity must be allowed to do, and whether to wait for it to be granted
    require: tuple[str, ...] = ("pull",)
    wait_for: str | None = None
    propagation_timeout_s: float = default("propagation_timeout")
    docker_host: str | None = None
    # throughput (opt-in: it moves data and takes time)
    throughput: bool = False
    image: str | None = None
    # the platform an index is resolved for ("os/arch[/variant]"; None: this host's)
    platform: str | None = None
    # the runtimes whose pulls are diagnosed (): every one found on the host
    runtimes: tuple[str, ...] = ()
    # Kubernetes nodes: an image pull secret, the kubelet's credential provider settings
    pull_secret: Path | None = None
    provider_config: Path | None = None
    provider_bin_dir: Path | None = None
    streams: int = default("streams")
    throughput_seconds: float = default("throughput_seconds")
    slow_below_mbs: float = default("slow_below")
    push_test: bool = False
    push_bytes: int = default("push_bytes")
    speedtest_mini: str | None = None
    speedtest_server: int | None = None
    # False for repeated probes (serve, watch): the manifest is read with a HEAD only where the
    # registry counts pulls (it sends RateLimit headers), so that a probe never spends one
    spend_pulls: bool = True
    extra: dict[str, str] = field(default_factory=dict)
    # the environment variables the command was given (proxies, HOME, DOCKER_HOST, PATH...)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


class RunState:
    """Shared by all checks of one run; thread-safe."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.resolver = HostResolver(options.nameserver, options.host_root)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._results: dict[tuple[str | None, str], CheckResult] = {}
        self._expected: set[tuple[str | None, str]] = set()
        self._facts: dict[tuple[str | None, Fact[Any]], object] = {}
        self._once: dict[tuple[str | None, str], list[Any]] = {}
        self._sessions: dict[bool, web.Session] = {}
        self.started = time.monotonic()
        self.deadline = self.started + options.timeout_s

    def expect(self, keys: Iterable[tuple[str | None, str]]) -> None:
        """The (registry, check id) pairs this run will produce results for."""
        with self._lock:
            self._expected.update(keys)

    def record(self, result: CheckResult) -> None:
        with self._changed:
            self._results[(result.registry, result.id)] = result
            self._changed.notify_all()

    def result(self, registry: str | None, check_id: str, deadline: float) -> CheckResult | None:
        """A check's result, waiting (until deadline) for it if it is part of this run."""
        with self._changed:
            while True:
                for key in ((registry, check_id), (None, check_id)):
                    if key in self._results:
                        return self._results[key]
                if not ({(registry, check_id), (None, check_id)} & self._expected):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    registries: tuple[Registry, ...] = ()

    def put(self, registry: str | None, key: Fact[T], value: T) -> None:
        with self._lock:
            self._facts[(registry, key)] = value

    def fact(self, registry: str | None, key: Fact[T]) -> T | None:
        """The fact for this registry, else the host's (host checks put theirs under None)."""
        with self._lock:
            for where in (registry, None):
                if (where, key) in self._facts:
                    return self._facts[(where, key)]  # type: ignore[return-value]
        return None

    def once(self, registry: str | None, key: str, compute: Callable[[], T]) -> T:
        """compute() run once per run and key, even when checks ask at the same moment; later
        callers get its value, or its exception again."""
        with self._lock:
            slot = self._once.setdefault((registry, key), [threading.Lock(), None, None])
        with slot[0]:
            if slot[1] is None and slot[2] is None:
                try:
                    slot[1] = (compute(),)
                except Exception as exc:
                    slot[2] = exc
        if slot[2] is not None:
            raise slot[2]
        assert slot[1] is not None
        return slot[1][0]  # type: ignore[no-any-return]

    def credential(self, registry: Registry) -> Credential:
        """The credential docker would use for registry, looked up once per run."""
        return self.once(
            registry.login_server,
            "credential",
            lambda: find_credential(
                registry.login_server,
                self.options.credentials,
                config_dir(self.options.docker_config, self.options.environ),
                self.options.environ,
                pull_secret=self.options.pull_secret,
            ),
        )

    def http_context(self, verify: bool) -> ssl.SSLContext:
        """The context all HTTP sessions share (see diagnose.http: urllib3 matches host names
        itself there, so its changes to the context are the same for everyone); kept for the
        process (diagnose.tlscontext)."""
        from diagnose.tlscontext import verifying_context

        bundle = self.options.ca_bundle
        return verifying_context(
            [bundle] if bundle else [], verify=verify, role="http", environ=self.options.environ
        )

    def session(self, verify: bool) -> web.Session:
        """The HTTP session every check of the run shares: one keep-alive connection pool per
        host, so that checks talking to the same registry do not each pay for a handshake."""
        with self._lock:
            session = self._sessions.get(verify)
        if session is not None:
            return session
        from diagnose.http import make_session

        made = make_session(self.http_context(verify), pin=self.pin, trust=self.go_trust())
        with self._lock:
            session = self._sessions.setdefault(verify, made)
        if session is not made:
            made.close()
        return session

    def go_trust(self) -> Trust | None:
        """The system store and --ca-bundle as Go clients hold them (None: unreadable bundle,
        which the HTTP context reports first)."""
        from diagnose.x509pool import CAFileError, Trust, pool_from_files

        bundle = self.options.ca_bundle
        try:
            files = pool_from_files([bundle] if bundle else [])
        except CAFileError:
            return None
        return Trust(files, environ=self.options.environ)

    def pin(self, host: str) -> str | None:
        """The address to connect to when the run resolves names itself (--nameserver)."""
        if self.options.nameserver is None:
            return None
        left = max(0.1, min(5.0, self.deadline - time.monotonic()))
        addrs = self.resolver.addresses(host, 443, left)
        return addrs[0] if addrs else None

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()

    def ssl_context(self, verify: bool = True) -> ssl.SSLContext:
        """System trust store plus --ca-bundle: what docker on this host would trust, with
        OpenSSL's verdicts brought close to Go's. Kept for the process and shared: never
        change it (urllib3 gets contexts of its own, `http_context`)."""
        from diagnose.tlscontext import verifying_context

        bundle = self.options.ca_bundle
        return verifying_context(
            [bundle] if bundle else [], verify=verify, environ=self.options.environ
        )


NO_IMAGE = "no image reference given (name one: REGISTRY/REPO:TAG, or --image)"


def image_of(ctx: CheckContext) -> tuple[Registry, ImageRef]:
    """The registry and the image reference of an image check (its skip_reason saw to it)."""
    reg = ctx.registry
    assert reg is not None and reg.image is not None
    return reg, reg.image


def pushing(options: Options) -> bool:
    """Whether the run asks for push (--require push or --push-test)."""
    return "push" in options.require


def _process_table() -> list[dict[str, Any]]:
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            out.append(
                {
                    "pid": proc.info["pid"],
                    "name": proc.info["name"] or "",
                    "cmdline": [str(a) for a in proc.info["cmdline"] or []],
                }
            )
        except (psutil.Error, OSError):
            continue
    return out


class CheckContext:
    """The view of the run one check gets."""

    def __init__(self, state: RunState, registry: Registry | None, deadline: float) -> None:
        self._state = state
        self.registry = registry
        self.deadline = deadline
        self.waited = 0.0
        self.waiting_since: float | None = None

    @property
    def options(self) -> Options:
        return self._state.options

    @property
    def resolver(self) -> HostResolver:
        return self._state.resolver

    @property
    def registries(self) -> tuple[Registry, ...]:
        """Every registry of the run (host checks judge the host against each of them)."""
        return self._state.registries

    @property
    def live_host(self) -> bool:
        """Whether host facts come from this very machine (no --host-root elsewhere): only
        then are its processes and its default docker socket looked at."""
        return self.options.host_root.resolve() == Path("/")

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def budget(self, cap: float) -> float:
        """A timeout for one operation: at most cap, never past the check's deadline."""
        # keep a margin so the check can still report before the runner gives up on it
        return max(0.05, min(cap, self.remaining() - 0.25))

    def result(self, check_id: str) -> CheckResult | None:
        """A dependency's result; waits for it while it runs (None if it is not in the run)."""
        t0 = time.monotonic()
        reg = self.registry.login_server if self.registry else None
        self.waiting_since = t0
        try:
            # waiting is bounded by the run, not by this check's own time limit...
            return self._state.result(reg, check_id, self._state.deadline)
        finally:
            waited = time.monotonic() - t0
            self.waited += waited
            # ...and does not eat into it
            self.deadline = min(self._state.deadline, self.deadline + waited)
            self.waiting_since = None

    def put(self, key: Fact[T], value: T) -> None:
        """Leave a fact (a token, a manifest: never reported) for the checks after this one."""
        self._state.put(self.registry.login_server if self.registry else None, key, value)

    def fact(self, key: Fact[T]) -> T | None:
        """A fact a dependency left (wait for its result first, so that it has finished)."""
        return self._state.fact(self.registry.login_server if self.registry else None, key)

    def once(self, key: str, compute: Callable[[], T]) -> T:
        """compute() once per run for this registry and key (see RunState.once)."""
        return self._state.once(self.registry.login_server if self.registry else None, key, compute)

    def processes(self) -> list[dict[str, Any]]:
        """This machine's process table ({pid, name, cmdline}), read once per run for every
        check that looks at it; empty under --host-root (the processes are not that host's)."""
        if not self.live_host:
            return []
        return self._state.once(None, "processes", _process_table)

    def in_play(self, *runtimes: str) -> bool:
        """Whether a pull on this host may be made by one of these runtimes: chosen with
        --runtime, else found by the container-runtimes check."""
        if self.options.runtimes:
            return bool(set(self.options.runtimes) & set(runtimes))
        self.result("container-runtimes")
        active: tuple[str, ...] = self.fact(ACTIVE_RUNTIMES) or ()
        return bool(set(active) & set(runtimes))

    def credential(self) -> Credential:
        """The credential docker would use for this registry (raises CredentialError)."""
        assert self.registry is not None
        return self._state.credential(self.registry)

    def host_path(self, path: str) -> Path:
        """A host file (/etc/...) as seen under --host-root."""
        return self.options.host_root / path.lstrip("/")

    def ssl_context(self, verify: bool = True) -> ssl.SSLContext:
        return self._state.ssl_context(verify)

    def pin(self, host: str) -> str | None:
        """The address to connect to when the run resolves names itself (--nameserver)."""
        if self.options.nameserver is None:
            return None
        addrs = self.resolver.addresses(host, 443, self.budget(5.0))
        return addrs[0] if addrs else None

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment variables the command was given (not necessarily os.environ)."""
        return self.options.environ

    def proxies(self, url: str) -> dict[str, str]:
        """The proxy for url as the Go clients pick it from this run's environment (NO_PROXY
        honoured, loopback never proxied), in the form requests takes."""
        from diagnose.proxy import requests_proxies

        return requests_proxies(url, self.options.environ)

    def which(self, name: str) -> str | None:
        """A program on this run's PATH."""
        import shutil

        return shutil.which(name, path=self.options.environ.get("PATH", os.defpath))

    def http(self, verify: bool = True) -> web.Session:
        """A requests session trusting what docker trusts and resolving as the run does; shared
        by the run's checks (keep-alive connections), so never change its settings."""
        return self._state.session(verify)

    def retry(
        self, fn: Callable[[], T], transient: Callable[[BaseException], bool]
    ) -> tuple[T, int]:
        return with_retries(
            fn, transient=transient, tries=self.options.tries, remaining=self.remaining
        )

    def close(self) -> None:
        """Nothing of the check's own to release: the run closes the shared sessions."""
