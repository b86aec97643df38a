"""The `diagnose` command line.

Only wiring lives here. The run options come from one table (diagnose.options), the targets
from diagnose.target, the credentials from diagnose.credentials; every command reads and writes
through the `Environment` it is given, and `run` turns every error into its exit code in one
place. Heavy imports wait until a command runs, so that `diagnose --help` starts fast.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from diagnose import __version__
from diagnose.environment import Environment
from diagnose.errors import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, UsageError
from diagnose.options import SPECS, Spec, names

if TYPE_CHECKING:
    from diagnose.context import Options
    from diagnose.credentials import UserInput
    from diagnose.models import Report
    from diagnose.render import Renderer
    from diagnose.target import Targets

app = typer.Typer(
    name="diagnose",
    help="Find out why this machine cannot pull from or push to a container registry.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # never print locals: they may hold secrets
    rich_markup_mode=None,  # plain help: rendering it with rich costs more than the run
)
F = TypeVar("F", bound=Callable[..., Any])


_ENVIRONMENT: ContextVar[Environment | None] = ContextVar("environment", default=None)


def env() -> Environment:
    """The Environment the running command was given (see `run`)."""
    return _ENVIRONMENT.get() or Environment.from_process()


# ------------------------------------------------------------------------ shared options
def _parameter(spec: Spec) -> inspect.Parameter:
    """The Typer parameter for one option of the table. Values arrive as typed (strings and
    lists of strings) and are converted by the table, as a settings file's are."""
    kind: Any = bool | None if spec.kind == "flag" else list[str] | None
    if spec.kind not in ("flag", "list"):
        kind = str | None
    option = typer.Option(
        *(spec.flags or (spec.flag,)),
        metavar=spec.metavar or None,
        help=spec.help_text(),
        show_default=False,
    )
    return inspect.Parameter(
        spec.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option]
    )


def run_options(only: Iterable[str] | None = None) -> Callable[[F], F]:
    """Give a command (taking **run) the run options of the table (all, or those named), as
    Typer reads them: from the signature."""

    def attach(func: F) -> F:
        own = [
            p
            for p in inspect.signature(func, eval_str=True).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        func.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*own, *(_parameter(s) for s in names(only))]
        )
        return func

    return attach


RegistriesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="REGISTRY",
        help="Registry login servers (myregistry.azurecr.io, ghcr.io, localhost:5000), ACR short "
        "names or image references. None: every registry in the docker config.",
        show_default=False,
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No live progress view.")]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        metavar="FORMAT",
        help="terminal (default), json, markdown, html, junit, github or sarif.",
    ),
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write the report here.")
]


# ---------------------------------------------------------------------------- the runs
def prepare(
    given: dict[str, Any], from_file: dict[str, Any] | None = None
) -> tuple[dict[str, Any], Options, Targets]:
    """The settled option values, the Options of the run and its targets."""
    from diagnose.dockerconfig import config_dir
    from diagnose.options import settle
    from diagnose.target import resolve_targets

    e = env()
    values = settle(given, from_file)
    options = build_options(values, credentials_given(values), e.environ)
    registries = list(given.get("registries") or (from_file or {}).get("registries") or [])
    if (
        values["wait_for"]
        and not values["repository"]
        and not any(r.count("/") for r in registries)
    ):
        raise UsageError("--wait-for needs the repository to watch: --repository REPO")
    targets = resolve_targets(
        registries,
        docker_config=config_dir(options.docker_config, e.environ),
        insecure=options.insecure,
        repository=values["repository"],
        image=values["image"],
    )
    return values, options, targets


def credentials_given(values: dict[str, Any]) -> UserInput:
    """The credentials given to the command itself (flags, standard input, environment)."""
    from diagnose.credentials import user_input

    e = env()
    return user_input(
        values["username"],
        values["password_stdin"],
        values["identity_token_file"],
        e.environ,
        e.stdin,
        e.stdin_tty,
    )


