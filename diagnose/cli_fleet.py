"""Where pulls fail on many machines: `diagnose merge`, and what `check-health` does for a pod
(`--pod`, `--node-name`, `--hold`).

Thin wrappers on the command line: the logic lives in diagnose.fleet and diagnose.pod.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from diagnose.cli import app, env, execute, write
from diagnose.errors import UsageError

if TYPE_CHECKING:
    from diagnose.models import Report


def with_node(report: Report, given: str | None) -> Report:
    """The node's name in the report: --node-name, else NODE_NAME from the downward API."""
    from diagnose.secrets import shown

    name, source = (given, "option") if given else (env().environ.get("NODE_NAME"), "env")
    name = (name or "").strip()
    if not name:
        return report
    if len(name) > 253 or not name.isprintable():
        raise UsageError(f"node name {shown(name)}: at most 253 printable characters")
    return replace(report, node=(name, source))


def pod_run(given: dict[str, Any], path: Path, *, live: bool) -> tuple[Report, dict[str, Any]]:
    """One run per batch of the pod's images (one image per registry per run), as one report
    with the pod's own status first; and the settled option values."""
    from diagnose.pod import PodError, combine, pod_result, read_pod, rounds
    from diagnose.target import image_target

    if given.get("registries") or given.get("image"):
        raise UsageError("--pod names the images: give no REGISTRY or --image with it")
    try:
        pod = read_pod(path)
    except PodError as exc:
        raise UsageError(str(exc)) from None
    insecure = bool(given.get("insecure"))
    batches = rounds(pod.references, lambda ref: image_target(ref, insecure).login_server)
    reports: list[Report] = []
    values: dict[str, Any] = {}
    for batch in batches:
        report, _, values = execute({**given, "registries": batch}, live=live and len(batches) == 1)
        reports.append(report)
    pulled = given.get("pull_secret") is not None
    return combine(reports, pod_result(pod, pull_secret_given=pulled)), values


def exit_on_stop() -> None:
    """SIGTERM and SIGINT end the process with 0: as PID 1 in a container a signal without a
    handler is ignored, and the pod would wait out its grace period."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))


def hold_until_stopped() -> None:
    """Sleep until stopped (the handlers of exit_on_stop end it)."""
    import signal

    env().stdout.flush()
    while True:
        signal.pause()


@app.command("merge")
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
    import io

    from diagnose.fleet import FleetInputError, fleet_formats, load_fleet_renderer, merge_inputs
    from diagnose.secrets import shown

    e = env()
    if fmt not in fleet_formats():
        raise UsageError(
            f"unknown format {shown(fmt)}; choose from {', '.join(sorted(fleet_formats()))}"
        )
    stdin = io.TextIOWrapper(e.stdin, encoding="utf-8", errors="strict")
    paths = [x if x == "-" or Path(x).is_absolute() else str(e.cwd / x) for x in inputs]
    try:
        fleet = merge_inputs(paths, stdin)
    except FleetInputError as exc:
        raise UsageError(str(exc)) from None
    finally:
        stdin.detach()  # the command's stdin is not this wrapper's to close
    use_color = output is None and e.stdout_tty and "NO_COLOR" not in e.environ
    write(load_fleet_renderer(fmt).render_fleet(fleet, use_color), output)
    raise typer.Exit(fleet.exit_code)
