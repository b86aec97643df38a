"""The container image: the root Dockerfile built with the suite's own dockerd on a base made on
this machine (debootstrap from Debian's archive, Debian's python3; cached between runs), then
`check-health` run inside it as the DaemonSet runs it (host networking, a read-only root
filesystem, a non-root user, this host's root read-only at /host, `--host-root /host`) against
the suite's TLS registry. Its verdict and codes must equal the same run outside the container.

The image's size and the time to build it are printed (pytest -s) and the size is held under
150 MB unpacked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests import lab
from tests.base_image import debian_base, trust_layer
from tests.conftest import validate_report

TAG = "registry-diagnose:test"
LIMIT_MB = 150
needs = pytest.mark.skipif(
    not (shutil.which("debootstrap") and shutil.which("dockerd") and shutil.which("docker"))
    or os.geteuid() != 0,
    reason="debootstrap, dockerd, the docker CLI and root are needed",
)
pytestmark = [needs, pytest.mark.timeout(1800)]


def docker(host: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder: no buildx needed
    return subprocess.run(
        ["docker", "-H", host, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def figure(text: str) -> None:
    sys.__stderr__.write(f"\n[image] {text}\n")


def unmount_under(directory: Path) -> None:
    """dockerd leaves the host network namespace bound at exec/netns/default once a container
    ran with host networking: unmounted here, after the daemon stopped."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines()[::-1]:
        point = line.split()[4]
        if point.startswith(f"{directory}/"):
            subprocess.run(["umount", point], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(DOCKER_HOST, figures): the image built from the Dockerfile, on a debootstrap base."""
    d = tmp_path_factory.mktemp("dockerd-build")
    (d / "daemon.json").write_text("{}")
    t0 = time.monotonic()
    tarball, made = debian_base(d / "debootstrap.log")
    figures: dict[str, float] = {"base_s": made or time.monotonic() - t0}
    with contextlib.ExitStack() as stack:
        # the daemon's layers (vfs: a full copy each, about 2 GB) go when the tests end
        stack.callback(shutil.rmtree, d / "data", ignore_errors=True)
        stack.callback(unmount_under, d)
        host = stack.enter_context(lab.private_dockerd(d, d / "daemon.json"))
        p = docker(host, "import", str(tarball), "rd-debian:test", timeout=300)
        assert p.returncode == 0, p.stderr
        p = docker(
            host, "build", "-t", "rd-base:test", str(trust_layer(d / "trust", "rd-debian:test"))
        )
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        t0 = time.monotonic()
        p = docker(
            host,
            "build",
            "--network",
            "host",
            "--build-arg",
            "BASE=rd-base:test",
            "-t",
            TAG,
            str(lab.ROOT),
            timeout=1200,
        )
        figures["build_s"] = time.monotonic() - t0
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        sizes = [
            int(docker(host, "image", "inspect", "--format", "{{.Size}}", t).stdout)
            for t in (TAG, "rd-base:test")
        ]
        figures["image_mb"], figures["base_mb"] = (s / 1e6 for s in sizes)
        figure(
            f"base {f'made in {made:.0f}s' if made else 'from the cache'} ({tarball.name}); "
            f"build {figures['build_s']:.1f}s; image {figures['image_mb']:.1f} MB unpacked "
            f"(base {figures['base_mb']:.1f} MB + {figures['image_mb'] - figures['base_mb']:.1f} MB)"
        )
        yield host, figures


def test_image_is_small_labelled_and_non_root(image):
    host, figures = image
    assert figures["image_mb"] < LIMIT_MB, figures
    config = json.loads(docker(host, "image", "inspect", TAG).stdout)[0]["Config"]
    labels = config["Labels"]
    version = tomllib.loads((lab.ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.description"]
    assert config["Entrypoint"] == ["diagnose"]
    assert config["User"] and not config["User"].startswith(("0", "root"))
    # only the runtime: no pip, no build tree, no wheel
    p = docker(
        host,
        "run",
        "--rm",
        "--read-only",
        "--network",
        "host",
        "--entrypoint",
        "python3",
        TAG,
        "-c",
        "import importlib.util as u, os; print(u.find_spec('pip') is None, os.path.exists('/src'), "
        "os.path.exists('/dist'), os.getuid())",
    )
    assert p.stdout.split() == ["True", "False", "False", "65532"], p.stdout + p.stderr
    # on a terminal: the live view and the coloured report (rich, without pygments)
    p = docker(
        host, "run", "--rm", "-t", "--read-only", "--network", "host", TAG,
        "check-health", "127.0.0.1:1", "--checks", "tcp",
    )  # fmt: skip
    assert p.returncode == 1 and "\x1b[" in p.stdout and "Traceback" not in p.stdout, p.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory, registry, pki):
    """The suite's TLS registry holding team/app:1.0, and the CA where a non-root user in the
    container can read it (through /host)."""
    lab.push_real_image(f"https://127.0.0.1:{registry.port}", "ctr/app", "1.0", ca_file=pki.ca_file)
    shared = tmp_path_factory.mktemp("shared-ca")
    for p in (shared, *shared.parents):
        if str(p) in ("/", "/tmp"):
            break
        p.chmod(0o755)
    ca = shared / "ca.pem"
    shutil.copy(pki.ca_file, ca)
    ca.chmod(0o644)
    return f"127.0.0.1:{registry.port}", ca


def same_run_outside(args: list[str], ca: Path | None, env: dict[str, str], view: Path) -> lab.Run:
    """The same command on this machine, not in a container: this host's root seen read-only
    at a path of its own, as the container sees it at /host (a private mount namespace, so
    nothing changes on the host), with the same --host-root semantics (not the live host)."""
    script = (
        f"mkdir -p {view} && mount --rbind / {view} && mount -o remount,bind,ro {view} && "
        'exec "$0" "$@"'
    )
    cmd = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        sys.executable,
        "-m",
        "diagnose",
        *args,
        "--host-root",
        view,
        *(["--ca-bundle", f"{view}{ca}"] if ca else []),
    ]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, cwd=lab.ROOT)
    return lab.Run(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def verdict(report: dict[str, Any]) -> tuple[str, list[tuple[str, str | None, str, str | None]]]:
    return report["summary"]["status"], sorted(
        (c["id"], c["registry"], c["status"], c["code"]) for c in report["checks"]
    )


@pytest.mark.parametrize(
    ("case", "ref", "trust", "expect"),
    [
        ("healthy", "ctr/app:1.0", True, None),
        ("tag missing", "ctr/app:9.9", True, "IMAGE_TAG_NOT_FOUND"),
        ("untrusted certificate", "ctr/app:1.0", False, "CONNECTIVITY_SSL_ERROR"),
    ],
)
def test_verdict_in_the_container_equals_the_verdict_outside(
    image, served, env, schema, tmp_path, case, ref, trust, expect
):
    host, _ = image
    server, ca = served
    # docker's pull: podman's and containerd's own trust (certs.d) on this host does not hold
    # the suite's CA, which would fail those runtimes' checks on both sides alike
    args = ["check-health", f"{server}/{ref}", "--runtime", "docker", "--format", "json", "-q"]
    outside = same_run_outside(args, ca if trust else None, env, tmp_path / "host-view")
    assert outside.rc in (0, 1), outside.err
    p = docker(
        host,
        "run",
        "--rm",
        "--network",
        "host",
        "--read-only",
        "--user",
        "65532:65532",
        "--env",
        "NODE_NAME=node-in-container",
        "--volume",
        "/:/host:ro",
        TAG,
        *args,
        "--host-root",
        "/host",
        *(["--ca-bundle", f"/host{ca}"] if trust else []),
        timeout=180,
    )
    assert p.returncode == outside.rc, (case, p.returncode, p.stderr[-2000:])
    inside = json.loads(p.stdout)
    validate_report(inside, schema)
    assert inside["node"] == {"name": "node-in-container", "source": "env"}
    ours, theirs = verdict(inside), verdict(outside.report)
    assert ours == theirs, (case, set(ours[1]) ^ set(theirs[1]), p.stderr[-1000:])
    codes = {c["code"] for c in inside["checks"] if c["status"] in ("fail", "error")}
    assert (expect in codes) if expect else not codes, (case, codes)


def test_the_image_runs_the_exporter(image, served):
    """`serve` as the container's command: /metrics answers and a /probe of the suite's
    registry succeeds, read-only, non-root; the container stops on its own when asked."""
    import json as _json
    import urllib.request

    host, _ = image
    server, ca = served
    port = lab.free_port()
    name = f"rd-serve-{port}"
    started = docker(
        host,
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--user",
        "65532:65532",
        "--volume",
        "/:/host:ro",
        TAG,
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--ca-bundle",
        f"/host{ca}",
        "--host-root",
        "/host",
        "--min-interval",
        "0",
        "--runtime",  # podman's and containerd's own trust here does not hold the suite's CA
        "docker",
    )
    assert started.returncode == 0, started.stderr
    try:
        lab.wait_port(port, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert b"process_cpu_seconds_total" in r.read()
        url = f"http://127.0.0.1:{port}/probe?target={server}/ctr/app:1.0"
        with urllib.request.urlopen(url, timeout=60) as r:
            text = r.read().decode()
        assert "registry_diagnose_probe_success 1.0" in text, text[-3000:]
    finally:
        stopped = docker(host, "stop", "-t", "10", name, timeout=60)
        state = docker(host, "inspect", "--format", "{{json .State}}", name)
        docker(host, "rm", "-f", name)
    assert stopped.returncode == 0, stopped.stderr
    assert _json.loads(state.stdout)["ExitCode"] == 0, state.stdout