def build_options(values: dict[str, Any], creds: UserInput, environ: Mapping[str, str]) -> Options:
    """The Options of a run from settled option values (see diagnose.options.settle)."""
    from diagnose.context import Options

    pushing = values["require"] == "push" or values["push_test"]
    wait_s = values["propagation_timeout"]
    timeout = values["timeout"]
    return Options(
        host_root=values["host_root"],
        docker_config=values["docker_config"],
        ca_bundle=values["ca_bundle"],
        nameserver=values["nameserver"],
        insecure=values["insecure"],
        timeout_s=max(timeout, wait_s + 30.0) if values["wait_for"] else timeout,
        tries=values["tries"],
        credentials=creds,
        require=("pull", "push") if pushing else ("pull",),
        wait_for=values["wait_for"],
        propagation_timeout_s=wait_s,
        docker_host=values["docker_host"],
        throughput=values["throughput"],
        image=values["image"],
        platform=values["platform"],
        runtimes=values["runtime"] or (),
        pull_secret=values["pull_secret"],
        provider_config=values["image_credential_provider_config"],
        provider_bin_dir=values["image_credential_provider_bin_dir"],
        streams=values["streams"],
        throughput_seconds=values["throughput_seconds"],
        slow_below_mbs=values["slow_below"],
        push_test=values["push_test"],
        push_bytes=values["push_bytes"],
        speedtest_mini=values["speedtest_mini"],
        speedtest_server=values["speedtest_server"],
        environ=dict(environ),
    )


def execute(
    given: dict[str, Any], *, live: bool, from_file: dict[str, Any] | None = None
) -> tuple[Report, Options, dict[str, Any]]:
    """Run the selected checks against the targets: the report, the options, the values."""
    values, options, targets = prepare(given, from_file)
    from diagnose import plugins, runner

    found, broken = plugins.load_checks()
    try:
        selected = runner.select(found, values["checks"] or [], values["skip"] or [])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    notes = list(targets.notes)
    if not targets.registries:
        notes.append(
            "No registry was named and none is in the docker config: only this machine was "
            "checked. Name one: `diagnose check-health myregistry.azurecr.io`."
        )
    e = env()
    kwargs: dict[str, Any] = {"target_source": targets.source, "notes": notes}
    if live and e.stderr_tty and e.environ.get("TERM") != "dumb":
        from diagnose.live import LiveView

        with LiveView() as view:
            report = runner.run(selected, targets.registries, options, listener=view, **kwargs)
    else:
        report = runner.run(selected, targets.registries, options, **kwargs)
    if broken:
        report = replace(report, results=(*report.results, *(b.result() for b in broken)))
    return report, options, values


def _version(value: bool) -> None:
    if value:
        env().out(f"registry-diagnose {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Find out why this machine cannot pull from or push to a container registry."""


@app.command("check-health")
@run_options()
def check_health(
    registries: RegistriesArg = None,
    fmt: FormatOpt = "terminal",
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    pod: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="A pod as `kubectl get pod NAME -o yaml` (or -o json) prints it: every "
            "container and init container image is checked, and the pod's status explained.",
        ),
    ] = None,
    node_name: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="The node this run describes, recorded in the report (default: $NODE_NAME, "
            "as the downward API sets it).",
        ),
    ] = None,
    hold: Annotated[
        bool,
        typer.Option(
            "--hold",
            help="After the report, wait until stopped (a DaemonSet pod: one report, no restarts).",
        ),
    ] = False,
    **run: Any,
) -> None:
    """Check every step from this machine to the registry and say what to fix."""
    from diagnose.cli_fleet import exit_on_stop, hold_until_stopped, pod_run, with_node

    renderer = _renderer(fmt)
    given = {**run, "registries": registries}
    if pod is not None:
        report, values = pod_run(given, _relative(pod), live=not quiet)
    else:
        report, _, values = execute(given, live=not quiet)
    report = with_node(report, node_name)
    warn = values["fail_on"] == "warn"
    if hold:
        exit_on_stop()
    emit(report, renderer, output, fail_on_warn=warn)
    if hold:
        hold_until_stopped()
    raise typer.Exit(report.exit_code(fail_on_warn=warn))


@app.command("preflight")
@run_options()
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
    from diagnose.config import load_settings

    e = env()
    found, path = load_settings(config, e.cwd)
    reports = list(report_to or []) or list(found.pop("report", None) or [])
    outputs = [_report_target(r) for r in reports]
    report, _, values = execute({**run, "registries": registries}, live=False, from_file=found)
    warn = values["fail_on"] == "warn"
    for line in _ci_lines(report, path):
        e.out(line)
    for renderer, target in outputs:
        where = None if target == "-" else _relative(Path(target))
        emit(report, renderer, where, fail_on_warn=warn, color=False)
    summary = e.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        _github_summary(report, Path(summary), warn)
    raise typer.Exit(report.exit_code(fail_on_warn=warn))


