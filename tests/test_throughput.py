"""Throughput over a shaped link: a registry in a test network namespace behind tbf and netem,
our figure against the shaped rate and against curl on the same link."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests import lab
from tests.conftest import validate_report

BLOB = 64 * 1024 * 1024
BUDGET = 8.0


@pytest.fixture(scope="module")
def shaped_registry(tmp_path_factory, pki):
    if os.geteuid() != 0 or shutil.which("tc") is None:
        pytest.skip("root and tc are needed to shape a link")
    d = tmp_path_factory.mktemp("shaped")
    cm = lab.netns_host(host_ip="198.18.1.1", ns_ip="198.18.1.2", name=f"rdq{os.getpid() % 10000}")
    try:
        ns, address = cm.__enter__()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network namespaces cannot be made here: {exc.stderr}")
    reg = None
    try:
        reg = lab.start_registry(
            d / "reg", *pki.leaf("shaped", address), host=address, netns=ns, port=5000
        )
        data = os.urandom(BLOB)
        lab.push_image(
            f"https://{address}:5000", "big/blob", "1", ca_file=pki.ca_file, layers=[data]
        )
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        yield ns, address, digest
    finally:
        if reg is not None:
            reg.stop()
        cm.__exit__(None, None, None)


def curl_rate(address, digest, ca_file, seconds):
    """curl's own figure for the same blob on the same link, bytes per second."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--cacert",
            str(ca_file),
            "--max-time",
            str(seconds),
            "-w",
            "%{speed_download}",
            f"https://{address}:5000/v2/big/blob/blobs/{digest}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 10,
    )
    return float(out.stdout.strip() or 0)


def _pull_throughput(address, pki, env, schema):
    r = lab.diagnose(
        "check-health",
        f"{address}:5000",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "big/blob",
        "--throughput",
        "--throughput-seconds",
        str(BUDGET),
        "--checks",
        "pull-throughput",
        "--skip",
        "internet-speed",
        "-f",
        "json",
        env=env,
        timeout=120,
    )
    validate_report(r.report, schema)
    c = r.check("pull-throughput")
    assert c["status"] in ("pass", "warn"), c
    return c


@pytest.mark.parametrize("rate_mbit", [20, 100])
def test_pull_throughput_matches_the_shaped_link_and_curl(
    shaped_registry, pki, env, schema, rate_mbit
):
    """Ours within 10 % of the shaped rate and of curl on the same link. A measurement on a
    shared 2-core machine can be dragged down by a busy neighbour, so each side gets a
    second try when the first falls outside the band: the better of two is compared."""
    ns, address, digest = shaped_registry
    lab.shape(ns, rate_mbit)
    shaped = rate_mbit * 1e6 / 8 / 1e6  # MB/s
    for attempt in range(2):
        c = _pull_throughput(address, pki, env, schema)
        ours = c["evidence"]["single_stream"]["mb_per_s"]
        theirs = curl_rate(address, digest, pki.ca_file, BUDGET / 2) / 1e6
        if abs(ours - shaped) / shaped <= 0.10 and abs(ours - theirs) / theirs <= 0.10:
            break
        if attempt == 0:
            time.sleep(1.0)
    assert abs(ours - shaped) / shaped <= 0.10, (ours, shaped)
    assert c["evidence"]["elapsed_s"] <= BUDGET + 1.0
    assert c["duration_s"] <= BUDGET + 1.5
    assert abs(ours - theirs) / theirs <= 0.10, (ours, theirs)
    phases = c["evidence"]["single_stream"]["phases_ms"]
    assert {"dns", "connect", "tls", "first_byte", "transfer"} <= set(phases)


def test_pull_throughput_verifies_digests_on_a_fast_link(shaped_registry, pki, env, schema):
    ns, address, _ = shaped_registry
    lab.shape(ns, 900)
    r = lab.diagnose(
        "check-health",
        f"{address}:5000",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "big/blob",
        "--throughput",
        "--throughput-seconds",
        "6",
        "--checks",
        "pull-throughput",
        "--skip",
        "internet-speed",
        "-f",
        "json",
        env=env,
        timeout=120,
    )
    c = r.check("pull-throughput")
    assert c["status"] == "pass", c
    assert c["evidence"]["single_stream"]["complete"] is True  # whole blob, digest checked


