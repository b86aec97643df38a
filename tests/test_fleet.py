"""`diagnose merge`: reports made by real runs against the suite's parts (a healthy image, a name
that does not resolve, a certificate nobody trusts, a tag that is missing) under different node
names, folded into one fleet report: from files, a directory, and a stream on stdin as
`kubectl logs --prefix` prints it; every format; exit codes; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests import lab

FLEET_SCHEMA = json.loads((lab.ROOT / "diagnose" / "schema" / "fleet-v1.json").read_text())
# node -> what it runs into
NODES = {
    "node-a": "healthy",
    "node-b": "healthy",
    "node-c": "dns",
    "node-d": "dns",
    "node-e": "untrusted",
    "node-f": "tag",
    "node-g": "tag",
    "node-h": "tag",
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory, registry, pki, dns_server) -> dict[str, str]:
    """node -> its report, as one JSON line (what a DaemonSet pod prints)."""
    base = f"https://127.0.0.1:{registry.port}"
    lab.push_real_image(base, "fleet/app", "1.0", ca_file=pki.ca_file)
    home = tmp_path_factory.mktemp("fleet-home")
    out = {}
    for node, case in NODES.items():
        ref = f"127.0.0.1:{registry.port}/fleet/app:" + ("9.9" if case == "tag" else "1.0")
        more = ["--ca-bundle", str(pki.ca_file)]
        if case == "dns":
            ref = f"missing.test:{registry.port}/fleet/app:1.0"
            more += ["--nameserver", dns_server.nameserver]
        if case == "untrusted":
            more = []
        env = lab.clean_env(home)
        naming = ["--node-name", node]
        if node in ("node-a", "node-c"):  # the downward API's way
            env["NODE_NAME"], naming = node, []
        r = lab.diagnose(
            "check-health", ref, "--runtime", "docker", "-f", "jsonl", "-q", *more, *naming, env=env
        )
        assert r.rc == (0 if case == "healthy" else 1), (node, r.err, r.out[:500])
        assert r.out.count("\n") == 1, "one line"
        out[node] = r.out
    return out


def merge(*args: str, env: dict[str, str], stdin: str | None = None) -> lab.Run:
    r = lab.diagnose("merge", *args, env=env, stdin=stdin)
    assert "Traceback" not in r.err, r.err
    return r


@pytest.fixture
def report_dir(reports, tmp_path) -> Path:
    d = tmp_path / "reports"
    (d / "more").mkdir(parents=True)
    for i, (node, line) in enumerate(reports.items()):
        # pretty-printed, as `--format json -o` writes them; one in a sub-folder
        (d / ("more" if i == 3 else "") / f"{node}.json").write_text(
            json.dumps(json.loads(line), indent=2)
        )
    (d / "notes.txt").write_text("not a report, and not read: only *.json is")
    return d


def groups(fleet: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    return [(g["check"], g["code"], g["hosts"]) for g in fleet["groups"]]


EXPECTED = [
    ("manifest", "IMAGE_TAG_NOT_FOUND", ["node-f", "node-g", "node-h"]),
    ("dns", "CONNECTIVITY_DNS_ERROR", ["node-c", "node-d"]),
    ("tls", "CONNECTIVITY_SSL_ERROR", ["node-e"]),
]


def check_fleet(fleet: dict[str, Any]) -> None:
    jsonschema.validate(fleet, FLEET_SCHEMA)
    assert fleet["reports"] == len(NODES)
    assert sorted(fleet["passed"]) == ["node-a", "node-b"]
    assert sorted(fleet["failed"]) == sorted(n for n, c in NODES.items() if c != "healthy")
    got = [(c, code, sorted(h)) for c, code, h in groups(fleet)]
    assert got[: len(EXPECTED)] == EXPECTED, got  # the largest group first
    for g in fleet["groups"]:
        assert g["count"] == len(g["hosts"]) and g["summary"] and g["remediation"], g
        assert g["faq"] and all(k in fleet["faq"] for k in g["faq"]), g
    assert fleet["faq"]["manifest-unknown"]["remediation"]


def test_merge_a_directory_of_files(report_dir, env):
    r = merge(str(report_dir), "-f", "json", env=env)
    assert r.rc == 1, r.err
    check_fleet(json.loads(r.out))


def test_merge_a_kubectl_logs_stream_on_stdin(reports, env):
    """`kubectl logs -l ... --prefix` lines, in both prefix forms, with and without
    --timestamps; a report that names no node is named by its pod."""
    lines = []
    for i, line in enumerate(reports.values()):
        prefix = [
            f"[pod/registry-diagnose-{i:05d}/diagnose] ",
            f"pod/registry-diagnose-{i:05d} ",
            f"[pod/registry-diagnose-{i:05d}/diagnose] 2026-11-23T10:00:0{i}.123456789Z ",
        ][i % 3]
        lines.append(prefix + line)
    unnamed = json.loads(reports["node-a"])
    del unnamed["node"]
    lines.append("[pod/registry-diagnose-zzzzz/diagnose] " + json.dumps(unnamed) + "\n")
    r = merge("-", "-f", "json", env=env, stdin="\n" + "".join(lines) + "\n\n")
    assert r.rc == 1, r.err
    fleet = json.loads(r.out)
    assert "registry-diagnose-zzzzz" in fleet["passed"]
    fleet["passed"].remove("registry-diagnose-zzzzz")
    fleet["reports"] -= 1
    check_fleet(fleet)


def test_files_and_pretty_reports_concatenated_on_stdin(report_dir, reports, env):
    files = sorted(report_dir.rglob("*.json"))
    stream = "".join(p.read_text() + "\n" for p in files[:4])
    r = merge("-", *(str(p) for p in files[4:]), "-f", "json", env=env, stdin=stream)
    assert r.rc == 1, r.err
    check_fleet(json.loads(r.out))


def test_all_healthy_exits_0(reports, tmp_path, env):
    for node in ("node-a", "node-b"):
        (tmp_path / f"{node}.json").write_text(reports[node])
    r = merge(str(tmp_path / "node-a.json"), str(tmp_path / "node-b.json"), env=env)
    assert r.rc == 0, r.err
    assert "2 reports: 2 pass, 0 fail" in r.out and "nothing to fix" in r.out


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in ("meta", "br", "link"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.mark.parametrize("fmt", ["terminal", "markdown", "html"])
def test_every_format_shows_the_groups_largest_first(report_dir, env, fmt, tmp_path):
    out = tmp_path / f"fleet.{fmt}"
    r = merge(str(report_dir), "-f", fmt, "-o", str(out), env=env)
    assert r.rc == 1 and r.out == "", r.err
    text = out.read_text()
    if fmt == "html":
        parser = _Html()
        parser.feed(text)
        assert parser.open == ["html"] or parser.open == [], parser.open
        text = " ".join(parser.text)
    positions = [text.index(code) for _, code, _ in EXPECTED]
    assert positions == sorted(positions), fmt
    for _, _, hosts in EXPECTED:
        assert all(h in text for h in hosts)
    assert "8 reports: 2 pass, 6 fail" in text
    assert "manifest-unknown" in text  # the FAQ entry of the largest group


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("hello\n", "line 1: not a report"),
        ('{"a": 1}\n', "line 1: not a registry-diagnose report"),
        (
            '\n\n{"schema": "registry-diagnose/report/v1",\n  "x": [\n',
            "line 3: a report that does not end",
        ),
        ("", "empty"),
        ('{"schema": "registry-diagnose/report/v1", "checks": 3}\n', "without its summary"),
    ],
)
def test_input_that_is_not_a_report_exits_2_naming_it(tmp_path, env, reports, content, needle):
    good = tmp_path / "good.json"
    good.write_text(reports["node-a"])
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = merge(str(good), str(bad), env=env)
    assert r.rc == 2 and r.out == "", r.out
    assert r.err.count("\n") == 1 and needle in r.err and "bad.json" in r.err, r.err
    if content:  # the same on a stream names the line of the stream (after the good one)
        r = merge("-", env=env, stdin=reports["node-a"] + content)
        assert r.rc == 2 and r.err.startswith("diagnose: error: stdin line "), r.err


def test_other_bad_input(tmp_path, env):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    for args, needle in (
        ([str(tmp_path / "empty")], "no *.json"),
        ([str(tmp_path / "nope.json")], "no such file"),
        ([str(tmp_path / "bin.json")], "not UTF-8"),
        ([str(tmp_path / "bin.json"), "-f", "sarif"], "unknown format"),
    ):
        r = merge(*args, env=env, stdin="")
        assert r.rc == 2 and needle in r.err and r.err.count("\n") == 1, (args, r.err)
    p = subprocess.run(
        [sys.executable, "-m", "diagnose", "merge", "-"],
        input=b"\xff\xfe garbage\n",
        capture_output=True,
        env=env,
        cwd=lab.ROOT,
        timeout=60,
    )
    assert p.returncode == 2 and p.stderr.startswith(b"diagnose: error: stdin"), p.stderr
    assert p.stderr.count(b"\n") == 1


def test_5000_reports_merge_in_under_5s_with_flat_memory(tmp_path):
    """bench/bench_merge.py's fleet: a real report varied over 5,000 nodes, as kubectl logs
    --prefix lines; merged as a process in under 5 s, its peak memory about that of 500."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_merge", lab.ROOT / "bench" / "bench_merge.py"
    )
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    template = bench.real_report(tmp_path)
    figures = {}
    for n in (500, 5000):
        path = tmp_path / f"{n}.log"
        bench.fleet_logs(template, n, path)
        seconds, peak, fleet = bench.merge(path)
        failing = sum(1 for i in range(n) if bench.CAUSES[i % len(bench.CAUSES)])
        assert fleet["reports"] == n and len(fleet["failed"]) == failing
        figures[n] = (seconds, peak)
    assert figures[5000][0] < 5.0, figures
    assert figures[5000][1] < figures[500][1] * 1.3 + 5, figures
