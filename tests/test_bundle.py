"""Support bundles: planted secrets in every source never reach the archive."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile

from tests import lab
from tests.conftest import USERS

PLANTED = {
    "config-auth": "PLANTED-cfg-pw-6612",
    "identity": "PLANTED-identity-2231",
    "proxy": "PLANTED-proxy-pw-9917",
    "daemon": "PLANTED-daemon-secret-4410",
    "log-bearer": "PLANTEDlogbearertoken5567",
}


def _unpack(path, dest):
    with tarfile.open(path) as tar:
        tar.extractall(dest, filter="data")
    (folder,) = list(dest.iterdir())
    return folder


def _all_bytes(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_bundle_has_no_planted_secret_anywhere(tokens, pki, env, home, host_root, tmp_path):
    _, reg = tokens
    key = f"127.0.0.1:{reg.port}"
    cfg = home / ".docker"
    cfg.mkdir()
    auth = base64.b64encode(f"carol:{PLANTED['config-auth']}".encode()).decode()
    (cfg / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    key: {"auth": auth},
                    "other.example.com": {"identitytoken": PLANTED["identity"]},
                }
            }
        )
    )
    (host_root / "etc" / "docker").mkdir(parents=True)
    (host_root / "etc" / "docker" / "daemon.json").write_text(
        json.dumps(
            {
                "debug": True,
                "proxies": {"https-proxy": f"http://svc:{PLANTED['daemon']}@proxy:3128"},
                "registry-token": PLANTED["daemon"],
            }
        )
    )
    (host_root / "var" / "log").mkdir(parents=True)
    (host_root / "var" / "log" / "docker.log").write_text(
        'level=info msg="starting"\n'
        f'level=debug msg="GET /v2/ Authorization: Bearer {PLANTED["log-bearer"]}"\n'
    )
    (host_root / "etc" / "hosts").write_text(f"127.0.0.1 localhost\n127.0.0.1 {reg.port}.x\n")
    out = tmp_path / "bundle.tar.gz"
    benv = {
        **env,
        "HTTPS_PROXY": f"http://me:{PLANTED['proxy']}@proxy.corp.example:3128",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    r = lab.diagnose(
        "bundle",
        key,
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "team/app",
        "-u",
        "alice",
        "--password-stdin",
        "--host-root",
        str(host_root),
        "-o",
        str(out),
        env=benv,
        stdin=USERS["alice"],
    )
    assert r.rc == 0, r.out + r.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    folder = _unpack(out, tmp_path / "unpacked")
    files = _all_bytes(folder)
    for name in (
        "report.json",
        "report.md",
        "report.html",
        "manifest.json",
        "redactions.json",
        "host/daemon.json",
        "host/docker-config.json",
        "host/proxy-env.txt",
        "logs/docker-daemon.log",
        "README.txt",
    ):
        assert name in files, sorted(files)
    secrets = [
        *PLANTED.values(),
        USERS["alice"],
        auth,
        base64.b64encode(f"alice:{USERS['alice']}".encode()).decode(),
    ]
    blob = b"\n".join(files.values())
    for s in secrets:
        assert s.encode() not in blob, f"{s} leaked"
    assert b"eyJ" not in blob  # no JWT
    manifest = json.loads(files["manifest.json"])
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(files) - {"manifest.json"}
    for path, f in listed.items():
        assert f["size"] == len(files[path])
        assert f["sha256"] == hashlib.sha256(files[path]).hexdigest()
    redacted = json.loads(files["redactions.json"])["redacted"]
    assert redacted.get("secret-field", 0) >= 2 and redacted.get("url-userinfo", 0) >= 1
    assert all(isinstance(v, int) for v in redacted.values())
    report = json.loads(files["report.json"])
    # the registry is healthy; the daemon's proxy from the planted daemon.json does not exist,
    # but docker never sends a literal loopback registry through it
    assert report["summary"]["status"] == "pass", report["summary"]
    opts = next(c for c in report["checks"] if c["id"] == "daemon-options")
    assert opts["status"] == "pass" and opts["evidence"]["proxies"]["HTTPS_PROXY"], opts
    assert b"Bearer <redacted>" in files["logs/docker-daemon.log"]


def test_redact_hosts_gives_stable_placeholders(
    registry, pki, env, tmp_path, dns_server, host_root
):
    out = tmp_path / "b.tar.gz"
    r = lab.diagnose(
        "bundle",
        f"registry.test:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--nameserver",
        dns_server.nameserver,
        "--host-root",
        str(host_root),
        "--redact-hosts",
        "-o",
        str(out),
        env=env,
    )
    assert r.rc == 0, r.out + r.err
    files = _all_bytes(_unpack(out, tmp_path / "u"))
    blob = b"\n".join(files.values())
    assert b"registry.test" not in blob
    assert b"127.0.0.1" not in blob
    report = files["report.json"].decode()
    placeholder = json.loads(report)["target"]["registries"][0]["host"]
    assert placeholder.startswith("<host-")
    assert report.count(placeholder) >= 3  # the same name, the same placeholder everywhere
    assert json.loads(files["redactions.json"])["redacted"]["host"] >= 3


def test_huge_sparse_daemon_log_stays_bounded(registry, pki, env, host_root, tmp_path):
    log = host_root / "var" / "log" / "docker.log"
    log.parent.mkdir(parents=True)
    with log.open("wb") as fh:
        fh.truncate(3 * 1024**3)  # 3 GiB, sparse
        fh.seek(0, os.SEEK_END)
        fh.write(b'\nlevel=error msg="last line of a huge log"\n')
    out = tmp_path / "b.tar.gz"
    script = (
        "import resource, subprocess, sys, time;"
        "t=time.monotonic();"
        f"p=subprocess.run([sys.executable,'-m','diagnose','bundle','127.0.0.1:{registry.port}',"
        f"'--ca-bundle','{pki.ca_file}','--host-root','{host_root}','-o','{out}','-q'],stdout=subprocess.DEVNULL);"
        "print(p.returncode, time.monotonic()-t,"
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    p = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(lab.ROOT),
        timeout=120,
    )
    rc, seconds, maxrss_kb = p.stdout.split()
    assert rc == "0", p.stderr
    assert float(seconds) < 15
    assert int(maxrss_kb) < 300 * 1024  # KiB: well under what reading 3 GiB would take
    files = _all_bytes(_unpack(out, tmp_path / "u"))
    got = files["logs/docker-daemon.log"]
    assert got.endswith(b'last line of a huge log"\n')
    assert len(got) <= 4 * 1024 * 1024


def test_bundle_to_an_unwritable_place_is_one_line(registry, pki, env):
    r = lab.diagnose(
        "bundle",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "-o",
        "/nonexistent/dir/b.tar.gz",
        "-q",
        env=env,
    )
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1, r.err


def test_bundle_is_readable_without_the_tool(tokens, pki, env, tmp_path):
    # a broken environment: bob may not push; the Markdown and HTML say what and what to do
    _, reg = tokens
    out = tmp_path / "b.tar.gz"
    r = lab.diagnose(
        "bundle",
        f"127.0.0.1:{reg.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "team/app",
        "--require",
        "push",
        "-u",
        "bob",
        "--password-stdin",
        "-o",
        str(out),
        env=env,
        stdin=USERS["bob"],
    )
    assert r.rc == 1
    files = _all_bytes(_unpack(out, tmp_path / "u"))
    md = files["report.md"].decode()
    assert "TOKEN_SCOPE_ERROR" in md and "AcrPush" in md and "What to do" in md
    html = files["report.html"].decode()
    assert "TOKEN_SCOPE_ERROR" in html and "AcrPush" in html
    assert "<script" not in html and "http-equiv" not in html


def test_runtime_files_go_in_without_their_secrets(registry, pki, env, host_root, tmp_path):
    """podman's auth.json, containerd's legacy registry auth and a hosts.toml header are in the
    bundle as files a support engineer can read, with every planted secret removed."""
    planted = {
        "podman-auth": base64.b64encode(b"pod:PLANTED-podman-pw-7781").decode(),
        "podman-token": "PLANTED-podman-idtoken-1180",
        "ctrd-password": "PLANTED-ctrd-pw-3390",
        "ctrd-auth": base64.b64encode(b"ctr:PLANTED-ctrd-auth-5521").decode(),
        "hosts-header": "PLANTEDhostsheaderbasic8812",
    }
    files_in = {
        "etc/containers/registries.conf": 'unqualified-search-registries = ["docker.io"]\n',
        "etc/containers/policy.json": json.dumps({"default": [{"type": "insecureAcceptAnything"}]}),
        "run/containers/0/auth.json": json.dumps(
            {"auths": {"registry.test": {"auth": planted["podman-auth"]}}}
        ),
        "root/.config/containers/auth.json": json.dumps(
            {"auths": {"registry.test": {"identitytoken": planted["podman-token"]}}}
        ),
        "etc/containerd/config.toml": (
            "version = 2\n"
            '[plugins."io.containerd.grpc.v1.cri".registry.configs."registry.test".auth]\n'
            f'  username = "ctr"\n  password = "{planted["ctrd-password"]}"\n'
            f'  auth = "{planted["ctrd-auth"]}"\n'
        ),
        "etc/containerd/certs.d/registry.test/hosts.toml": (
            'server = "https://registry.test"\n[host."https://registry.test"]\n'
            f'  [host."https://registry.test".header]\n    Authorization = "Basic {planted["hosts-header"]}"\n'
        ),
    }
    for rel, text in files_in.items():
        p = host_root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    archive = tmp_path / "rt.tar.gz"
    r = lab.diagnose(
        "bundle",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--host-root",
        str(host_root),
        "--runtime",
        "all",
        "-o",
        str(archive),
        "--quiet",
        env=env,
    )
    assert r.rc in (0, 1), r.out + r.err
    files = _all_bytes(_unpack(archive, tmp_path / "out"))
    for name in (
        "host/containers/registries.conf",
        "host/containers/policy.json",
        "host/containerd/config.toml",
        "host/containerd/certs.d/registry.test/hosts.toml",
    ):
        assert name in files, sorted(files)
    assert sum(1 for n in files if n.startswith("host/containers/auth-")) == 2, sorted(files)
    blob = b"\n".join(files.values()) + r.out.encode() + r.err.encode()
    for kind, secret in planted.items():
        assert secret.encode() not in blob, f"{kind} leaked"
    assert b"PLANTED" not in blob
