"""The `diagnose` command line.

Only wiring lives here: options become `RunSettings`, then an `Options`; names become `Registry`
objects; checks and report formats come from entry points. Heavy imports wait until a command
runs, so that `diagnose --help` starts fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from diagnose import __version__
from diagnose.choices import FailOn, Need, Runtime

if TYPE_CHECKING:
    from diagnose.context import Options
    from diagnose.credentials import UserInput
    from diagnose.models import Registry, Report
    from diagnose.plugins import BrokenPlugin
    from diagnose.render import Renderer

app = typer.Typer(
    name="diagnose",
    help="Find out why this machine cannot pull from or push to a container registry.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # never print locals: they may hold secrets
    rich_markup_mode=None,  # plain help: rendering it with rich costs more than the run
)

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
F = TypeVar("F", bound=Any)


def die(message: str) -> NoReturn:
    """Bad usage or bad input: one line on stderr, exit code 2, no traceback."""
    typer.echo(f"diagnose: error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def shown(text: str, limit: int = 60) -> str:
    """User input echoed back safely: printable, bounded, never with user-info."""
    head, sep, tail = text.partition("://")
    rest = tail if sep else head
    hostpart, slash, path = rest.partition("/")
    if "@" in hostpart:
        hostpart = "…@" + hostpart.rpartition("@")[2]
    text = (head + sep if sep else "") + hostpart + slash + path
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return repr(clean if len(clean) <= limit else clean[: limit - 1] + "…")


def _split(value: str | list[str] | None) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _duration(text: str) -> float:
    """90, 90s, 10m, 1h -> seconds; bad input exits 2."""
    t = str(text).strip().lower()
    unit = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], 0)
    number = t[:-1] if unit else t
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        die(f"duration {shown(str(text))}: use seconds or a number with s, m or h (90s, 10m)")
    if not 1 <= value <= 24 * 3600:
        die(f"duration {shown(str(text))}: between 1s and 24h")
    return value


# ------------------------------------------------------------------------ shared options
RegistriesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="REGISTRY",
        help="Registry login servers (myregistry.azurecr.io, ghcr.io, localhost:5000), ACR short "
        "names or image references. None: every registry in the docker config.",
        show_default=False,
    ),
]
ChecksOpt = Annotated[
    str | None, typer.Option(metavar="IDS", help="Only these checks (comma-separated), plus needs.")
]
SkipOpt = Annotated[str | None, typer.Option(metavar="IDS", help="Leave these checks out.")]
FailOnOpt = Annotated[
    FailOn | None, typer.Option(metavar="LEVEL", help="error (default) or warn: what exits 1.")
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(min=1.0, max=3600.0, metavar="SECONDS", help="Deadline for the run (30)."),
]
TriesOpt = Annotated[
    int | None, typer.Option(min=1, max=10, metavar="N", help="Attempts for transient errors (3).")
]
HostRootOpt = Annotated[
    Path | None, typer.Option(metavar="DIR", help="Read host files (/etc/...) under DIR.")
]
DockerConfigOpt = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Docker config dir (default $DOCKER_CONFIG, ~/.docker)."),
]
CaBundleOpt = Annotated[
    Path | None, typer.Option(metavar="FILE", help="Extra CA certificates (PEM) to trust.")
]
NameserverOpt = Annotated[
    str | None, typer.Option(metavar="IP[:PORT]", help="Resolve every name with this DNS server.")
]
InsecureOpt = Annotated[
    bool | None,
    typer.Option("--insecure", help="Allow plain HTTP or unverified TLS, as docker does."),
]
RepositoryOpt = Annotated[
    str | None, typer.Option(metavar="REPO", help="Repository for repository-level checks.")
]
UsernameOpt = Annotated[
    str | None, typer.Option("--username", "-u", metavar="USER", help="User to log in as.")
]
PasswordStdinOpt = Annotated[
    bool | None, typer.Option("--password-stdin", help="Read the password from standard input.")
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(metavar="FILE", help="`az acr login --expose-token` output to use."),
]
RequireOpt = Annotated[
    Need | None, typer.Option(metavar="ACTION", help="pull (default) or push: what must work.")
]
WaitForOpt = Annotated[
    Need | None, typer.Option(metavar="ACTION", help="Wait until this action is granted.")
]
PropagationOpt = Annotated[
    str | None, typer.Option(metavar="DURATION", help="How long --wait-for waits (10m).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No live progress view.")]
ThroughputOpt = Annotated[
    bool | None, typer.Option("--throughput", help="Measure pull speed (and internet speed).")
]
ImageOpt = Annotated[
    str | None,
    typer.Option(
        metavar="REF",
        help="Image to diagnose: a full reference, or REPO:TAG on the named registries.",
    ),
]
PlatformOpt = Annotated[
    str | None,
    typer.Option(metavar="OS/ARCH", help="Platform to resolve an index for (this host's)."),
]
RuntimeOpt = Annotated[
    list[Runtime] | None,
    typer.Option(
        metavar="RUNTIME",
        help="Whose pull to diagnose: docker, podman, crio, containerd, all (repeatable; "
        "default auto: every runtime found on the host).",
    ),
]
PullSecretOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="An image pull secret (Secret manifest, YAML or JSON, or its .dockerconfigjson): "
        "the credential the kubelet would use.",
    ),
]
ProviderConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--image-credential-provider-config",
        metavar="FILE",
        help="The kubelet's CredentialProviderConfig (default: looked for on the host).",
    ),
]
ProviderBinDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--image-credential-provider-bin-dir",
        metavar="DIR",
        help="Where the kubelet finds credential provider binaries.",
    ),
]
StreamsOpt = Annotated[
    int | None, typer.Option(min=1, max=16, metavar="N", help="Parallel pull streams (3).")
]
ThroughputSecondsOpt = Annotated[
    float | None,
    typer.Option(min=1.0, max=300.0, metavar="SECONDS", help="Time budget of a speed test (10)."),
]
SlowBelowOpt = Annotated[
    float | None, typer.Option(min=0.0, metavar="MB/S", help="Warn under this pull speed (2).")
]
PushTestOpt = Annotated[
    bool | None, typer.Option("--push-test", help="Also measure push (uploads, then deletes).")
]
PushBytesOpt = Annotated[
    int | None, typer.Option(min=1024, max=1024**3, metavar="BYTES", help="Push test size.")
]
SpeedtestMiniOpt = Annotated[
    str | None, typer.Option(metavar="URL", help="Measure internet speed against this Mini.")
]
SpeedtestServerOpt = Annotated[
    int | None, typer.Option(metavar="ID", help="speedtest.net server id to measure against.")
]
DockerHostOpt = Annotated[
    str | None, typer.Option(metavar="URL", help="Docker daemon socket (unix:///..., tcp://...).")
]


@dataclass
class RunSettings:
    """Every option a run can take, as given (None: not given)."""

    registries: list[str] | None = None
    checks: str | list[str] | None = None
    skip: str | list[str] | None = None
    fail_on: FailOn | None = None
    timeout: float | None = None
    tries: int | None = None
    host_root: Path | None = None
    docker_config: Path | None = None
    ca_bundle: Path | None = None
    nameserver: str | None = None
    insecure: bool | None = None
    repository: str | None = None
    username: str | None = None
    password_stdin: bool | None = None
    identity_token_file: Path | None = None
    require: Need | None = None
    wait_for: Need | None = None
    propagation_timeout: str | None = None
    docker_host: str | None = None
    throughput: bool | None = None
    image: str | None = None
    platform: str | None = None
    runtime: list[Runtime] | None = None
    pull_secret: Path | None = None
    image_credential_provider_config: Path | None = None
    image_credential_provider_bin_dir: Path | None = None
    streams: int | None = None
    throughput_seconds: float | None = None
    slow_below: float | None = None
    push_test: bool | None = None
    push_bytes: int | None = None
    speedtest_mini: str | None = None
    speedtest_server: int | None = None

    def fill(self, other: dict[str, Any]) -> RunSettings:
        """Take values from a config file where the command line gave none."""
        out = replace(self)
        for f in fields(self):
            if getattr(out, f.name) is None and f.name in other:
                setattr(out, f.name, other[f.name])
        return out


def _prepare(s: RunSettings) -> tuple[Options, list[Registry], str, list[str]]:
    creds = _credentials(s.username, bool(s.password_stdin), s.identity_token_file)
    options = _options(s)
    wait_s = _duration(s.propagation_timeout or "10m")
    options = replace(
        options,
        credentials=creds,
        require=("pull", "push") if s.require is Need.push or s.push_test else ("pull",),
        wait_for=s.wait_for.value if s.wait_for else None,
        propagation_timeout_s=wait_s,
        timeout_s=max(options.timeout_s, wait_s + 30.0) if s.wait_for else options.timeout_s,
    )
    names = list(s.registries or [])
    if s.wait_for and not s.repository and not any(r.count("/") for r in names):
        die("--wait-for needs the repository to watch: --repository REPO")
    targets, source, notes = _targets(names, options, bool(s.insecure), s.repository, s.image)
    return options, targets, source, notes


def _execute(s: RunSettings, *, live: bool) -> tuple[Report, Options]:
    """Run the selected checks against the targets; the report and the options used."""
    options, targets, source, notes = _prepare(s)
    from diagnose import plugins, runner

    found, broken = plugins.load_checks()
    try:
        selected = runner.select(found, _split(s.checks), _split(s.skip))
    except ValueError as exc:
        die(str(exc))
    if not targets:
        notes.append(
            "No registry was named and none is in the docker config: only this machine was "
            "checked. Name one: `diagnose check-health myregistry.azurecr.io`."
        )
    if live and sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        from diagnose.live import LiveView

        with LiveView() as view:
            report = runner.run(
                selected, targets, options, target_source=source, listener=view, notes=notes
            )
    else:
        report = runner.run(selected, targets, options, target_source=source, notes=notes)
    return (_with_broken(report, broken) if broken else report), options


def _run_options(
    checks: ChecksOpt = None,
    skip: SkipOpt = None,
    fail_on: FailOnOpt = None,
    timeout: TimeoutOpt = None,
    tries: TriesOpt = None,
    host_root: HostRootOpt = None,
    docker_config: DockerConfigOpt = None,
    ca_bundle: CaBundleOpt = None,
    nameserver: NameserverOpt = None,
    insecure: InsecureOpt = None,
    repository: RepositoryOpt = None,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = None,
    identity_token_file: TokenFileOpt = None,
    require: RequireOpt = None,
    wait_for: WaitForOpt = None,
    propagation_timeout: PropagationOpt = None,
    docker_host: DockerHostOpt = None,
    throughput: ThroughputOpt = None,
    image: ImageOpt = None,
    platform: PlatformOpt = None,
    runtime: RuntimeOpt = None,
    pull_secret: PullSecretOpt = None,
    image_credential_provider_config: ProviderConfigOpt = None,
    image_credential_provider_bin_dir: ProviderBinDirOpt = None,
    streams: StreamsOpt = None,
    throughput_seconds: ThroughputSecondsOpt = None,
    slow_below: SlowBelowOpt = None,
    push_test: PushTestOpt = None,
    push_bytes: PushBytesOpt = None,
    speedtest_mini: SpeedtestMiniOpt = None,
    speedtest_server: SpeedtestServerOpt = None,
) -> None:
    """The options every running command takes (check-health, preflight, bundle): declared
    once here and attached to each command by `run_options`."""


def run_options(func: F) -> F:
    """Give a command (taking **run) the shared run options, as Typer reads them: from the
    signature."""
    import inspect

    own = [
        p
        for p in inspect.signature(func, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    shared = list(inspect.signature(_run_options, eval_str=True).parameters.values())
    func.__signature__ = inspect.Signature([*own, *shared])
    return func


def _version(value: bool) -> None:
    if value:
        typer.echo(f"registry-diagnose {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Find out why this machine cannot pull from or push to a container registry."""


