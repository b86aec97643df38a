"""`diagnose serve` and `diagnose watch`: the checks over time.

Thin wrappers on the command line: the logic lives in diagnose.modules, .probe, .exporter and
.watch. The run options are every module's defaults, converted by the same option table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from diagnose.cli import QuietOpt, app, build_options, credentials_given, env, run_options
from diagnose.errors import UsageError
from diagnose.options import Spec

if TYPE_CHECKING:
    from diagnose.probe import Module

ModulesConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Settings file with [modules.NAME] (default: diagnose.toml, or pyproject.toml).",
    ),
]
# the options of these commands alone, converted as the run options are
LISTEN = Spec("listen", "text", "Where to answer scrapes (:PORT: all addresses).", "HOST:PORT")
MAX_IN_FLIGHT = Spec("max_in_flight", "int", "Probes running at once, at most.", "N", 8, 1, 256)
MIN_INTERVAL = Spec(
    "min_interval",
    "number",
    "Least time between two probes of a target; its last result is served between.",
    "SECONDS",
    30.0,
    0,
    86400,
    unit="seconds",
)
INTERVAL = Spec("interval", "duration", "Between two probes.", "DURATION", 30.0)
FOR = Spec("for", "duration", "How long (default: until Ctrl-C, at most 24h).", "DURATION")
SLOW = Spec("slow", "number", "A slower step counts as slow.", "SECONDS", 5.0, 0.001)


def probe_modules(run: dict[str, Any], config: Path | None) -> dict[str, Module]:
    """The run options as every module's defaults, the settings file's modules over them."""
    from diagnose import modules, plugins, runner
    from diagnose.options import settle
    from diagnose.probe import Module, for_probes, writes_refused

    e = env()
    given = {k: v for k, v in run.items() if v not in (None, [], ())}
    values = settle(given)
    refused = writes_refused(
        push=values["require"] == "push",
        push_test=values["push_test"],
        throughput=values["throughput"],
        wait_for=values["wait_for"] is not None,
    )
    if refused:
        raise UsageError(refused)
    specs, _ = modules.load_modules(config, e.cwd, e.environ)
    found, _ = plugins.load_checks()
    creds = credentials_given(values)
    out: dict[str, Module] = {}
    for spec in [modules.ModuleSpec(modules.DEFAULT, {}), *specs]:
        merged = settle({**given, **spec.settings})
        try:
            chosen = runner.select(found, merged["checks"] or [], merged["skip"] or [])
        except ValueError as exc:
            raise UsageError(f"module {spec.name}: {exc}") from None
        opts = build_options(merged, creds, e.environ)
        out[spec.name] = Module(spec.name, tuple(chosen), for_probes(opts), spec.secrets)
    return out


@app.command("serve")
@run_options()
def serve(
    listen: Annotated[str, typer.Option(metavar=LISTEN.metavar, help=LISTEN.help)] = (
        "127.0.0.1:9479"
    ),
    config: ModulesConfigOpt = None,
    max_in_flight: Annotated[
        str | None, typer.Option(metavar=MAX_IN_FLIGHT.metavar, help=MAX_IN_FLIGHT.help_text())
    ] = None,
    min_interval: Annotated[
        str | None, typer.Option(metavar=MIN_INTERVAL.metavar, help=MIN_INTERVAL.help_text())
    ] = None,
    **run: Any,
) -> None:
    """A Prometheus exporter: /probe?target=REF&module=NAME runs the checks, /metrics is its own."""
    from diagnose import exporter
    from diagnose.secrets import shown

    try:
        host, port = exporter.parse_listen(listen)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    bound = MAX_IN_FLIGHT.convert(max_in_flight) if max_in_flight else MAX_IN_FLIGHT.default
    spacing = MIN_INTERVAL.convert(min_interval) if min_interval else MIN_INTERVAL.default
    mods = probe_modules(run, config)
    prober = exporter.Prober(mods, max_in_flight=bound, min_interval_s=spacing)
    try:
        server = exporter.ExporterServer((host, port), prober)
    except OSError as exc:
        raise UsageError(f"--listen {shown(listen)}: {exc.strerror}") from None
    exporter.serve(server, env().err)


@app.command("watch")
@run_options()
def watch(
    refs: Annotated[
        list[str], typer.Argument(metavar="REF", help="Registries or image references.")
    ],
    interval: Annotated[
        str, typer.Option(metavar=INTERVAL.metavar, help=INTERVAL.help_text(), show_default=False)
    ] = "30s",
    for_: Annotated[str | None, typer.Option("--for", metavar=FOR.metavar, help=FOR.help)] = None,
    module: Annotated[
        str, typer.Option(metavar="NAME", help="A settings-file module.")
    ] = "default",
    config: ModulesConfigOpt = None,
    slow: Annotated[str | None, typer.Option(metavar=SLOW.metavar, help=SLOW.help_text())] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="FORMAT", help="terminal or json.")
    ] = "terminal",
    quiet: QuietOpt = False,
    **run: Any,
) -> None:
    """Repeat the checks; count and classify what fails between two looks; exit 1 if any did."""
    from diagnose import watch as watching
    from diagnose.probe import ProbeInputError, parse_target, target_key
    from diagnose.secrets import shown

    e = env()
    if fmt not in ("terminal", "json"):
        raise UsageError(f"unknown format {shown(fmt)}; choose terminal or json")
    interval_s = INTERVAL.convert(interval)
    for_s = FOR.convert(for_) if for_ else 24 * 3600.0
    slow_s = SLOW.convert(slow) if slow else SLOW.default
    mods = probe_modules(run, config)
    if module not in mods:
        raise UsageError(f"unknown module {shown(module)} (configured: {', '.join(sorted(mods))})")
    targets = []
    for ref in refs:
        try:
            reg = parse_target(ref, insecure=mods[module].options.insecure)
        except ProbeInputError as exc:
            raise UsageError(f"{shown(ref)}: {exc}") from None
        targets.append((target_key(reg), reg))
    live = not quiet and e.stderr_tty and e.environ.get("TERM") != "dumb"
    code = watching.main(
        mods[module],
        targets,
        interval_s=interval_s,
        for_s=for_s,
        slow_s=slow_s,
        fmt=fmt,
        live=live,
        out=e.stdout,
    )
    raise typer.Exit(code)
