"""The bytes themselves, and transfers that break. Each verdict is set beside the real clients'
on the same broken part: docker pull (the suite's own dockerd) and skopeo must fail too, and
name the same cause.

The parts: the real distribution registry whose stored config or layer is damaged on disk
(same size, other bytes), a front in the suite that cuts a layer after 1 MiB of 8 MiB, a
scripted registry answering the manifest with 429 and RateLimit headers, and hostile
registries (trickle, endless body, huge header, redirect loop, invalid UTF-8) run to their
deadline with their peak memory measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from diagnose import faq
from tests import hostile, lab
from tests.conftest import validate_report

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo (Debian package) is needed")
MiB = 1024 * 1024


def diag(env: dict[str, str], schema: Any, *args: str, ca: Path) -> lab.Run:
    r = lab.diagnose(
        "check-health", "--format", "json", "--quiet", "--ca-bundle", str(ca), *args, env=env
    )
    assert r.rc in (0, 1), (r.rc, r.err)
    assert "Traceback" not in r.err, r.err
    validate_report(r.report, schema)
    return r


def skopeo_copy(ref: str, dest: Path) -> subprocess.CompletedProcess[str]:
    shutil.rmtree(dest, ignore_errors=True)
    return lab.skopeo(
        "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{dest}", timeout=120
    )


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory):
    """A private dockerd that tries a layer once (max-download-attempts 1), so a cut layer
    fails at once instead of after docker's backoff."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None or os.geteuid() != 0:
        pytest.skip("dockerd, the docker CLI and root are needed")
    d = tmp_path_factory.mktemp("dockerd-bytes")
    (d / "daemon.json").write_text(json.dumps({"max-download-attempts": 1}))
    try:
        with lab.private_dockerd(d, d / "daemon.json") as host:
            yield host
    except RuntimeError as exc:
        pytest.skip(str(exc))


def docker_pull(host: str, ref: str) -> subprocess.CompletedProcess[str]:
    subprocess.run(["docker", "-H", host, "rmi", "-f", ref], capture_output=True, timeout=60)
    return subprocess.run(
        ["docker", "-H", host, "pull", ref], capture_output=True, text=True, timeout=180
    )


def explained(text: str) -> list[str]:
    """The FAQ keys the knowledge base gives a client's error line, best first."""
    return [m.key for m in faq.match_line(text)]