@app.command("bundle")
@run_options()
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

    report, options, values = execute({**run, "registries": registries}, live=not quiet)
    where = _relative(output) if output is not None else None
    try:
        path, redactions = write_bundle(
            report, options, where, redact_hosts=redact_hosts, cwd=env().cwd
        )
    except BundleError as exc:
        raise UsageError(str(exc)) from None
    removed = ", ".join(f"{n} {k}" for k, n in redactions.items()) or "nothing"
    env().out(f"{report.status.value.upper()}: bundle written to {path} (redacted: {removed})")
    raise typer.Exit(report.exit_code(fail_on_warn=values["fail_on"] == "warn"))


PERMISSION_OPTIONS = (
    "propagation_timeout",
    "username",
    "password_stdin",
    "identity_token_file",
    "ca_bundle",
    "nameserver",
    "insecure",
    "docker_config",
    "host_root",
)


@app.command("wait-for-permission")
@run_options(PERMISSION_OPTIONS)
def wait_for_permission(
    registry: Annotated[str, typer.Argument(metavar="REGISTRY", help="The registry to watch.")],
    repository: Annotated[
        str, typer.Option(metavar="REPO", help="The repository the grant is for.")
    ],
    action: Annotated[str, typer.Option(metavar="ACTION", help="push (default) or pull.")] = (
        "push"
    ),
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="FORMAT", help="terminal or json.")
    ] = "terminal",
    quiet: QuietOpt = False,
    **run: Any,
) -> None:
    """Wait until a new role reaches the registry's token service, and say how long it took."""
    given = {
        **run,
        "registries": [registry],
        "repository": repository,
        "checks": ["scope"],
        "wait_for": action,
        "require": action,
    }
    renderer = _renderer(fmt)
    report, _, _ = execute(given, live=not quiet)
    emit(report, renderer, None)
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
    from diagnose.secrets import shown

    e = env()
    if fmt not in ("terminal", "json"):
        raise UsageError(f"unknown format {shown(fmt)}; choose terminal or json")
    if text:
        data, size = " ".join(text).encode("utf-8", "replace"), None
    elif file is not None:
        try:
            data, size = read_blob(e.stdin if str(file) == "-" else _relative(file))
        except OSError as exc:
            raise UsageError(f"cannot read {shown(str(file))}: {exc.strerror}") from None
    elif not e.stdin_tty:
        data, size = read_blob(e.stdin)
    else:
        raise UsageError("give an error message, --file LOG, or pipe a log in")
    from diagnose import plugins

    found, _ = plugins.load_checks()
    result = explain_text(data, found, total=size)
    e.out(render_json(result) if fmt == "json" else render_text(result), nl=False)
    raise typer.Exit(EXIT_OK if result.candidates else EXIT_PROBLEM)


@app.command("list-checks")
def list_checks(
    fmt: Annotated[str, typer.Option("--format", "-f", help="terminal or json.")] = "terminal",
) -> None:
    """List every registered check (ours and third parties'), and the plugins refused."""
    import json

    from diagnose import plugins
    from diagnose.secrets import shown

    e = env()
    if fmt not in ("terminal", "json"):
        raise UsageError(f"unknown format {shown(fmt)}; choose terminal or json")
    found, broken = plugins.load_checks()
    rows: list[dict[str, Any]] = [
        {
            "id": c.id,
            "title": c.title,
            "scope": c.scope,
            "depends_on": list(c.depends_on),
            "timeout_s": c.timeout_s,
            "acr_only": c.acr_only,
            "codes": [str(x) for x in c.codes],
            "faq": list(c.faq_keys),
            "module": type(c).__module__,
        }
        for c in found
    ]
    if fmt == "json":
        e.out(json.dumps({"checks": rows, "broken": [b.__dict__ for b in broken]}, indent=2))
        return
    width = max([len(r["id"]) for r in rows] + [len(b.name) for b in broken] + [2])
    for r in rows:
        deps = f"  (after {', '.join(r['depends_on'])})" if r["depends_on"] else ""
        e.out(f"{r['id']:<{width}}  {r['scope']:<8}  {r['title']}{deps}")
    for b in broken:
        e.out(f"{b.name:<{width}}  BROKEN    {b.error}")


# ------------------------------------------------------------------------------- output
def _relative(path: Path) -> Path:
    """A path the user gave, read against the command's working directory."""
    return path if path.is_absolute() else env().cwd / path