# ======================================================================================
# Fleet and pod (merge; check-health --pod, --node-name, --hold): thin wrappers of
# diagnose.fleet and diagnose.pod, kept together so that they move as one block.
# ======================================================================================
PodOpt = Annotated[
    Path | None,
    typer.Option(
        "--pod",
        metavar="FILE",
        help="A pod as `kubectl get pod NAME -o yaml` (or -o json) prints it: every container "
        "and init container image is checked, and the pod's status is explained.",
    ),
]
NodeNameOpt = Annotated[
    str | None,
    typer.Option(
        "--node-name",
        metavar="NAME",
        help="The node this run describes, recorded in the report (default: $NODE_NAME, as "
        "the downward API sets it).",
    ),
]
HoldOpt = Annotated[
    bool,
    typer.Option(
        "--hold",
        help="After the report, wait until stopped (a DaemonSet pod: one report, no restarts).",
    ),
]


def _with_node(report: Report, given: str | None) -> Report:
    """The node's name in the report: --node-name, else NODE_NAME from the downward API."""
    name, source = (given, "option") if given else (os.environ.get("NODE_NAME"), "env")
    name = (name or "").strip()
    if not name:
        return report
    if len(name) > 253 or not name.isprintable():
        die(f"node name {shown(name)}: at most 253 printable characters")
    return replace(report, node=(name, source))