# ------------------------------------------------------------------ damaged on disk
def _blob_file(reg: lab.Registry, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return reg.root / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def _damage(path: Path) -> None:
    """Same size, one byte changed: only a digest check can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, pki, good_cert):
    """A registry holding gt/good:1 (intact), gt/config:1 (its config damaged on disk) and
    gt/layer:1 (its layer damaged on disk)."""
    reg = lab.start_registry(tmp_path_factory.mktemp("damaged"), *good_cert)
    base = f"https://127.0.0.1:{reg.port}"
    lab.push_real_image(base, "gt/good", "1", ca_file=pki.ca_file, payload=64 * 1024)
    cfg = lab.push_real_image(base, "gt/config", "1", ca_file=pki.ca_file, payload=1000)
    lay = lab.push_real_image(base, "gt/layer", "1", ca_file=pki.ca_file, payload=300 * 1024)
    _damage(_blob_file(reg, cfg["config"]["digest"]))
    _damage(_blob_file(reg, lay["layers"][0]["digest"]))
    yield f"127.0.0.1:{reg.port}", cfg, lay
    reg.stop()


@needs_skopeo
@pytest.mark.parametrize("which", ["config", "layer"])
def test_blob_damaged_on_disk_fails_as_the_clients_fail(
    which, damaged, env, schema, pki, dockerd, tmp_path
):
    server, cfg, lay = damaged
    ref = f"{server}/gt/{which}:1"
    desc = cfg["config"] if which == "config" else lay["layers"][0]
    r = diag(env, schema, ref, ca=pki.ca_file)
    assert r.rc == 1
    c = r.check("image-blobs")
    assert (c["status"], c["code"]) == ("fail", "BLOB_DIGEST_MISMATCH"), c
    assert "digest mismatch" in c["summary"] and desc["digest"][:19] in c["summary"]
    assert c["faq"][0] == "blob-digest-mismatch"
    assert c["evidence"]["received_size"] == desc["size"]  # same size: only the digest tells
    # theirs: docker and skopeo refuse the same blob, naming a digest that does not verify
    theirs = docker_pull(dockerd, ref)
    print("docker:", theirs.stderr.strip()[-300:])
    assert theirs.returncode != 0, theirs.stdout
    assert "verification failed" in theirs.stderr or "digest" in theirs.stderr, theirs.stderr
    assert desc["digest"].split(":")[1][:12] in theirs.stderr + theirs.stdout, theirs.stderr
    assert explained(theirs.stderr.strip().splitlines()[-1])[0] == "blob-digest-mismatch"
    theirs = skopeo_copy(ref, tmp_path / "out")
    print("skopeo:", theirs.stderr.strip()[-300:])
    assert theirs.returncode != 0
    assert "does not match expected" in theirs.stderr or "Digest did not match" in theirs.stderr
    assert explained(theirs.stderr.strip().splitlines()[-1])[0] == "blob-digest-mismatch"
    # the intact image: both pass
    good = f"{server}/gt/good:1"
    r = diag(env, schema, good, ca=pki.ca_file)
    assert r.rc == 0 and r.check("image-blobs")["evidence"]["verified"] == 2, r.check("image-blobs")
    assert docker_pull(dockerd, good).returncode == 0
    assert skopeo_copy(good, tmp_path / "good").returncode == 0


# -------------------------------------------------------------------- a layer cut short
@pytest.fixture(scope="module")
def cut(tmp_path_factory, pki, good_cert):
    """gt/big:1 with an 8 MiB layer, behind a front that cuts that layer after 1 MiB."""
    reg = lab.start_registry(tmp_path_factory.mktemp("cut"), *good_cert)
    m = lab.push_real_image(
        f"https://127.0.0.1:{reg.port}", "gt/big", "1", ca_file=pki.ca_file, payload=8 * MiB
    )
    layer = m["layers"][0]
    with hostile.cutting_front(
        reg.port, lab.server_context(*good_cert), layer["digest"], cut_after=MiB
    ) as front:
        yield f"127.0.0.1:{front.port}", f"127.0.0.1:{reg.port}", layer, front
    reg.stop()


@needs_skopeo
def test_layer_cut_mid_transfer_says_how_where_and_after_how_much(
    cut, env, schema, pki, dockerd, tmp_path
):
    front, direct, layer, seen = cut
    ref = f"{front}/gt/big:1"
    r = diag(env, schema, ref, ca=pki.ca_file)
    c = r.check("image-blobs")
    assert (c["status"], c["code"]) == ("fail", "TRANSFER_CUT"), c
    s = c["summary"]
    assert f"after {MiB:,} of {layer['size']:,} bytes" in s, s
    assert f"closed early by {front} (the registry)" in s and "on attempt 2" in s, s
    assert "OSError" not in s and "Error" not in s
    assert c["faq"][0] == "transfer-cut-short"
    assert c["evidence"]["transfer"]["received"] == MiB
    assert c["evidence"]["retried"][0]["kind"] == "closed"  # the first attempt, kept
    gets = [q for q in seen.requests if q["path"].endswith(layer["digest"])]
    assert len(gets) == 2, gets  # read whole twice: the clients retry a cut layer too
    # theirs: docker and skopeo fail on the same layer with Go's unexpected EOF
    theirs = docker_pull(dockerd, ref)
    print("docker:", theirs.stderr.strip()[-300:])
    assert theirs.returncode != 0 and "unexpected EOF" in theirs.stderr, theirs.stderr
    assert explained(theirs.stderr.strip().splitlines()[-1])[0] == "transfer-cut-short"
    theirs = skopeo_copy(ref, tmp_path / "cut")
    print("skopeo:", theirs.stderr.strip()[-300:])
    assert theirs.returncode != 0 and "unexpected EOF" in theirs.stderr, theirs.stderr
    # straight from the registry, nothing is cut: all pass
    r = diag(env, schema, f"{direct}/gt/big:1", ca=pki.ca_file)
    assert r.rc == 0 and r.check("image-blobs")["evidence"]["verified"] == 2
    assert skopeo_copy(f"{direct}/gt/big:1", tmp_path / "whole").returncode == 0


# ---------------------------------------------- 429 met by blob-redirect, not a skip
def _rate_limited_manifest(method: str, path: str, headers: dict[str, str]) -> lab.Answer:
    p = path.split("?")[0]
    if p == "/v2/":
        return 200, {"Docker-Distribution-API-Version": "registry/2.0"}, b"{}"
    if p.endswith("/tags/list"):
        return 200, {"Content-Type": "application/json"}, b'{"name":"lib/app","tags":["1"]}'
    return (
        429,
        {
            "Content-Type": "application/json",
            "RateLimit-Limit": "100;w=21600",
            "RateLimit-Remaining": "0;w=21600",
            "Retry-After": "1",
        },
        lab.registry_errors("TOOMANYREQUESTS", "You have reached your pull rate limit."),
    )


@needs_skopeo
def test_blob_redirect_reports_a_429_with_its_rate_limit(env, schema, pki, good_cert, tmp_path):
    with lab.scripted_https(_rate_limited_manifest, lab.server_context(*good_cert)) as front:
        server = f"127.0.0.1:{front.port}"
        r = diag(env, schema, server, "--repository", "lib/app", ca=pki.ca_file)
        theirs = skopeo_copy(f"{server}/lib/app:1", tmp_path / "rl")
    assert r.rc == 1
    c = r.check("blob-redirect")
    assert (c["status"], c["code"]) == ("fail", "RATE_LIMITED"), c
    assert c["faq"] == ["rate-limit"]
    assert "0 of 100 pulls left per 6 h" in c["summary"], c["summary"]
    assert c["evidence"]["rate_limit"]["remaining"] == 0
    assert c["evidence"]["rate_limit"]["retry_after_s"] == 1
    assert any("Retry after 1 s" in step for step in c["remediation"])
    assert theirs.returncode != 0 and "toomanyrequests" in theirs.stderr.lower(), theirs.stderr


# ------------------------------------------------------------------- hostile registries
# The CLI as the installed command runs it, reporting at its end its own peak resident memory
# (VmHWM: the high-water mark of this process's memory since it started, which the rusage of
# a child would not give: Linux carries the forking parent's high-water mark across exec).
MEASURED = """
import os, sys
from diagnose import cli
from diagnose.environment import Environment
code = cli.run(sys.argv[1:], Environment.from_process())
sys.stdout.flush()
with open("/proc/self/status") as fh:
    peak = next(line for line in fh if line.startswith("VmHWM:")).split()[1]
sys.stderr.write(f"PEAK_KIB {peak}\\n")
sys.stderr.flush()
os._exit(code)
"""


def _run_measured(args: list[str], env: dict[str, str], timeout: float) -> tuple[Any, float, int]:
    """The CLI in a process of its own: its report, wall time and peak resident memory (KiB)."""
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-c", MEASURED, *args],
        capture_output=True,
        env=env,
        cwd=str(lab.ROOT),
        timeout=timeout + 30,
    )
    took = time.monotonic() - t0
    err = p.stderr.decode("utf-8", "replace")
    assert took < timeout, took
    assert p.returncode in (0, 1), (p.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    peak = int(err.rsplit("PEAK_KIB ", 1)[1].split()[0])
    return json.loads(p.stdout), took, peak


HOSTILE = [
    # (mode, target, the check that meets it, its code, what the report must say, and what
    # skopeo says on the same server: None where it would wait without end, as Go does)
    ("trickle", "v2", "api", "CONNECTIVITY_ERROR", "it trickles", None),
    ("trickle", "manifest", "manifest", "TRANSFER_STALLED", "it trickles", None),
    ("trickle", "config", "image-blobs", "TRANSFER_STALLED", "it trickles", None),
    (
        "endless",
        "manifest",
        "manifest",
        "MANIFEST_TOO_LARGE",
        "larger than the 4 MiB",
        "exceeded maximum allowed size of 4194304 bytes",
    ),
    ("endless", "config", "image-blobs", "BLOB_SIZE_MISMATCH", "sent more than", None),
    ("huge-header", "v2", "api", "CONNECTIVITY_ERROR", "a header line over 64 KiB", ""),
    (
        "huge-header",
        "manifest",
        "manifest",
        "REGISTRY_PROTOCOL_ERROR",
        "header line over 64",
        "transport connection broken",
    ),
    (
        "redirect-loop",
        "manifest",
        "manifest",
        "REGISTRY_PROTOCOL_ERROR",
        "redirects without end",
        "stopped after 10 redirects",
    ),
    ("redirect-loop", "config", "image-blobs", "REGISTRY_PROTOCOL_ERROR", "a loop", None),
    ("bad-utf8", "manifest", "manifest", "REGISTRY_ERROR", "not valid UTF-8 (byte 0xff", ""),
]
DEADLINE = 6.0
PEAK_KIB = 150 * 1024
PEAKS: dict[str, int] = {}


@pytest.mark.parametrize(("mode", "target", "check", "code", "says", "theirs"), HOSTILE)
def test_hostile_registry_ends_by_its_deadline_in_bounded_memory(
    mode, target, check, code, says, theirs, env, schema, pki, good_cert
):
    with hostile.hostile_registry(mode, target, lab.server_context(*good_cert)) as h:
        report, took, peak = _run_measured(
            [
                "check-health",
                f"127.0.0.1:{h.port}/team/app:1.0",
                "--ca-bundle",
                str(pki.ca_file),
                "--timeout",
                str(DEADLINE),
                "-f",
                "json",
                "-q",
                "--host-root",
                str(lab.empty_root()),
            ],
            env,
            timeout=DEADLINE + 6.0,  # the deadline, plus the interpreter's start and exit
        )
        if theirs is not None and SKOPEO is not None:
            ref = f"docker://127.0.0.1:{h.port}/team/app:1.0"
            got = subprocess.run(
                [SKOPEO, "--insecure-policy", "inspect", "--tls-verify=false", ref],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert got.returncode != 0 and theirs in got.stderr, got.stderr
    validate_report(report, schema)
    PEAKS[f"{mode}/{target}"] = peak
    print(f"{mode} on {target}: {took:.2f} s, peak RSS {peak / 1024:.1f} MiB")
    assert peak < PEAK_KIB, f"peak resident memory {peak / 1024:.1f} MiB"
    found = next(c for c in report["checks"] if c["id"] == check)
    assert (found["status"], found["code"]) == ("fail", code), found
    assert says in found["summary"], found["summary"]
    assert found["faq"], found
    # the checks that met it end with what the server did, never a check timeout
    assert not [c for c in report["checks"] if c["code"] == "CHECK_TIMEOUT"], report["checks"]


# --------------------------------------------- not a success, wherever a check meets it
INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": hostile.MANIFEST_DIGEST,
                "size": len(hostile.MANIFEST),
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": hostile.MANIFEST_DIGEST,
                "size": len(hostile.MANIFEST),
                "platform": {"os": "linux", "architecture": "arm64"},
            },
        ],
    }
).encode()
LIMITED = {
    "Content-Type": "application/json",
    "RateLimit-Limit": "100;w=21600",
    "RateLimit-Remaining": "0;w=21600",
}


def _failing_at(where: str, status: int):
    """A registry that serves an index (tag 1), its image, config and layer, and answers
    `status` (with rate-limit headers and the spec's error body) at `where` only."""
    body = lab.registry_errors(
        "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE", f"planted {status} at {where}"
    )

    def answer(method: str, path: str, headers: dict[str, str]) -> lab.Answer:
        p = path.split("?")[0]
        kind = (
            "v2"
            if p == "/v2/"
            else "tags"
            if p.endswith("/tags/list")
            else "index"
            if p.endswith("/manifests/1")
            else "image"
            if "/manifests/" in p
            else "config"
            if p.endswith(hostile.CONFIG_DIGEST)
            else "layer"
        )
        if kind == "v2" and "Authorization" not in headers:
            return 401, {"WWW-Authenticate": 'Basic realm="r"'}, b"{}"
        if kind == where:
            return status, LIMITED, body
        if kind == "v2":
            return 200, {}, b"{}"
        if kind == "tags":
            return 200, {"Content-Type": "application/json"}, b'{"name":"t/a","tags":["1"]}'
        if kind == "index":
            return 200, {"Content-Type": "application/vnd.oci.image.index.v1+json"}, INDEX
        if kind == "image":
            ctype = {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}
            return 200, ctype, hostile.MANIFEST
        return 200, {}, hostile.CONFIG if kind == "config" else hostile.LAYER

    return answer


@pytest.mark.parametrize(
    ("where", "status", "check", "code", "more"),
    [
        ("tags", 429, "authorized-request", "RATE_LIMITED", ()),
        ("tags", 503, "authorized-request", "REGISTRY_ERROR", ()),
        ("image", 429, "platform", "RATE_LIMITED", ()),
        ("image", 503, "platform", "REGISTRY_ERROR", ()),
        ("config", 429, "image-blobs", "RATE_LIMITED", ()),
        ("layer", 503, "image-blobs", "REGISTRY_ERROR", ()),
        (
            "layer",
            429,
            "pull-throughput",
            "RATE_LIMITED",
            ("--throughput", "--throughput-seconds", "2", "--skip", "internet-speed"),
        ),
    ],
)
def test_every_answer_that_is_not_a_success_is_a_finding(
    where, status, check, code, more, env, schema, pki, good_cert
):
    with lab.scripted_https(_failing_at(where, status), lab.server_context(*good_cert)) as f:
        r = lab.diagnose(
            "check-health",
            f"127.0.0.1:{f.port}/t/a:1",
            "--ca-bundle",
            str(pki.ca_file),
            "-u",
            "user",
            "--password-stdin",
            "-f",
            "json",
            "-q",
            *more,
            env=env,
            stdin="pw",
        )
    validate_report(r.report, schema)
    c = r.check(check)
    assert (c["status"], c["code"]) == ("fail", code), c
    assert c["evidence"]["status"] == status
    assert c["evidence"]["rate_limit"]["remaining"] == 0, c["evidence"]
    assert f"planted {status} at {where}" in c["summary"], c["summary"]
    assert c["faq"][0] == ("rate-limit" if status == 429 else "client-timeout"), c["faq"]


# ------------------------------------- the manifest against the digest the registry states
@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    """A private containerd (no CRI) for ctr."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None or os.geteuid() != 0:
        pytest.skip("containerd, ctr and root are needed")
    d = tmp_path_factory.mktemp("containerd-bytes")
    (d / "config.toml").write_text(
        f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{d}/containerd.sock"\n'
    )
    log = (d / "containerd.log").open("wb")
    proc = subprocess.Popen(
        ["containerd", "--config", str(d / "config.toml")], stdout=log, stderr=log
    )
    try:
        for _ in range(150):
            if (d / "containerd.sock").exists():
                break
            time.sleep(0.1)
        else:
            pytest.skip("containerd did not start")
        yield d
    finally:
        lab.stop_process(proc)
        log.close()


def ctr_fetch(d: Path, port: int, ca: Path, ref: str) -> subprocess.CompletedProcess[str]:
    """ctr content fetch (resolve, then every blob, each checked; nothing unpacked)."""
    hosts = d / f"certs-{port}" / f"127.0.0.1:{port}"
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(
        f'server = "https://127.0.0.1:{port}"\n[host."https://127.0.0.1:{port}"]\n'
        f'  capabilities = ["pull", "resolve"]\n  ca = "{ca}"\n'
    )
    return subprocess.run(
        [
            "ctr",
            "--address",
            str(d / "containerd.sock"),
            "-n",
            f"t{time.monotonic_ns()}",
            "content",
            "fetch",
            "--hosts-dir",
            str(hosts.parent),
            ref,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _stating(digest: str):
    def answer(method: str, path: str, headers: dict[str, str]) -> lab.Answer:
        p = path.split("?")[0]
        if p == "/v2/":
            return 200, {}, b"{}"
        if "/manifests/" in p:
            ctype = "application/vnd.docker.distribution.manifest.v2+json"
            return 200, {"Content-Type": ctype, "Docker-Content-Digest": digest}, hostile.MANIFEST
        if p.endswith(hostile.CONFIG_DIGEST):
            return 200, {}, hostile.CONFIG
        return 200, {}, hostile.LAYER

    return answer


@pytest.mark.parametrize("stated", ["sha256:" + "1" * 64, hostile.MANIFEST_DIGEST])
def test_manifest_against_the_digest_the_registry_states(
    stated, containerd, env, schema, pki, good_cert
):
    with lab.scripted_https(_stating(stated), lab.server_context(*good_cert)) as f:
        ref = f"127.0.0.1:{f.port}/team/app:1.0"
        r = diag(env, schema, ref, ca=pki.ca_file)
        theirs = ctr_fetch(containerd, f.port, pki.ca_file, ref)
    c = r.check("manifest")
    if stated == hostile.MANIFEST_DIGEST:  # the registry says what it sends: both pass
        assert c["status"] == "pass" and r.rc == 0, c
        assert theirs.returncode == 0, theirs.stderr
        return
    assert (c["status"], c["code"]) == ("fail", "MANIFEST_DIGEST_MISMATCH"), c
    assert "Docker-Content-Digest" in c["summary"] and "containerd" in c["summary"]
    assert c["evidence"]["stated_digest"] == stated
    assert theirs.returncode != 0 and "unexpected commit digest" in theirs.stderr, theirs.stderr
    assert explained(theirs.stderr.strip().splitlines()[-1])[0] == "blob-digest-mismatch"
