"""The docker host: fixture roots for the files, a dockerd-named process for the process table,
and the real dockerd (Debian docker.io) for the Engine API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests import lab
from tests.conftest import validate_report

FEDORA_OPTIONS = "OPTIONS='--selinux-enabled --log-driver=journald --live-restore'"


def make_root(
    base: Path,
    *,
    os_id: str = "ubuntu",
    os_like: str = "debian",
    sysconfig: str | None = None,
    daemon_json: str | None = None,
    log: str | None = None,
    dropin: str | None = None,
) -> Path:
    root = base / f"root-{os_id}-{time.monotonic_ns()}"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc" / "os-release").write_text(
        f'ID={os_id}\nID_LIKE="{os_like}"\nPRETTY_NAME="{os_id} test"\n'
    )
    if sysconfig is not None:
        (root / "etc" / "sysconfig").mkdir()
        (root / "etc" / "sysconfig" / "docker").write_text(sysconfig)
    if daemon_json is not None:
        (root / "etc" / "docker").mkdir()
        (root / "etc" / "docker" / "daemon.json").write_text(daemon_json)
    if log is not None:
        (root / "var" / "log").mkdir(parents=True)
        (root / "var" / "log" / "docker.log").write_text(log)
    if dropin is not None:
        d = root / "etc" / "systemd" / "system" / "docker.service.d"
        d.mkdir(parents=True)
        (d / "http-proxy.conf").write_text(dropin)
    return root


def run(env, schema, registry, pki, root, *more, name=None):
    r = lab.diagnose(
        "check-health",
        name or f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--host-root",
        str(root),
        "-f",
        "json",
        "-q",
        *more,
        env=env,
    )
    assert r.rc in (0, 1) and "Traceback" not in r.err, r.err
    validate_report(r.report, schema)
    return r


# --------------------------------------------------------------------- fixture roots
def test_fedora_28_signature_verification(registry, pki, env, schema, tmp_path):
    root = make_root(
        tmp_path, os_id="fedora", os_like="", sysconfig=f"# docker\n{FEDORA_OPTIONS}\n"
    )
    r = run(env, schema, registry, pki, root)
    c = r.check("daemon-options")
    assert (c["status"], c["code"]) == ("fail", "SIGNATURE_VERIFICATION")
    assert c["faq"] == ["signature-verification"]
    assert (
        "In /etc/sysconfig/docker write: OPTIONS='--selinux-enabled --log-driver=journald "
        "--live-restore --signature-verification=false'"
    ) in c["remediation"]
    assert any("systemctl restart docker" in s for s in c["remediation"])
    assert r.rc == 1


def test_rhel_7_with_verification_off_is_fine(registry, pki, env, schema, tmp_path):
    root = make_root(
        tmp_path,
        os_id="rhel",
        os_like="fedora",
        sysconfig=(
            "OPTIONS='--selinux-enabled --log-driver=journald --signature-verification=false'\n"
            "ADD_REGISTRY='--add-registry registry.access.redhat.com'\n"
        ),
    )
    r = run(env, schema, registry, pki, root)
    c = r.check("daemon-options")
    assert c["status"] == "pass", c
    assert c["evidence"]["sysconfig_options"][-1] == "--signature-verification=false"
    assert r.rc == 0


def test_ubuntu_valid_daemon_json(registry, pki, env, schema, tmp_path):
    root = make_root(tmp_path, daemon_json='{"debug": true, "log-driver": "json-file"}')
    c = run(env, schema, registry, pki, root).check("daemon-options")
    assert c["status"] == "pass" and c["evidence"]["debug"] is True
    assert "debug logging is off" not in c["summary"]


def test_debug_off_says_how_to_turn_it_on(registry, pki, env, schema, tmp_path):
    root = make_root(tmp_path, daemon_json="{}")
    c = run(env, schema, registry, pki, root).check("daemon-options")
    assert c["status"] == "pass" and "debug logging is off" in c["summary"]
    assert c["faq"] == ["docker-debug-logs"]


def test_invalid_daemon_json_gives_line_and_column(registry, pki, env, schema, tmp_path):
    root = make_root(tmp_path, daemon_json='{\n  "debug": true,\n  "insecure-registries": [,]\n}')
    c = run(env, schema, registry, pki, root).check("daemon-options")
    assert (c["status"], c["code"]) == ("fail", "DAEMON_CONFIG_ERROR")
    assert "line 3 column" in c["summary"]


def test_wrong_types_in_daemon_json(registry, pki, env, schema, tmp_path):
    root = make_root(tmp_path, daemon_json='{"debug": "yes", "insecure-registries": "x"}')
    c = run(env, schema, registry, pki, root).check("daemon-options")
    assert (c["status"], c["code"]) == ("fail", "DAEMON_CONFIG_ERROR")
    assert '"debug" must be true or false' in c["summary"]
    assert '"insecure-registries" must be an array' in c["summary"]


def test_registry_listed_as_insecure(registry, pki, env, schema, tmp_path, dns_server):
    root = make_root(
        tmp_path,
        daemon_json=json.dumps(
            {"debug": True, "insecure-registries": [f"registry.test:{registry.port}"]}
        ),
    )
    r = run(
        env,
        schema,
        registry,
        pki,
        root,
        "--nameserver",
        dns_server.nameserver,
        name=f"registry.test:{registry.port}",
    )
    c = r.check("daemon-options")
    assert (c["status"], c["code"]) == ("warn", "INSECURE_REGISTRY")
    assert c["faq"] == ["tls12"]


def test_insecure_by_cidr(registry, pki, env, schema, tmp_path, dns_server):
    root = make_root(
        tmp_path, daemon_json='{"debug": true, "insecure-registries": ["127.0.0.0/8"]}'
    )
    r = run(
        env,
        schema,
        registry,
        pki,
        root,
        "--nameserver",
        dns_server.nameserver,
        name=f"registry.test:{registry.port}",
    )
    assert r.check("daemon-options")["code"] == "INSECURE_REGISTRY"


def test_blocked_registry(registry, pki, env, schema, tmp_path):
    root = make_root(
        tmp_path,
        os_id="centos",
        os_like="rhel fedora",
        sysconfig=(
            "OPTIONS='--signature-verification=false'\n"
            f"BLOCK_REGISTRY='--block-registry 127.0.0.1:{registry.port}'\n"
        ),
    )
    c = run(env, schema, registry, pki, root).check("daemon-options")
    assert (c["status"], c["code"]) == ("fail", "REGISTRY_BLOCKED")


def test_daemon_proxy_from_systemd_dropin(registry, pki, env, schema, tmp_path, dns_server):
    """The daemon's proxy as Go applies it: never for a literal loopback address, but for a name
    that resolves to one (the real dockerd shows both below)."""
    dead = lab.closed_port()
    root = make_root(
        tmp_path,
        daemon_json='{"debug": true}',
        dropin=(
            "[Service]\n"
            f'Environment="HTTPS_PROXY=http://proxyuser:PLANTED-proxy-pw@127.0.0.1:{dead}" '
            '"NO_PROXY=localhost"\n'
        ),
    )
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n127.0.0.1 registry.test\n")
    r = run(env, schema, registry, pki, root)
    assert r.check("daemon-options")["evidence"]["proxies"]["HTTPS_PROXY"].endswith(
        f"127.0.0.1:{dead}"
    )
    c = r.check("daemon-proxy")
    assert c["status"] == "pass" and "loopback" in c["summary"], c
    name = f"registry.test:{registry.port}"
    more = ("--nameserver", dns_server.nameserver)
    r = run(env, schema, registry, pki, root, *more, name=name)
    c = r.check("daemon-proxy")
    # a fixture root with no daemon socket and no /proc: whether this is the daemon's network
    # cannot be told, so the dead proxy stays a warning, with the reason
    assert (c["status"], c["code"]) == ("warn", "DAEMON_PROXY_ERROR"), c
    assert f"127.0.0.1:{dead}" in c["summary"] and "connection refused" in c["summary"], c
    assert "cannot be told" in c["summary"] and c["evidence"]["vantage"]["shares_network"] is None
    assert "PLANTED-proxy-pw" not in r.out + r.err
    # the same proxy with NO_PROXY covering the registry: not used, nothing to say
    root2 = make_root(
        tmp_path,
        daemon_json=json.dumps(
            {
                "debug": True,
                "proxies": {"https-proxy": f"http://127.0.0.1:{dead}", "no-proxy": "registry.test"},
            }
        ),
    )
    c = run(env, schema, registry, pki, root2, *more, name=name).check("daemon-proxy")
    assert c["status"] == "pass" and "NO_PROXY (registry.test) covers it" in c["summary"], c


def test_daemon_log_lines_map_to_the_faq(registry, pki, env, schema, tmp_path):
    root = make_root(
        tmp_path,
        daemon_json='{"debug": true}',
        log=(
            'level=info msg="Daemon has completed initialization"\n'
            'level=error msg="Handler for POST /v1.41/images/create returned error: Get '
            '\\"https://myreg.azurecr.io/v2/\\": net/http: request canceled while waiting for '
            'connection (Client.Timeout exceeded while awaiting headers)"\n'
        ),
    )
    c = run(env, schema, registry, pki, root).check("daemon-log")
    assert (c["status"], c["code"]) == ("warn", "DAEMON_LOG_ERRORS")
    assert c["faq"][0] == "client-timeout"
    assert c["evidence"]["log"] == "/var/log/docker.log"


def test_content_trust_is_reported(registry, pki, env, schema, tmp_path, home):
    tuf = home / ".docker" / "trust" / "tuf" / f"127.0.0.1:{registry.port}" / "team" / "app"
    (tuf / "metadata").mkdir(parents=True)
    (tuf / "metadata" / "root.json").write_text("{}")
    root = make_root(tmp_path)
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--host-root",
        str(root),
        "-f",
        "json",
        env={**env, "DOCKER_CONTENT_TRUST": "1"},
    )
    c = r.check("content-trust")
    assert c["status"] == "pass" and c["faq"] == ["content-trust"]
    assert "content trust is on" in c["summary"] and "1 repositories" in c["summary"]


def test_no_docker_at_all(registry, pki, env, schema, tmp_path):
    r = run(env, schema, registry, pki, make_root(tmp_path))
    assert r.rc == 0
    for cid in ("docker-daemon", "docker-version", "daemon-log"):
        c = r.check(cid)
        assert c["status"] == "skip", c
    assert all(r.check(c)["status"] in ("pass", "skip") for c in ("tls", "api", "tcp"))


def test_checks_change_nothing_on_the_host(registry, pki, env, schema, tmp_path):
    root = make_root(
        tmp_path,
        os_id="fedora",
        os_like="",
        sysconfig=FEDORA_OPTIONS + "\n",
        daemon_json='{"debug": "yes"}',
        log="level=error msg=x\n",
    )
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    run(env, schema, registry, pki, root)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    assert before == after


# ------------------------------------------------------------- the process table path
@pytest.fixture
def fake_red_hat_daemon(tmp_path):
    exe = tmp_path / "bin" / "dockerd"
    exe.parent.mkdir()
    exe.write_text("#!/usr/bin/env python3\nimport time\ntime.sleep(60)\n")
    exe.chmod(0o755)
    proc = subprocess.Popen(
        [
            str(exe),
            "--selinux-enabled",
            "--signature-verification=true",
            "--insecure-registry",
            "10.9.9.9:5000",
        ]
    )
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait()


def test_dockerd_command_line_from_the_process_table(
    fake_red_hat_daemon, registry, pki, env, schema
):
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--host-root",
        "/",
        "--docker-host",
        "unix:///nonexistent/docker.sock",
        "-f",
        "json",
        "-q",
        "--checks",
        "docker-daemon,daemon-options",
        env=env,
    )
    validate_report(r.report, schema)
    daemon = r.check("docker-daemon")
    pids = [p["pid"] for p in daemon["evidence"]["processes"]]
    assert fake_red_hat_daemon.pid in pids
    assert (daemon["status"], daemon["code"]) == ("fail", "DOCKER_DAEMON_ERROR")
    assert "runs (pid" in daemon["summary"]
    # daemon-options is skipped: it depends on the daemon check, which failed
    assert r.check("daemon-options")["summary"] == "blocked by docker-daemon"


# ------------------------------------------------------------------------ the real daemon
DOCKERD = shutil.which("dockerd")


@pytest.fixture(scope="module")
def real_dockerd(tmp_path_factory, registry):
    if DOCKERD is None or os.geteuid() != 0:
        pytest.skip("dockerd (Debian docker.io) and root are needed")
    d = tmp_path_factory.mktemp("dockerd")
    root = make_root(
        d,
        daemon_json=json.dumps(
            {
                "debug": True,
                "insecure-registries": [f"registry.test:{registry.port}"],
                "allow-nondistributable-artifacts": [f"127.0.0.1:{registry.port}", "10.0.0.0/8"],
            }
        ),
    )
    with lab.private_dockerd(d, root / "etc" / "docker" / "daemon.json") as host:
        yield host, root


def test_real_daemon_is_found_and_agrees_with_its_files(
    real_dockerd, registry, pki, env, schema, dns_server
):
    docker_host, root = real_dockerd
    r = run(
        env,
        schema,
        registry,
        pki,
        root,
        "--docker-host",
        docker_host,
        "--nameserver",
        dns_server.nameserver,
        name=f"registry.test:{registry.port}",
    )
    daemon = r.check("docker-daemon")
    assert daemon["status"] == "pass", daemon
    # whatever dockerd this machine has: the version the daemon itself gives
    theirs = _docker(docker_host, "version", "--format", "{{.Server.Version}}")
    lab.client_ok(theirs)
    server_version = theirs.stdout.strip()
    assert server_version and daemon["evidence"]["version"] == server_version, daemon
    assert daemon["evidence"]["debug"] is True
    version = r.check("docker-version")
    assert version["status"] == "pass" and version["evidence"]["server"] == server_version
    opts = r.check("daemon-options")
    # the file and the running daemon say the same: the registry is insecure
    assert opts["evidence"]["insecure_registries"] == [f"registry.test:{registry.port}"]
    assert f"registry.test:{registry.port}" in opts["evidence"]["api_insecure"]
    assert opts["code"] == "INSECURE_REGISTRY"
    regcfg = daemon["evidence"]["registry_config"]
    assert regcfg["AllowNondistributableArtifactsHostnames"] == [f"127.0.0.1:{registry.port}"]
    assert regcfg["AllowNondistributableArtifactsCIDRs"] == ["10.0.0.0/8"]


@pytest.fixture(scope="module")
def dockerd_behind_dead_proxy(tmp_path_factory, registry, pki):
    """A real dockerd whose proxy (HTTPS_PROXY and HTTP_PROXY in its environment, as the
    docker.service drop-in sets them) is a port nothing listens on, in a mount namespace of its
    own where /etc/hosts also names registry.test as 127.0.0.1 (the machine's file untouched)."""
    if DOCKERD is None or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("dockerd (Debian docker.io), unshare and root are needed")
    d = tmp_path_factory.mktemp("dockerd-proxy")
    dead = lab.closed_port()
    hosts = "127.0.0.1 localhost\n127.0.0.1 registry.test\n"
    root = make_root(d, daemon_json='{"debug": true}')
    (root / "etc" / "hosts").write_text(hosts)
    (d / "hosts").write_text(hosts)
    proxy = f"http://127.0.0.1:{dead}"
    lab.push_real_image(
        f"https://127.0.0.1:{registry.port}", "gt/viaproxy", "1", ca_file=pki.ca_file
    )
    penv = {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "", "no_proxy": ""}
    daemon_json = root / "etc" / "docker" / "daemon.json"
    with lab.private_dockerd(d, daemon_json, env=penv, hosts_file=d / "hosts") as host:
        yield host, root, dead


def test_dead_daemon_proxy_follows_gos_loopback_rule(
    dockerd_behind_dead_proxy, registry, pki, env, schema, dns_server
):
    """Go never proxies "localhost" or a literal loopback address, and does proxy a name that
    resolves to one: docker pull through the dead proxy works for the first two and fails for the
    third, and our verdict says the same each time."""
    host, root, dead = dockerd_behind_dead_proxy
    info = _docker(host, "info", "--format", "{{.HTTPSProxy}} {{.HTTPProxy}}")
    assert info.stdout.split() == [f"http://127.0.0.1:{dead}"] * 2, info.stdout + info.stderr
    for name in (f"127.0.0.1:{registry.port}", f"localhost:{registry.port}"):
        ref = f"{name}/gt/viaproxy:1"
        _docker(host, "rmi", "-f", ref)
        lab.client_ok(_docker(host, "pull", ref))
        r = run(env, schema, registry, pki, root, "--docker-host", host, name=name)
        c = r.check("daemon-proxy")
        assert c["status"] == "pass" and "loopback" in c["summary"], c
        assert c["evidence"]["settings"]["HTTPS_PROXY"]["value"] == f"http://127.0.0.1:{dead}"
    name = f"registry.test:{registry.port}"
    theirs = _docker(host, "pull", f"{name}/gt/viaproxy:1")
    lab.client_failed(theirs, "proxyconnect", f"127.0.0.1:{dead}", "connection refused")
    r = run(
        env,
        schema,
        registry,
        pki,
        root,
        "--docker-host",
        host,
        "--nameserver",
        dns_server.nameserver,
        name=name,
    )
    # the daemon (pid from its socket) shares this network namespace: the proxy was tried from
    # the daemon's own network, so docker's verdict fails as its pull does
    c = r.check("daemon-proxy")
    assert (c["status"], c["code"]) == ("fail", "DAEMON_PROXY_ERROR"), c
    assert f"127.0.0.1:{dead}" in c["summary"] and "connection refused" in c["summary"], c
    assert "daemon's own network" in c["summary"] and r.rc == 1, c


@contextlib.contextmanager
def reloaded(real_dockerd, **settings):
    """The real daemon with daemon.json changed and reloaded (SIGHUP: insecure-registries and
    allow-nondistributable-artifacts are reloaded live), and put back afterwards."""
    import signal

    docker_host, root = real_dockerd
    path = root / "etc" / "docker" / "daemon.json"
    before = path.read_text()

    def apply(text: str) -> None:
        was = _docker(docker_host, "info", "--format", "{{json .RegistryConfig}}").stdout
        path.write_text(text)
        os.kill(int((root.parent / "docker.pid").read_text()), signal.SIGHUP)
        for _ in range(100):  # the reload is asynchronous: wait until /info shows it
            now = _docker(docker_host, "info", "--format", "{{json .RegistryConfig}}").stdout
            if now != was:
                return
            time.sleep(0.1)
        raise AssertionError(f"dockerd did not reload {path}")

    apply(json.dumps({**json.loads(before), **settings}))
    try:
        yield
    finally:
        apply(before)


@pytest.fixture(scope="module")
def far_image(tmp_path_factory, pki):
    """A registry in a network namespace (not loopback: docker checks its certificate, made
    by the test CA, which docker does not trust) holding gt/app:1."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("root and iproute2 are needed for a network namespace")
    cm = lab.netns_host("198.18.6.1", "198.18.6.2", name=f"rdh{os.getpid() % 10000}")
    ns, address = cm.__enter__()
    reg = None
    try:
        reg = lab.start_registry(
            tmp_path_factory.mktemp("far"),
            *pki.leaf("far6", address),
            host=address,
            netns=ns,
            port=5000,
        )
        lab.push_real_image(f"https://{address}:5000", "gt/app", "1", ca_file=pki.ca_file)
        assert not Path(f"/etc/docker/certs.d/{address}:5000").exists()
        yield f"{address}:5000"
    finally:
        if reg is not None:
            reg.stop()
        cm.__exit__(None, None, None)


def test_insecure_registry_agrees_with_docker(real_dockerd, far_image, pki, env, schema, registry):
    """INSECURE_REGISTRY says docker ignores the registry's certificate errors: listed, docker
    pulls from a registry whose CA it does not trust; not listed, the same pull fails on x509."""
    docker_host, root = real_dockerd
    ref = f"{far_image}/gt/app:1"
    more = ("--docker-host", docker_host)
    _docker(docker_host, "rmi", "-f", ref)
    failed = _docker(docker_host, "pull", ref)
    lab.client_failed(failed, "x509", "certificate signed by unknown authority")
    r = run(env, schema, registry, pki, root, *more, name=far_image)
    opts = r.check("daemon-options")
    assert opts["code"] != "INSECURE_REGISTRY" and far_image not in opts["summary"], opts
    certs = r.check("docker-certs")
    assert (certs["status"], certs["code"]) == ("fail", "DOCKER_CA_MISSING"), certs
    listed = json.loads((root / "etc/docker/daemon.json").read_text())["insecure-registries"]
    with reloaded(real_dockerd, **{"insecure-registries": [*listed, far_image]}):
        lab.client_ok(_docker(docker_host, "pull", ref))
        r = run(env, schema, registry, pki, root, *more, name=far_image)
        opts = r.check("daemon-options")
        assert (opts["status"], opts["code"]) == ("warn", "INSECURE_REGISTRY"), opts
        assert far_image in opts["summary"] and "certificate errors are ignored" in opts["summary"]
        assert far_image in (opts["evidence"]["api_insecure"] or []), opts


def test_block_registry_is_red_hats_alone(real_dockerd, registry, pki, env, schema, tmp_path):
    """REGISTRY_BLOCKED reads Red Hat's BLOCK_REGISTRY. Upstream dockerd has no such option (it
    refuses to start with it), so beside a running upstream daemon a leftover BLOCK_REGISTRY
    blocks nothing: docker pulls, and the verdict does not say blocked. (Red Hat's docker 1.13,
    which does block, is not in Debian: the blocking side has no client here.)"""
    docker_host, _ = real_dockerd
    refused = subprocess.run(
        [
            DOCKERD,
            "--block-registry",
            f"127.0.0.1:{registry.port}",
            "--host",
            f"unix://{tmp_path}/never.sock",
            "--data-root",
            str(tmp_path / "never"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lab.client_failed(refused, "unknown flag: --block-registry")
    root = make_root(
        tmp_path,
        os_id="centos",
        os_like="rhel fedora",
        daemon_json='{"debug": true}',
        sysconfig=(
            "OPTIONS='--signature-verification=false'\n"
            f"BLOCK_REGISTRY='--block-registry 127.0.0.1:{registry.port}'\n"
        ),
    )
    lab.push_real_image(
        f"https://127.0.0.1:{registry.port}", "gt/notblocked", "1", ca_file=pki.ca_file
    )
    ref = f"127.0.0.1:{registry.port}/gt/notblocked:1"
    _docker(docker_host, "rmi", "-f", ref)
    lab.client_ok(_docker(docker_host, "pull", ref))
    opts = run(env, schema, registry, pki, root, "--docker-host", docker_host).check(
        "daemon-options"
    )
    assert opts["status"] == "pass" and opts["evidence"]["blocked_registries"] is None, opts
    assert "has no --block-registry" in opts["evidence"]["block_registry_ignored"], opts
    # with no daemon to ask, the file is all there is: Red Hat's docker would block
    opts = run(env, schema, registry, pki, root).check("daemon-options")
    assert (opts["status"], opts["code"]) == ("fail", "REGISTRY_BLOCKED"), opts


@pytest.fixture(scope="module")
def foreign_image(registry, pki):
    lab.push_image(
        f"https://127.0.0.1:{registry.port}",
        "win/servercore",
        "ltsc",
        ca_file=pki.ca_file,
        foreign=True,
    )
    lab.push_image(f"https://127.0.0.1:{registry.port}", "plain/app", "1", ca_file=pki.ca_file)


@pytest.fixture(scope="module")
def foreign_real(registry, pki):
    """Real images with a foreign layer: win/present (the registry holds the layer too) and
    win/absent (only its URL, where nothing answers, does)."""
    base = f"https://127.0.0.1:{registry.port}"
    present = lab.push_foreign_image(
        base, "win/present", "1", ca_file=pki.ca_file, blob_in_registry=True
    )
    absent = lab.push_foreign_image(
        base, "win/absent", "1", ca_file=pki.ca_file, blob_in_registry=False
    )
    return present, absent


def test_foreign_layers_as_a_linux_dockerd_treats_them(
    real_dockerd, foreign_real, registry, pki, env, schema
):
    """A Linux dockerd reads a foreign layer from the registry like any layer and pushes it as
    an ordinary one, whatever allow-nondistributable-artifacts says: a registry outside the
    list that holds the layer pulls and pushes; one inside the list that lacks it fails."""
    docker_host, root = real_dockerd
    _, absent = foreign_real
    # localhost:PORT is not in the daemon's allow list (127.0.0.1:PORT is)
    outside = f"localhost:{registry.port}"
    r = run(
        env,
        schema,
        registry,
        pki,
        root,
        "--docker-host",
        docker_host,
        "--repository",
        "win/present",
        name=outside,
    )
    c = r.check("nondistributable-artifacts")
    assert c["status"] == "pass" and c["evidence"]["covered_by"] is None, c
    assert c["evidence"]["daemon_os"] == "linux" and "ordinary layers" in c["summary"], c
    ref = f"{outside}/win/present:1"
    _docker(docker_host, "rmi", "-f", ref)
    lab.client_ok(_docker(docker_host, "pull", ref))
    copy = f"{outside}/win/copied:1"
    lab.client_ok(_docker(docker_host, "tag", ref, copy))
    pushed = _docker(docker_host, "push", copy)
    lab.client_ok(pushed)
    assert "Skipped foreign layer" not in pushed.stdout, pushed.stdout
    # what docker pushed: the layer as an ordinary one, in the registry
    import requests

    got = requests.get(
        f"https://127.0.0.1:{registry.port}/v2/win/copied/manifests/1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        verify=str(pki.ca_file),
        timeout=10,
    ).json()["layers"]
    assert [x["mediaType"] for x in got] == ["application/vnd.docker.image.rootfs.diff.tar.gzip"]
    assert "urls" not in got[0], got
    # inside the allow list, the layer only at its URL: docker never goes there
    inside = f"127.0.0.1:{registry.port}"
    r = run(
        env, schema, registry, pki, root, "--docker-host", docker_host, "--repository", "win/absent"
    )
    c = r.check("nondistributable-artifacts")
    assert (c["status"], c["code"]) == ("fail", "BLOB_UNKNOWN"), c
    assert c["evidence"]["covered_by"] == inside, c
    layer = absent["layers"][0]["digest"]
    assert c["evidence"]["foreign_missing"] == [layer] and layer[:19] in c["summary"], c
    lab.client_failed(_docker(docker_host, "pull", f"{inside}/win/absent:1"), "unknown blob")


def test_foreign_layers_allowed_by_cidr(foreign_image, registry, pki, env, schema, tmp_path):
    root = make_root(
        tmp_path,
        daemon_json=json.dumps(
            {"debug": True, "allow-nondistributable-artifacts": ["127.0.0.0/8"]}
        ),
    )
    c = run(env, schema, registry, pki, root, "--repository", "win/servercore").check(
        "nondistributable-artifacts"
    )
    assert c["status"] == "pass" and c["evidence"]["covered_by"] == "127.0.0.0/8"


def test_foreign_layers_not_allowed_warns_with_the_snippet(
    foreign_image, registry, pki, env, schema, tmp_path
):
    root = make_root(tmp_path, daemon_json='{"debug": true}')
    r = run(env, schema, registry, pki, root, "--repository", "win/servercore")
    c = r.check("nondistributable-artifacts")
    assert (c["status"], c["code"]) == ("warn", "NONDISTRIBUTABLE_NOT_ALLOWED")
    assert c["faq"] == ["nondistributable-artifacts"]
    assert (
        f'{{"allow-nondistributable-artifacts": ["127.0.0.1:{registry.port}"]}}'
        in c["remediation"][0]
    )
    ok = run(env, schema, registry, pki, root, "--repository", "plain/app")
    assert ok.check("nondistributable-artifacts")["summary"] == "plain/app has no foreign layers"


def test_docker_version_below_18_03_fails(registry, pki, env, schema, tmp_path):
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\necho \'{"Client": {"Version": "17.03.2-ce"}, '
        '"Server": {"Version": "17.03.2-ce"}}\'\n'
    )
    fake.chmod(0o755)
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--host-root",
        "/",
        "--docker-host",
        "unix:///nonexistent/docker.sock",
        "--checks",
        "docker-version",
        "--skip",
        "docker-daemon",
        "-f",
        "json",
        env={**env, "PATH": f"{fake.parent}:{env['PATH']}"},
    )
    validate_report(r.report, schema)
    c = r.check("docker-version")
    assert (c["status"], c["code"]) == ("fail", "DOCKER_VERSION_ERROR")
    assert c["faq"] == ["tls12"] and "17.03.2-ce" in c["summary"]


# ---------------------------------------------------- ground truth: docker itself pulls
def _docker(docker_host, *args, timeout=120):
    return subprocess.run(
        ["docker", "-H", docker_host, *args], capture_output=True, text=True, timeout=timeout
    )


def test_missing_ca_in_certs_d_fails_docker_pull_and_is_named(
    real_dockerd, pki, env, schema, tmp_path
):
    if shutil.which("ip") is None or shutil.which("docker") is None:
        pytest.skip("iproute2 and the docker CLI are needed")
    docker_host, _ = real_dockerd
    try:
        ns_cm = lab.netns_host()
        ns, address = ns_cm.__enter__()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network namespaces cannot be made here: {exc.stderr}")
    port = 5000
    server = f"{address}:{port}"
    certs_d = Path("/etc/docker/certs.d") / server
    made = [p for p in (Path("/etc/docker"), Path("/etc/docker/certs.d")) if not p.exists()]
    reg = None
    try:
        cert = pki.leaf("netns", address)
        reg = lab.start_registry(tmp_path / "reg", *cert, host=address, netns=ns, port=port)
        certs_d.mkdir(parents=True, exist_ok=True)
        shutil.copy(pki.ca_file, certs_d / "ca.crt")
        image = f"{server}/gt/app:1"
        archive = lab.docker_save_archive(tmp_path / "img.tar", image)
        lab.client_ok(_docker(docker_host, "load", "-i", str(archive)))
        lab.client_ok(_docker(docker_host, "push", image))
        _docker(docker_host, "rmi", image)
        lab.client_ok(_docker(docker_host, "pull", image))  # with the CA in certs.d: works

        def tool():
            r = lab.diagnose(
                "check-health",
                server,
                "--ca-bundle",
                str(pki.ca_file),
                "--host-root",
                "/",
                "--docker-host",
                docker_host,
                "--checks",
                "docker-certs",
                "-f",
                "json",
                env=env,
            )
            validate_report(r.report, schema)
            return r.check("docker-certs")

        assert tool()["status"] == "pass"
        _docker(docker_host, "rmi", image)
        shutil.rmtree(certs_d)  # the broken setting: docker no longer has the registry's CA
        failed = _docker(docker_host, "pull", image)
        lab.client_failed(failed, "x509", "certificate signed by unknown authority")
        finding = tool()
        assert (finding["status"], finding["code"]) == ("fail", "DOCKER_CA_MISSING")
        assert f"/etc/docker/certs.d/{server}/ca.crt" in finding["remediation"][0]
    finally:
        shutil.rmtree(certs_d, ignore_errors=True)
        for folder in reversed(made):  # leave /etc as the test found it
            with contextlib.suppress(OSError):
                folder.rmdir()
        if reg is not None:
            reg.stop()
        ns_cm.__exit__(None, None, None)


def test_installed_but_not_running_gives_the_start_command(registry, pki, env, schema, tmp_path):
    root = make_root(tmp_path, daemon_json='{"debug": true}')
    (root / "lib" / "systemd" / "system").mkdir(parents=True)
    (root / "lib" / "systemd" / "system" / "docker.service").write_text("[Service]\n")
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    r = run(env, schema, registry, pki, root, "--docker-host", "unix:///nonexistent/docker.sock")
    c = r.check("docker-daemon")
    assert (c["status"], c["code"]) == ("fail", "DOCKER_DAEMON_ERROR")
    assert "installed but its daemon is not running" in c["summary"]
    assert "Start it: `sudo systemctl start docker`." in c["remediation"]
    assert r.check("docker-version")["summary"] == "blocked by docker-daemon"