def _pod_run(settings: RunSettings, path: Path, *, live: bool) -> Report:
    """One run per batch of the pod's images (one image per registry per run), as one report
    with the pod's own status first."""
    from diagnose.pod import PodError, combine, pod_result, read_pod, rounds

    if settings.registries or settings.image:
        die("--pod names the images: give no REGISTRY or --image with it")
    try:
        pod = read_pod(path)
    except PodError as exc:
        die(str(exc))
    insecure = bool(settings.insecure)
    batches = rounds(pod.references, lambda ref: _image(ref, insecure).login_server)
    reports = [
        _execute(replace(settings, registries=batch), live=live and len(batches) == 1)[0]
        for batch in batches
    ]
    return combine(reports, pod_result(pod, pull_secret_given=settings.pull_secret is not None))


def _exit_on_stop() -> None:
    """SIGTERM and SIGINT end the process with 0: as PID 1 in a container a signal without a
    handler is ignored, and the pod would wait out its grace period."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))


def _hold() -> None:
    """Sleep until stopped (the handlers of _exit_on_stop end it)."""
    import signal

    sys.stdout.flush()
    while True:
        signal.pause()


def merge(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="REPORT...",
            help="JSON reports: files, directories (their *.json), or - for a stream on stdin "
            "(`kubectl logs --prefix` lines too).",
            show_default=False,
        ),
    ],
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", metavar="FORMAT", help="terminal, json, markdown, html."),
    ] = "terminal",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write it here.")
    ] = None,
) -> None:
    """Fold many reports (one per node) into one: the causes, with the hosts that share them."""
    from diagnose.fleet import FleetInputError, fleet_formats, load_fleet_renderer, merge_inputs

    if fmt not in fleet_formats():
        die(f"unknown format {shown(fmt)}; choose from {', '.join(sorted(fleet_formats()))}")
    try:
        fleet = merge_inputs(inputs, sys.stdin)
    except FleetInputError as exc:
        die(str(exc))
    use_color = output is None and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    _write(load_fleet_renderer(fmt).render_fleet(fleet, use_color), output)
    raise typer.Exit(fleet.exit_code)


def _write(text: str, output: Path | None) -> None:
    """Text to stdout, or to a file atomically (a temporary file, then renamed)."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output)
    except OSError as exc:
        die(f"cannot write {shown(str(output))}: {exc.strerror}")