def _renderer(fmt: str) -> Renderer:
    from diagnose import plugins
    from diagnose.secrets import shown

    try:
        renderer: Renderer = plugins.load_report(fmt)
    except KeyError:
        raise UsageError(
            f"unknown format {shown(fmt)}; choose from {', '.join(plugins.report_names())}"
        ) from None
    return renderer


def _report_target(spec: str) -> tuple[Renderer, str]:
    from diagnose.secrets import shown

    fmt, sep, path = str(spec).partition(":")
    if not sep or not path:
        raise UsageError(
            f"--report {shown(str(spec))}: write it as FORMAT:PATH (PATH - for stdout)"
        )
    return _renderer(fmt), path


def emit(
    report: Report,
    renderer: Renderer,
    output: Path | None,
    *,
    fail_on_warn: bool = False,
    color: bool | None = None,
) -> None:
    """Render the report to standard output, or to a file written whole (then renamed)."""
    from diagnose.render import RenderOptions

    e = env()
    to_tty = output is None and e.stdout_tty
    width = 100
    if to_tty:
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns
    use_color = (to_tty and "NO_COLOR" not in e.environ) if color is None else color
    opts = RenderOptions(color=use_color, width=width, fail_on_warn=fail_on_warn)
    write(renderer.render(report, opts), output)


def write(text: str, output: Path | None) -> None:
    """Text to standard output, or to a file written whole (a temporary file, renamed)."""
    from diagnose.secrets import shown

    e = env()
    if output is None:
        e.stdout.write(text)
        e.stdout.flush()
        return
    output = _relative(output)
    try:
        tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output)
    except OSError as exc:
        raise UsageError(f"cannot write {shown(str(output))}: {exc.strerror}") from None


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
        env().err(f"diagnose: warning: cannot write the job summary: {exc.strerror}")


# ------------------------------------------------------------------- entry points
def run(argv: Sequence[str], environment: Environment) -> int:
    """Run one command line in this process and return its exit code: every error becomes its
    code here, and nothing is written but through environment (the parser's own help and
    usage errors included: help goes to sys.stdout, redirected while the parser runs)."""
    token = _ENVIRONMENT.set(environment)
    try:
        with contextlib.redirect_stdout(environment.stdout):
            rc = app(args=list(argv), prog_name="diagnose", standalone_mode=False)
    except UsageError as exc:
        environment.err(f"diagnose: error: {exc}")
        return EXIT_USAGE
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        environment.err("diagnose: interrupted")
        return 130
    except Exception as exc:
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show(file=environment.stderr)  # the parser's usage error, as it words it
            return EXIT_USAGE
        if environment.environ.get("REGISTRY_DIAGNOSE_DEBUG"):
            raise
        environment.err(
            f"diagnose: internal error: {type(exc).__name__} (set REGISTRY_DIAGNOSE_DEBUG=1 "
            "for the traceback)"
        )
        return EXIT_USAGE
    finally:
        _ENVIRONMENT.reset(token)
    return rc if isinstance(rc, int) else EXIT_OK


def _leave(code: int) -> NoReturn:
    """Exit as soon as the output is out. The interpreter's teardown would only free memory,
    and it costs a short run about a fifth of its time (tens of milliseconds to finalise every
    module); it would also wait on checks abandoned at the deadline. Nothing of ours needs it:
    reports and bundles are written and closed before a command returns. Children the run
    started (a `docker version` a check gave up on) are ended first, never left behind."""
    from diagnose.children import end_children

    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # a reader that went away (| head) or a closed stream
        code = code or 1
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    end_children()
    os._exit(code)


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena (up to eight per core);
    a run's twenty-odd check threads would hold several megabytes in them. Two are enough
    for threads that mostly wait on the network."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        return


def main() -> None:
    """Console entry point: no traceback ever reaches the user unless asked for."""
    _few_malloc_arenas()
    try:
        code = run(sys.argv[1:], Environment.from_process())
    except KeyboardInterrupt:
        sys.stderr.write("diagnose: interrupted\n")
        code = 130
    _leave(code)


__all__ = ["EXIT_PROBLEM", "SPECS", "app", "main", "run"]

# Commands kept in modules of their own register on `app` when imported; importing them here
# puts them on the command line (they import this module's plumbing, defined above).
from diagnose import cli_fleet, cli_monitor  # noqa: E402, F401