def test_slow_pull_warns_with_the_faq(shaped_registry, pki, env, schema):
    ns, address, _ = shaped_registry
    lab.shape(ns, 4)
    r = lab.diagnose(
        "check-health",
        f"{address}:5000",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "big/blob",
        "--throughput",
        "--throughput-seconds",
        "4",
        "--checks",
        "pull-throughput",
        "--skip",
        "internet-speed",
        "-f",
        "json",
        env=env,
        timeout=120,
    )
    validate_report(r.report, schema)
    c = r.check("pull-throughput")
    assert (c["status"], c["code"]) == ("warn", "SLOW_PULL")
    assert c["faq"] == ["slow-pull"]


def test_push_test_uploads_then_deletes(registry, pki, env, schema):
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "push/test",
        "--push-test",
        "--push-bytes",
        "3000000",
        "--checks",
        "push-throughput",
        "-f",
        "json",
        env=env,
    )
    validate_report(r.report, schema)
    c = r.check("push-throughput")
    assert c["status"] == "pass", c
    assert c["evidence"]["cleanup"] == "deleted"
    assert c["evidence"]["uploads"]["chunked"]["mb_per_s"] > 0


def test_throughput_checks_are_opt_in(registry, pki, env, schema):
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "push/test",
        "-f",
        "json",
        env=env,
    )
    for cid in ("pull-throughput", "push-throughput", "internet-speed"):
        assert r.check(cid)["status"] == "skip"


# ------------------------------------------------------------------ speedtest, offline
class _Mini(http.server.BaseHTTPRequestHandler):
    root: Path

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.rstrip("/") in ("", "/mini"):
            body = b'<html><script>var upload_extension: "php";</script></html>'
        elif path.endswith("latency.txt") or ".txt." in path:
            body = b"test=test\n"
        else:
            f = self.root / Path(path).name
            body = f.read_bytes() if f.is_file() else b""
            if not body:
                self.send_response(404)
                self.end_headers()
                return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        left = n
        while left > 0:
            left -= len(self.rfile.read(min(left, 65536)))
        body = f"size={n}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def speedtest_mini(tmp_path):
    folder = tmp_path / "mini"
    folder.mkdir()
    for size in (350, 500, 750, 1000):
        (folder / f"random{size}x{size}.jpg").write_bytes(os.urandom(size * size // 2))
    handler = type("M", (_Mini,), {"root": folder})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/mini/"
    srv.shutdown()
    srv.server_close()


def test_internet_speed_against_a_local_mini_server(speedtest_mini, env, schema):
    t0 = time.monotonic()
    r = lab.diagnose(
        "check-health",
        "--speedtest-mini",
        speedtest_mini,
        "--checks",
        "internet-speed",
        "-f",
        "json",
        env=env,
        timeout=90,
    )
    validate_report(r.report, schema)
    c = r.check("internet-speed")
    assert c["status"] == "pass", c
    assert c["evidence"]["download_mbps"] > 0 and c["evidence"]["upload_mbps"] > 0
    assert c["evidence"]["mini"] is True
    assert time.monotonic() - t0 < 60


def test_unreachable_speedtest_is_a_skip(env, schema):
    dead = lab.closed_port()
    r = lab.diagnose(
        "check-health",
        "--speedtest-mini",
        f"http://127.0.0.1:{dead}/mini/",
        "--checks",
        "internet-speed",
        "-f",
        "json",
        env=env,
        timeout=60,
    )
    c = r.check("internet-speed")
    assert c["status"] == "skip" and "no speedtest server reachable" in c["summary"]


def test_a_fast_link_is_not_reported_as_slow(registry, pki, env, schema):
    # on loopback a blob arrives within the warm-up window: the whole transfer is measured
    data = os.urandom(8 * 1024 * 1024)
    lab.push_image(
        f"https://127.0.0.1:{registry.port}", "fast/img", "1", ca_file=pki.ca_file, layers=[data]
    )
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "fast/img",
        "--throughput",
        "--throughput-seconds",
        "4",
        "--checks",
        "pull-throughput",
        "--skip",
        "internet-speed",
        "-f",
        "json",
        env=env,
    )
    validate_report(r.report, schema)
    c = r.check("pull-throughput")
    assert c["status"] == "pass", c
    assert c["evidence"]["single_stream"]["mb_per_s"] > 20
    assert c["evidence"]["multi_stream"]["mb_per_s"] > 20