# ==================================================================== end of fleet and pod


@app.command("check-health")
@run_options
def check_health(
    registries: RegistriesArg = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="terminal (default), json, markdown, html, junit, github or sarif.",
        ),
    ] = "terminal",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write the report here.")
    ] = None,
    quiet: QuietOpt = False,
    pod: PodOpt = None,  # fleet and pod block (below)
    node_name: NodeNameOpt = None,
    hold: HoldOpt = False,
    **run: Any,
) -> None:
    """Check every step from this machine to the registry and say what to fix."""
    settings = RunSettings(registries=registries, **run)
    renderer = _renderer(fmt)
    if pod is not None:
        report = _pod_run(settings, pod, live=not quiet)
    else:
        report, _ = _execute(settings, live=not quiet)
    report = _with_node(report, node_name)
    warn = settings.fail_on is FailOn.warn
    if hold:
        _exit_on_stop()
    _emit(report, renderer, output, fail_on_warn=warn)
    if hold:
        _hold()
    raise typer.Exit(report.exit_code(fail_on_warn=warn))


@app.command("preflight")
@run_options
def preflight(
    registries: RegistriesArg = None,
    report_to: Annotated[
        list[str] | None,
        typer.Option(
            "--report",
            metavar="FORMAT:PATH",
            help="Write a report (repeatable): "
            "json, junit, markdown, html, github, sarif; PATH - is stdout.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Settings file (default: diagnose.toml, "
            "or [tool.registry-diagnose] in pyproject.toml).",
        ),
    ] = None,
    **run: Any,
) -> None:
    """The checks as a CI step: a line per check, reports for the pipeline, exit codes."""
    from diagnose.config import ConfigFileError, load_settings

    given = RunSettings(registries=registries, **run)
    try:
        found, path = load_settings(config, Path.cwd())
    except ConfigFileError as exc:
        die(str(exc))
    reports = list(report_to or []) or list(found.pop("report", None) or [])
    settings = given.fill(found)
    outputs = [_report_target(r) for r in reports]
    report, _ = _execute(settings, live=False)
    warn = settings.fail_on is FailOn.warn
    for line in _ci_lines(report, path):
        typer.echo(line)
    for renderer, target in outputs:
        _emit(
            report,
            renderer,
            None if target == "-" else Path(target),
            fail_on_warn=warn,
            color=False,
        )
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        _github_summary(report, Path(summary), warn)
    raise typer.Exit(report.exit_code(fail_on_warn=warn))


