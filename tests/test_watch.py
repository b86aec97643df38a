"""`diagnose watch`: probes repeated at an interval, intermittent failures counted and told
apart (which step, which answer, how slow), the first failure and the longest streak, one JSON
object per probe for log pipelines, a live timeline on a terminal, exit 1 when any failed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from diagnose import plugins, runner
from diagnose.context import Options
from diagnose.probe import Module, for_probes, parse_target, target_key
from diagnose.watch import watch
from tests import lab, tokenserver
from tests.monitoring import flaky_front


def run_watch(env, *args, timeout=60):
    p = subprocess.run(
        [sys.executable, "-m", "diagnose", "watch", *args, "--host-root", str(lab.empty_root())],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=str(lab.ROOT),
    )
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_healthy_registry_watched_three_times(registry, pki, env):
    p = run_watch(
        env,
        f"127.0.0.1:{registry.port}",
        "--interval",
        "1s",
        "--for",
        "3s",
        "--ca-bundle",
        str(pki.ca_file),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert sum(" PASS " in line for line in lines) == 3, p.stdout
    assert lines[-1] == f"https://127.0.0.1:{registry.port}: all 3 probes passed"


def test_json_one_object_per_probe_and_exit_1_when_the_token_service_is_dead(
    pki, good_cert, env, tmp_path
):
    signer = tokenserver.Signer.create(tmp_path)
    realm = f"https://127.0.0.1:{lab.closed_port()}/token"
    reg = lab.start_registry(
        tmp_path / "r",
        *good_cert,
        extra=tokenserver.token_auth_config(realm, "registry.test", signer.cert_file),
    )
    try:
        p = run_watch(
            env,
            f"127.0.0.1:{reg.port}",
            "--interval",
            "1s",
            "--for",
            "2s",
            "--format",
            "json",
            "--ca-bundle",
            str(pki.ca_file),
        )
    finally:
        reg.stop()
    assert p.returncode == 1, p.stdout + p.stderr
    objects = [json.loads(line) for line in p.stdout.splitlines()]
    probes = [o for o in objects if o["kind"] == "probe"]
    summary = objects[-1]
    assert len(probes) == 2 and summary["kind"] == "summary" and len(objects) == 3
    for o in probes:
        assert o["success"] is False
        codes = {(x["check"], x["code"]) for x in o["problems"]}
        assert ("auth-challenge", "CONNECTIVITY_REALM_ERROR") in codes
    assert summary["failed"] == summary["probes"] == summary["longest_streak"] == 2
    assert summary["first_failure"] == probes[0]["time"]
    assert "2 auth challenges failed (CONNECTIVITY_REALM_ERROR)" in "\n".join(summary["summary"])


def test_intermittent_failures_are_counted_and_classified(image_registry, pki, good_cert, tmp_path):
    """Real checks against a real registry behind a front told, probe by probe, to answer
    manifest requests with 503 or slowly: what the summary says is what happened."""
    found, _ = plugins.load_checks()
    checks = tuple(runner.select(found, ["manifest"], []))
    options = for_probes(Options(ca_bundle=pki.ca_file, host_root=lab.empty_root(), timeout_s=15))
    module = Module("default", checks, options)
    # what the front does for probe 1, 2, ...: fail with 503, hold answers back, or behave
    plan = [None, 503, 503, "slow", None, 503]
    stop = threading.Event()
    seen = []
    with flaky_front(image_registry.port, pki.ca_file, *good_cert) as front:
        reg = parse_target(f"127.0.0.1:{front.port}/team/app:1.0")

        def on_probe(result, stats):
            seen.append(result)
            if len(seen) == len(plan):
                stop.set()
                return
            step = plan[len(seen)]
            front.state["fail"] = step if isinstance(step, int) else None
            front.state["delay"] = 0.5 if step == "slow" else 0.0

        (stats,) = watch(
            module,
            [(target_key(reg), reg)],
            interval_s=0.2,
            for_s=120,
            slow_s=0.4,
            on_probe=on_probe,
            stop=stop,
        )
    assert [r.success for r in seen] == [True, False, False, True, True, False]
    assert stats.probes == 6 and stats.failed == 3 and stats.longest_streak == 2
    assert stats.first_failure == seen[1].started_at
    lines = stats.lines(0.4)
    assert lines[0].startswith(f"{target_key(reg)}: 3 of 6 probes failed; first failure at ")
    assert lines[0].endswith("longest streak 2")
    assert "  3 manifest reads answered 503 (REGISTRY_ERROR)" in lines
    slow = [line for line in lines if "over 0.4 s" in line]
    assert slow and slow[0].startswith("  1 of 3 manifest reads over 0.4 s (slowest "), lines


def test_live_timeline_on_a_terminal(registry, pki, env):
    rc, out = lab.run_on_pty(
        [
            sys.executable,
            "-m",
            "diagnose",
            "watch",
            f"127.0.0.1:{registry.port}",
            "--interval",
            "1s",
            "--for",
            "2s",
            "--ca-bundle",
            str(pki.ca_file),
            "--host-root",
            str(lab.empty_root()),
        ],
        {**env, "TERM": "xterm", "COLUMNS": "120"},
    )
    assert rc == 0, out
    assert "watching 1 target(s) every 1s" in out and "✔" in out
    assert "all 2 probes passed" in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("x.io//app",), "x.io//app"),
        (("registry.test", "--interval", "0s"), "between 1s and 24h"),
        (("registry.test", "--format", "xml"), "unknown format"),
        (("registry.test", "--module", "nope"), "unknown module"),
        (("registry.test", "--require", "push"), "a probe only reads"),
        (("alice:pw@registry.test/app",), "never from the URL"),
    ],
)
def test_bad_watch_input_is_one_line_exit_2(args, fragment, env):
    p = run_watch(env, *args)
    assert p.returncode == 2, p.stdout + p.stderr
    assert fragment in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_ctrl_c_ends_an_open_ended_watch_with_the_summary(env):
    """No --for: until Ctrl-C, and what was seen is still summed up."""
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diagnose",
            "watch",
            f"127.0.0.1:{lab.closed_port()}",
            "--interval",
            "1s",
            "--host-root",
            str(lab.empty_root()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        cwd=str(lab.ROOT),
    )
    try:
        time.sleep(2.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, out + err
    assert "Traceback" not in err
    last = out.splitlines()[-2:]
    assert "probes failed; first failure at" in last[0] and "longest streak" in last[0], out
    assert last[1].endswith("connections failed (CONNECTIVITY_TCP_REFUSED)"), out
