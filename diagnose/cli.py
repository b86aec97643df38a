"""The `diagnose` command line.

Only wiring lives here: options become an `Options`, names become `Registry` objects, checks and
report formats come from entry points. Heavy imports wait until a command runs, so that
`diagnose --help` starts fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from diagnose import __version__

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
)

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class FailOn(StrEnum):
    error = "error"
    warn = "warn"


class Need(StrEnum):
    pull = "pull"
    push = "push"


def _duration(text: str) -> float:
    """90, 90s, 10m, 1h -> seconds; bad input exits 2."""
    t = text.strip().lower()
    unit = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], 0)
    number = t[:-1] if unit else t
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        die(f"duration {shown(text)}: use seconds or a number with s, m or h (90s, 10m)")
    if not 1 <= value <= 24 * 3600:
        die(f"duration {shown(text)}: between 1s and 24h")
    return value


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
    if password is not None and not username:
        die("a password was given without --username")
    if username and password is None:
        die("--username needs a password: --password-stdin or REGISTRY_DIAGNOSE_PASSWORD")
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


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


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


RegistriesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="REGISTRY",
        help="Registry login servers (myregistry.azurecr.io, ghcr.io, localhost:5000), ACR short "
        "names or image references. None: every registry in the docker config.",
        show_default=False,
    ),
]


@app.command("check-health")
def check_health(
    registries: RegistriesArg = None,
    checks: Annotated[
        str | None,
        typer.Option(metavar="IDS", help="Only these checks (comma-separated), plus their needs."),
    ] = None,
    skip: Annotated[
        str | None, typer.Option(metavar="IDS", help="Leave these checks out (comma-separated).")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", metavar="FORMAT", help="Report format: terminal or json."),
    ] = "terminal",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write the report to FILE."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress view.")] = False,
    fail_on: Annotated[
        FailOn, typer.Option(metavar="LEVEL", help="error (default) or warn: what exits 1.")
    ] = FailOn.error,
    timeout: Annotated[
        float,
        typer.Option(min=1.0, max=3600.0, metavar="SECONDS", help="Deadline for the whole run."),
    ] = 30.0,
    tries: Annotated[
        int, typer.Option(min=1, max=10, metavar="N", help="Attempts for transient errors.")
    ] = 3,
    host_root: Annotated[
        Path, typer.Option(metavar="DIR", help="Read host files (/etc/...) under DIR.")
    ] = Path("/"),
    docker_config: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Docker config dir (default $DOCKER_CONFIG, ~/.docker)."),
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Extra CA certificates (PEM) to trust."),
    ] = None,
    nameserver: Annotated[
        str | None,
        typer.Option(metavar="IP[:PORT]", help="Resolve every name with this DNS server."),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Allow plain HTTP or unverified TLS, as docker does."),
    ] = False,
    repository: Annotated[
        str | None,
        typer.Option(metavar="REPO", help="Repository for repository-level checks."),
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", "-u", metavar="USER", help="User to log in as.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    identity_token_file: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="`az acr login --expose-token` output to use."),
    ] = None,
    require: Annotated[
        Need, typer.Option(metavar="ACTION", help="pull (default) or push: what must be allowed.")
    ] = Need.pull,
    wait_for: Annotated[
        Need | None,
        typer.Option(metavar="ACTION", help="Wait until this action is granted (propagation)."),
    ] = None,
    propagation_timeout: Annotated[
        str, typer.Option(metavar="DURATION", help="How long --wait-for waits: 90s, 10m.")
    ] = "10m",
) -> None:
    """Check every step from this machine to the registry and say what to fix."""
    creds = _credentials(username, password_stdin, identity_token_file)
    options = _options(timeout, tries, host_root, docker_config, ca_bundle, nameserver, insecure)
    wait_s = _duration(propagation_timeout)
    options = replace(
        options,
        credentials=creds,
        require=("pull", "push") if require is Need.push else ("pull",),
        wait_for=wait_for.value if wait_for else None,
        propagation_timeout_s=wait_s,
        timeout_s=max(options.timeout_s, wait_s + 30.0) if wait_for else options.timeout_s,
    )
    if wait_for and not repository and not any(r.count("/") for r in registries or []):
        die("--wait-for needs the repository to watch: --repository REPO")
    renderer = _renderer(fmt)
    targets, source, notes = _targets(registries or [], options, insecure, repository)

    from diagnose import plugins, runner
    from diagnose.live import LiveView

    found, broken = plugins.load_checks()
    try:
        selected = runner.select(found, _split(checks), _split(skip))
    except ValueError as exc:
        die(str(exc))
    if not targets:
        notes.append(
            "No registry was named and none is in the docker config: only this machine was "
            "checked. Name one: `diagnose check-health myregistry.azurecr.io`."
        )
    live = None
    if not quiet and sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
        live = LiveView()
    if live is not None:
        with live:
            report = runner.run(
                selected, targets, options, target_source=source, listener=live, notes=notes
            )
    else:
        report = runner.run(selected, targets, options, target_source=source, notes=notes)
    if broken:
        report = _with_broken(report, broken)
    _emit(report, renderer, output)
    raise typer.Exit(report.exit_code(fail_on_warn=fail_on is FailOn.warn))


def _options(
    timeout: float,
    tries: int,
    host_root: Path,
    docker_config: Path | None,
    ca_bundle: Path | None,
    nameserver: str | None,
    insecure: bool,
) -> Options:
    from diagnose.context import Options
    from diagnose.resolve import parse_nameserver

    if not host_root.is_dir():
        die(f"--host-root {shown(str(host_root))} is not a directory")
    ns = None
    if nameserver is not None:
        try:
            ns = parse_nameserver(nameserver)
        except ValueError as exc:
            die(str(exc))
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
        docker_config=docker_config,
        ca_bundle=ca_bundle,
        nameserver=ns,
        insecure=insecure,
        timeout_s=timeout,
        tries=tries,
    )


def _targets(
    names: list[str], options: Options, insecure: bool, repository: str | None
) -> tuple[list[Registry], str, list[str]]:
    from dataclasses import replace

    from diagnose import dockerconfig
    from diagnose.target import TargetError, parse_registry

    notes: list[str] = []
    source = "argument"
    if names:
        parsed = []
        for name in names:
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
        from diagnose.target import valid_repository

        if not valid_repository(repository):
            die(
                f"--repository {shown(repository)}: repository names are lower-case letters, "
                "digits and the separators . _ - /"
            )
        parsed = [replace(r, repository=repository) for r in parsed]
    unique: dict[str, Registry] = {}
    for reg in parsed:
        unique.setdefault(reg.login_server, reg)
    return list(unique.values()), source, notes


def _renderer(fmt: str) -> Renderer:
    from diagnose import plugins

    try:
        renderer: Renderer = plugins.load_report(fmt)
    except KeyError:
        die(f"unknown format {shown(fmt)}; choose from {', '.join(plugins.report_names())}")
    return renderer


def _with_broken(report: Report, broken: list[BrokenPlugin]) -> Report:
    from dataclasses import replace

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


def _emit(report: Report, renderer: Renderer, output: Path | None) -> None:
    from diagnose.render import RenderOptions

    to_tty = output is None and sys.stdout.isatty()
    width = 100
    if to_tty:
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns
    opts = RenderOptions(color=to_tty and "NO_COLOR" not in os.environ, width=width)
    text = renderer.render(report, opts)
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


def main() -> None:
    """Console entry point: no traceback ever reaches the user unless asked for."""
    try:
        app()
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