@app.command("bundle")
@run_options
def bundle(
    registries: RegistriesArg = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Archive to write (default: a timestamped .tar.gz).",
        ),
    ] = None,
    redact_hosts: Annotated[
        bool, typer.Option("--redact-hosts", help="Replace host names and IP addresses too.")
    ] = False,
    quiet: QuietOpt = False,
    **run: Any,
) -> None:
    """Run check-health and write one archive a support engineer can trust: no secret inside."""
    from diagnose.bundle import BundleError, write_bundle

    settings = RunSettings(registries=registries, **run)
    report, options = _execute(settings, live=not quiet)
    try:
        path, redactions = write_bundle(report, options, output, redact_hosts=redact_hosts)
    except BundleError as exc:
        die(str(exc))
    removed = ", ".join(f"{n} {k}" for k, n in redactions.items()) or "nothing"
    typer.echo(f"{report.status.value.upper()}: bundle written to {path} (redacted: {removed})")
    raise typer.Exit(report.exit_code(fail_on_warn=settings.fail_on is FailOn.warn))


@app.command("wait-for-permission")
def wait_for_permission(
    registry: Annotated[str, typer.Argument(metavar="REGISTRY", help="The registry to watch.")],
    repository: Annotated[
        str, typer.Option(metavar="REPO", help="The repository the grant is for.")
    ],
    action: Annotated[Need, typer.Option(metavar="ACTION", help="push (default) or pull.")] = (
        Need.push
    ),
    propagation_timeout: PropagationOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="FORMAT", help="terminal or json.")
    ] = "terminal",
    quiet: QuietOpt = False,
    username: UsernameOpt = None,
    password_stdin: PasswordStdinOpt = None,
    identity_token_file: TokenFileOpt = None,
    ca_bundle: CaBundleOpt = None,
    nameserver: NameserverOpt = None,
    insecure: InsecureOpt = None,
    docker_config: DockerConfigOpt = None,
    host_root: HostRootOpt = None,
) -> None:
    """Wait until a new role reaches the registry's token service, and say how long it took."""
    settings = RunSettings(
        registries=[registry],
        repository=repository,
        checks="scope",
        wait_for=action,
        require=action,
        propagation_timeout=propagation_timeout,
        username=username,
        password_stdin=password_stdin,
        identity_token_file=identity_token_file,
        ca_bundle=ca_bundle,
        nameserver=nameserver,
        insecure=insecure,
        docker_config=docker_config,
        host_root=host_root,
    )
    renderer = _renderer(fmt)
    report, _ = _execute(settings, live=not quiet)
    _emit(report, renderer, None)
    raise typer.Exit(report.exit_code())


@app.command("explain")
def explain(
    text: Annotated[
        list[str] | None,
        typer.Argument(metavar="MESSAGE", help="An error message to explain.", show_default=False),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", metavar="LOG", help="A log to search (- is stdin).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="FORMAT", help="terminal or json.")
    ] = "terminal",
) -> None:
    """Turn an error message or a whole log into the FAQ answers that fit it."""
    from diagnose.explain import explain_text, read_blob, render_json, render_text

    if fmt not in ("terminal", "json"):
        die(f"unknown format {shown(fmt)}; choose terminal or json")
    if text:
        data, size = " ".join(text).encode("utf-8", "replace"), None
    elif file is not None:
        try:
            data, size = read_blob(sys.stdin.buffer if str(file) == "-" else file)
        except OSError as exc:
            die(f"cannot read {shown(str(file))}: {exc.strerror}")
    elif not sys.stdin.isatty():
        data, size = read_blob(sys.stdin.buffer)
    else:
        die("give an error message, --file LOG, or pipe a log in")
    from diagnose import plugins

    found, _ = plugins.load_checks()
    result = explain_text(data, found, total=size)
    typer.echo(render_json(result) if fmt == "json" else render_text(result), nl=False)
    raise typer.Exit(EXIT_OK if result.candidates else EXIT_PROBLEM)


