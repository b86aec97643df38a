"""A short run pays only for what it uses: a name that does not resolve stops the network checks
before they start (and before they load HTTP, TLS or image code), a report off a terminal is
written without rich, and the process leaves as soon as its output is out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests import lab

# Loaded only by work a run that fails at DNS never does.
NOT_FOR_A_DNS_FAILURE = (
    "requests",
    "urllib3",
    "rich",
    "diagnose.oci",
    "diagnose.registryapi",
    "diagnose.tokens",
    "diagnose.transfer",
    "diagnose.wire",
    "diagnose.content",
    "diagnose.endpoint",
    "diagnose.containers",
    "diagnose.http",
    "concurrent.futures",
    "cryptography",
)

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from diagnose import plugins, runner
    from diagnose.context import Options
    from diagnose.render import RenderOptions
    from diagnose.target import parse_registry

    host, port = sys.argv[1].rsplit(":", 1)
    checks, broken = plugins.load_checks()
    options = Options(host_root=Path(sys.argv[2]), nameserver=(host, int(port)), timeout_s=20)
    report = runner.run(checks, [parse_registry("nosuchreg")], options)
    text = plugins.load_report("terminal").render(report, RenderOptions(color=False))
    print(json.dumps({
        "modules": sorted(sys.modules),
        "text": text,
        "results": {r.id: [r.status.value, r.summary] for r in report.results},
    }))
    """
)


def test_a_run_failing_at_dns_starts_no_network_check_and_loads_no_http(
    dns_refusing: lab.Dns, env: dict[str, str], tmp_path: Path
) -> None:
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, dns_refusing.nameserver, str(lab.empty_root())],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    results = out["results"]
    assert results["dns"][0] == "fail" and "REFUSED" in results["dns"][1]
    # every check past DNS is reported blocked, none of them ran
    for cid in ("tcp", "tls", "api", "auth-challenge", "authorized-request", "blob-redirect"):
        assert results[cid] == ["skip", results[cid][1]] and results[cid][1].startswith(
            "blocked by"
        ), (cid, results[cid])
    loaded = set(out["modules"])
    assert not [m for m in NOT_FOR_A_DNS_FAILURE if m in loaded]
    assert "FAIL  DNS resolution · nosuchreg.azurecr.io" in out["text"]


def test_the_cli_exits_with_the_report_written_and_the_right_code(
    dns_refusing: lab.Dns, env: dict[str, str], tmp_path: Path
) -> None:
    # the process leaves without the interpreter's teardown: the output must be whole anyway
    out = tmp_path / "report.json"
    r = lab.diagnose(
        "check-health",
        "nosuchreg",
        "--nameserver",
        dns_refusing.nameserver,
        "-f",
        "json",
        "-o",
        str(out),
        env=env,
    )
    assert r.rc == 1 and r.out == ""
    report = json.loads(out.read_text())
    assert report["summary"]["status"] == "fail"
    piped = lab.diagnose(
        "check-health", "nosuchreg", "--nameserver", dns_refusing.nameserver, env=env
    )
    assert piped.rc == 1 and piped.out.rstrip().splitlines()[-1].startswith("FAIL: ")
    assert lab.diagnose("--help", env=env).rc == 0


def test_the_plain_report_keeps_control_characters_off_the_terminal() -> None:
    from diagnose.models import Report, ToolInfo
    from diagnose.render import RenderOptions
    from reports.terminal import TerminalReport

    report = Report(
        tool=ToolInfo(name="registry-diagnose", version="0", python="3", platform="x"),
        registries=(),
        target_source="none",
        started_at="2026-01-01T00:00:00+00:00",
        duration_s=0.0,
        results=(),
        faq={},
        notes=("a \x1b[31mred\x1b[0m note\r\x07",),
    )
    plain = TerminalReport().render(report, RenderOptions(color=False))
    coloured = TerminalReport().render(report, RenderOptions(color=True))
    assert "\x1b" not in plain and "\r" not in plain and "\x07" not in plain
    assert "a ?[31mred?[0m note??" in plain
    assert "\x1b[31mred" not in coloured and "?[31mred" in coloured  # only our own styles


def test_a_check_gated_on_a_failed_check_never_starts() -> None:
    from diagnose import runner
    from diagnose.check import Check
    from diagnose.codes import Code
    from diagnose.context import CheckContext, Options
    from diagnose.models import Finding, Status, passed, problem
    from diagnose.target import parse_registry

    ran: list[str] = []

    class Gate(Check):
        id = "gate"
        title = "Gate"
        order = 1
        codes = (Code.CONNECTIVITY_ERROR,)

        def run(self, ctx: CheckContext) -> Finding:
            ran.append(self.id)
            if ctx.registry is not None and ctx.registry.host.startswith("bad"):
                return problem(
                    Status.FAIL, "closed", code=Code.CONNECTIVITY_ERROR, faq=["check-health"]
                )
            return passed("open")

    class Gated(Check):
        id = "gated"
        title = "Gated"
        order = 2
        starts_after = ("gate",)

        def run(self, ctx: CheckContext) -> Finding:
            ran.append(f"{self.id} {ctx.result('gate') is not None}")
            return passed("ran after the gate")

    regs = [parse_registry("bad.example.test"), parse_registry("good.example.test")]
    report = runner.run([Gate(), Gated()], regs, Options(timeout_s=10))
    got = {(r.registry, r.id): (r.status, r.summary) for r in report.results}
    assert got[("bad.example.test", "gated")] == (Status.SKIP, "blocked by gate")
    assert got[("good.example.test", "gated")] == (Status.PASS, "ran after the gate")
    assert sorted(ran) == ["gate", "gate", "gated True"]


def test_no_child_is_left_behind_when_the_run_ends(tmp_path, env):
    """A run on a host whose docker daemon is stopped: `docker version` (here one that hangs)
    is still running when the run has its verdict; the process ends it before leaving."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text("#!/bin/sh\nsleep 60 &\nexec sleep 60\n")
    fake.chmod(0o755)
    run_env = {
        **env,
        "PATH": f"{bin_dir}:{env['PATH']}",
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "diagnose", "check-health", "--checks", "docker-version",
         "--host-root", "/", "--timeout", "5", "-q", "--format", "json"],
        cwd=lab.ROOT, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 1), err
    started = [c for c in json.loads(out)["checks"] if c["id"] == "docker-version"]
    assert started, out
    deadline = time.monotonic() + 3
    left = _running_in_group(proc.pid)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _running_in_group(proc.pid)
    for pid in left:
        os.kill(pid, 9)
    assert not left, "the run left a child process behind"


def _running_in_group(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies waiting for a reaper do not)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            out.append(int(entry))
    return out