@app.command("list-checks")
def list_checks(
    fmt: Annotated[str, typer.Option("--format", "-f", help="terminal or json.")] = "terminal",
) -> None:
    """List every registered check (ours and third parties')."""
    import json

    from diagnose import plugins

    found, broken = plugins.load_checks()
    rows: list[dict[str, Any]] = [
        {
            "id": c.id,
            "title": c.title,
            "scope": c.scope,
            "depends_on": list(c.depends_on),
            "timeout_s": c.timeout_s,
            "acr_only": c.acr_only,
            "codes": list(c.codes),
            "faq": list(c.faq_keys),
            "module": type(c).__module__,
        }
        for c in found
    ]
    if fmt == "json":
        typer.echo(json.dumps({"checks": rows, "broken": [b.__dict__ for b in broken]}, indent=2))
        return
    if fmt != "terminal":
        die(f"unknown format {shown(fmt)}; choose terminal or json")
    width = max([len(r["id"]) for r in rows] + [2])
    for r in rows:
        deps = f"  (after {', '.join(r['depends_on'])})" if r["depends_on"] else ""
        scope = "host" if r["scope"] == "host" else "registry"
        typer.echo(f"{r['id']:<{width}}  {scope:<8}  {r['title']}{deps}")
    for b in broken:
        typer.echo(f"{b.name:<{width}}  BROKEN    {b.error}")


app.command("merge")(merge)  # the fleet and pod block: listed after the other commands


# ------------------------------------------------------------------------------- helpers
def _credentials(username: str | None, password_stdin: bool, token_file: Path | None) -> UserInput:
    """Credentials given to this run: never echoed, never put in a report."""
    from diagnose.credentials import CredentialError, UserInput, read_expose_token
    from diagnose.secrets import Secret

    password = None
    if password_stdin:
        if sys.stdin is None or sys.stdin.isatty():
            die("--password-stdin needs the password piped in")
        text = sys.stdin.read(64 * 1024).rstrip("\r\n")
        if not text:
            die("--password-stdin read an empty password")
        password = Secret(text)
    elif os.environ.get("REGISTRY_DIAGNOSE_PASSWORD"):
        password = Secret(os.environ["REGISTRY_DIAGNOSE_PASSWORD"])
    if password is not None and not username and password_stdin:
        die("a password was given without --username")
    if username and password is None:
        die("--username needs a password: --password-stdin or REGISTRY_DIAGNOSE_PASSWORD")
    if not username:
        password = None
    identity = None
    if token_file is not None:
        try:
            identity, _server = read_expose_token(token_file)
        except CredentialError as exc:
            die(str(exc))
    elif os.environ.get("REGISTRY_DIAGNOSE_IDENTITY_TOKEN"):
        identity = Secret(os.environ["REGISTRY_DIAGNOSE_IDENTITY_TOKEN"])
    aad = None
    if os.environ.get("REGISTRY_DIAGNOSE_AAD_TOKEN"):
        aad = Secret(os.environ["REGISTRY_DIAGNOSE_AAD_TOKEN"])
    return UserInput(username=username, password=password, aad_token=aad, identity_token=identity)


def _options(s: RunSettings) -> Options:
    from diagnose.context import Options
    from diagnose.resolve import parse_nameserver

    host_root = Path(s.host_root) if s.host_root is not None else Path("/")
    if not host_root.is_dir():
        die(f"--host-root {shown(str(host_root))} is not a directory")
    ns = None
    if s.nameserver is not None:
        try:
            ns = parse_nameserver(str(s.nameserver))
        except ValueError as exc:
            die(str(exc))
    ca_bundle = Path(s.ca_bundle) if s.ca_bundle is not None else None
    if ca_bundle is not None:
        import ssl

        try:
            ssl.create_default_context().load_verify_locations(cafile=str(ca_bundle))
        except FileNotFoundError:
            die(f"--ca-bundle {shown(str(ca_bundle))} does not exist")
        except (ssl.SSLError, OSError, ValueError):
            die(f"--ca-bundle {shown(str(ca_bundle))} holds no usable PEM certificate")
    return Options(
        host_root=host_root,
        docker_config=Path(s.docker_config) if s.docker_config is not None else None,
        ca_bundle=ca_bundle,
        nameserver=ns,
        insecure=bool(s.insecure),
        timeout_s=float(s.timeout) if s.timeout is not None else 30.0,
        tries=int(s.tries) if s.tries is not None else 3,
        docker_host=str(s.docker_host) if s.docker_host else None,
        throughput=bool(s.throughput),
        image=s.image,
        platform=_platform(s.platform),
        runtimes=_runtimes(s.runtime),
        pull_secret=_existing(s.pull_secret, "--pull-secret"),
        provider_config=_existing(
            s.image_credential_provider_config, "--image-credential-provider-config"
        ),
        provider_bin_dir=Path(s.image_credential_provider_bin_dir)
        if s.image_credential_provider_bin_dir
        else None,
        streams=int(s.streams) if s.streams else 3,
        throughput_seconds=float(s.throughput_seconds) if s.throughput_seconds else 10.0,
        slow_below_mbs=float(s.slow_below) if s.slow_below is not None else 2.0,
        push_test=bool(s.push_test),
        push_bytes=int(s.push_bytes) if s.push_bytes else 16 * 1024 * 1024,
        speedtest_mini=s.speedtest_mini,
        speedtest_server=s.speedtest_server,
    )


def _existing(path: Path | None, option: str) -> Path | None:
    if path is None:
        return None
    if not Path(path).is_file():
        die(f"{option} {shown(str(path))} is not a file")
    return Path(path)


def _runtimes(given: list[Runtime] | None) -> tuple[str, ...]:
    """() for auto (each runtime found on the host); every runtime for `all`."""
    chosen = [Runtime(r) for r in given or []]
    if not chosen or Runtime.auto in chosen:
        return ()
    if Runtime.all in chosen:
        return tuple(r.value for r in Runtime if r not in (Runtime.auto, Runtime.all))
    return tuple(dict.fromkeys(r.value for r in chosen))


def _platform(text: str | None) -> str | None:
    if text is None:
        return None
    from diagnose.oci import PlatformError, parse_platform

    try:
        return str(parse_platform(str(text)))
    except PlatformError as exc:
        die(f"--platform: {exc}")


def _image(text: str, insecure: bool) -> Registry:
    """A registry carrying the image named by text (docker's reference rules)."""
    from diagnose.reference import ReferenceError, parse_reference
    from diagnose.target import TargetError, registry_for_image

    try:
        return registry_for_image(parse_reference(text), insecure=insecure)
    except (ReferenceError, TargetError) as exc:
        die(f"image {shown(text)}: {exc}")


def _with_image(parsed: list[Registry], image: str, named: bool, insecure: bool) -> list[Registry]:
    """--image: a full reference adds (or fills) its registry; REPO:TAG applies to the
    registries named on the command line, and otherwise is read as docker reads it."""
    from diagnose.reference import looks_like_domain

    first = image.strip().split("/", 1)[0]
    full = "/" in image and looks_like_domain(first)
    if full or not named or not parsed:
        target = _image(image, insecure)
        out = [r for r in parsed if r.login_server != target.login_server or r.image]
        return [*out, target]
    return [
        r
        if r.image
        else replace(
            _image(f"{r.login_server}/{image.strip()}", insecure),
            notes=r.notes,
            is_acr=r.is_acr,
            cloud=r.cloud,
        )
        for r in parsed
    ]


def _targets(
    names: list[str],
    options: Options,
    insecure: bool,
    repository: str | None,
    image: str | None = None,
) -> tuple[list[Registry], str, list[str]]:
    from diagnose import dockerconfig
    from diagnose.reference import is_image_reference
    from diagnose.target import TargetError, parse_registry, valid_repository

    notes: list[str] = []
    source = "argument"
    if names:
        parsed = []
        for name in names:
            if is_image_reference(name):
                parsed.append(_image(name, insecure))
                continue
            try:
                parsed.append(parse_registry(name, insecure=insecure))
            except TargetError as exc:
                die(f"registry {shown(name)}: {exc}")
    else:
        source = "docker-config"
        path = dockerconfig.config_dir(options.docker_config) / "config.json"
        try:
            config = dockerconfig.load_config(path)
        except dockerconfig.ConfigError as exc:
            die(f"{exc}; name a registry instead: diagnose check-health <registry>")
        parsed = []
        for key in dockerconfig.registry_keys(config or {}):
            try:
                parsed.append(parse_registry(key, insecure=insecure))
            except TargetError as exc:
                notes.append(f"docker config entry {shown(key)} skipped: {exc}")
        if not parsed:
            source = "none"
    if repository is not None:
        if not valid_repository(repository):
            die(
                f"--repository {shown(repository)}: repository names are lower-case letters, "
                "digits and the separators . _ - /"
            )
        parsed = [r if r.image else replace(r, repository=repository) for r in parsed]
    if image:
        parsed = _with_image(parsed, image, bool(names), insecure)
        if source == "none":
            source = "argument"
    unique: dict[str, Registry] = {}
    for reg in parsed:
        held = unique.get(reg.login_server)
        if held is None or (reg.image is not None and held.image is None):
            unique[reg.login_server] = reg
        elif reg.image is not None and held.image is not None and reg.image != held.image:
            notes.append(
                f"one image per registry per run: {reg.image.given} left out "
                f"({held.image.given} is checked)"
            )
    return list(unique.values()), source, notes


def _renderer(fmt: str) -> Renderer:
    from diagnose import plugins

    try:
        renderer: Renderer = plugins.load_report(fmt)
    except KeyError:
        die(f"unknown format {shown(fmt)}; choose from {', '.join(plugins.report_names())}")
    return renderer


def _report_target(spec: str) -> tuple[Renderer, str]:
    fmt, sep, path = str(spec).partition(":")
    if not sep or not path:
        die(f"--report {shown(str(spec))}: write it as FORMAT:PATH (PATH - for stdout)")
    return _renderer(fmt), path


def _with_broken(report: Report, broken: list[BrokenPlugin]) -> Report:
    from diagnose.models import CheckResult, Status, problem

    extra = []
    for b in broken:
        finding = problem(
            Status.ERROR,
            f"check plugin {b.name} ({b.value}) could not be loaded: {b.error[:200]}",
            code="PLUGIN_LOAD_ERROR",
            faq=["check-health"],
            remediation=["Reinstall or remove the package that provides this check."],
        )
        extra.append(
            CheckResult.from_finding(
                b.name, "Load check plugin", finding, duration_s=0.0, registry=None, started_s=0.0
            )
        )
    return replace(report, results=(*report.results, *extra))


def _emit(
    report: Report,
    renderer: Renderer,
    output: Path | None,
    *,
    fail_on_warn: bool = False,
    color: bool | None = None,
) -> None:
    from diagnose.render import RenderOptions

    to_tty = output is None and sys.stdout.isatty()
    width = 100
    if to_tty:
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns
    use_color = (to_tty and "NO_COLOR" not in os.environ) if color is None else color
    opts = RenderOptions(color=use_color, width=width, fail_on_warn=fail_on_warn)
    _write(renderer.render(report, opts), output)


def _ci_lines(report: Report, config_path: Path | None) -> list[str]:
    """One line per check, for a CI log."""
    lines = []
    if config_path is not None:
        lines.append(f"preflight: settings from {config_path}")
    for r in report.results:
        where = f" [{r.registry}]" if r.registry else ""
        code = f" {r.code}" if r.code else ""
        lines.append(f"{r.status.value.upper():<5} {r.id}{where}:{code} {r.summary}")
    counts = report.counts()
    tally = ", ".join(f"{counts[k]} {k}" for k in counts if counts[k])
    lines.append(f"preflight: {report.status.value.upper()} ({tally}) in {report.duration_s:.2f}s")
    return lines


def _github_summary(report: Report, path: Path, fail_on_warn: bool) -> None:
    from diagnose.plugins import load_report
    from diagnose.render import RenderOptions

    text = load_report("markdown").render(report, RenderOptions(fail_on_warn=fail_on_warn))
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    except OSError as exc:
        typer.echo(f"diagnose: warning: cannot write the job summary: {exc.strerror}", err=True)


def _leave(done: SystemExit) -> NoReturn:
    """Exit as soon as the output is out. The interpreter's teardown would only free memory,
    and it costs a short run about a fifth of its time (tens of milliseconds to finalise every
    module); it would also wait on checks abandoned at the deadline. Nothing of ours needs it:
    reports and bundles are written and closed before a command returns."""
    code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    if done.code is not None and not isinstance(done.code, int):
        typer.echo(str(done.code), err=True)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # a reader that went away (| head) or a closed stream
        code = code or 1
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Console entry point: no traceback ever reaches the user unless asked for."""
    try:
        app()
    except SystemExit as done:
        _leave(done)
    except KeyboardInterrupt:
        typer.echo("diagnose: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("REGISTRY_DIAGNOSE_DEBUG"):
            raise
        typer.echo(
            f"diagnose: internal error: {type(exc).__name__} (set REGISTRY_DIAGNOSE_DEBUG=1 "
            "for the traceback)",
            err=True,
        )
        sys.exit(EXIT_USAGE)
