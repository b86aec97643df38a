"""Hosts that pull without dockerd: podman/skopeo (registries.conf, policy.json, auth.json) and
containerd (hosts.toml), each verdict set beside what the real client does with the same host
files, the same reference and the same real registry: skopeo copy, podman pull, podman login
--get-login, and ctr against a private containerd."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests import lab
from tests.conftest import validate_report

SKOPEO = shutil.which("skopeo")
PODMAN = shutil.which("podman")
CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")
ACCEPT = {"default": [{"type": "insecureAcceptAnything"}]}
CHECKS = "container-runtimes,registries-conf,signature-policy,podman-credentials,containerd-hosts"


@pytest.fixture(scope="module")
def image_registry(tmp_path_factory, pki):
    reg = lab.start_registry(
        tmp_path_factory.mktemp("rt-registry"), *pki.leaf("good", *lab.GOOD_NAMES)
    )
    base = f"https://127.0.0.1:{reg.port}"
    m = lab.push_real_image(base, "team/app", "1.0", ca_file=pki.ca_file)
    yield reg, m["_digest"]
    reg.stop()


def make_root(tmp: Path, files: dict[str, str | dict]) -> Path:
    root = tmp / "hostroot"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(content) if isinstance(content, dict) else content)
    return root


def with_ca(root: Path, pki, hostport: str, base: str = "etc/containers/certs.d") -> None:
    d = root / base / hostport
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(pki.ca_file, d / "ca.crt")


def ours(root: Path, ref: str, env, pki, *extra: str, runtime: str = "podman") -> lab.Run:
    r = lab.diagnose(
        "check-health",
        ref,
        "--host-root",
        str(root),
        "--runtime",
        runtime,
        "--ca-bundle",
        str(pki.ca_file),
        "--checks",
        CHECKS,
        "-f",
        "json",
        *extra,
        env=env,
    )
    assert r.rc in (0, 1), r.out + r.err
    return r


def pulls(check: dict) -> bool:
    """Our verdict as a yes/no about the pull: pass and warn pull, fail does not."""
    return check["status"] in ("pass", "warn")


def skopeo_copy(
    root: Path, ref: str, tmp: Path, policy: str = "etc/containers/policy.json"
) -> subprocess.CompletedProcess[str]:
    """skopeo with exactly the host root's containers configuration (or another policy file
    of it) and CA folder."""
    if SKOPEO is None:
        pytest.skip("skopeo is not installed")
    conf = root / "etc/containers/registries.conf"
    args = [SKOPEO, "--policy", str(root / policy)]
    if conf.exists():
        args += ["--registries-conf", str(conf)]
    args += ["--registries.d", str(root / "etc/containers/registries.d")]
    host = ref.split("/", 1)[0]
    out = tmp / f"copy-{time.monotonic_ns()}"
    args += ["copy", "--src-cert-dir", str(root / "etc/containers/certs.d" / host)]
    args += [f"docker://{ref}", f"dir:{out}"]
    # skopeo has no option for the drop-in folder: the user's one (under HOME) stands in for it
    home = tmp / f"skopeo-home-{time.monotonic_ns()}"
    (home / ".config/containers").mkdir(parents=True)
    if (root / "etc/containers/registries.conf.d").is_dir():
        shutil.copytree(
            root / "etc/containers/registries.conf.d", home / ".config/containers/registries.conf.d"
        )
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={"PATH": os.environ["PATH"], "HOME": str(home)},
    )


# --------------------------------------------------------------- registries.conf / policy.json
def podman_case(tmp: Path, pki, reg, env, files: dict[str, str | dict], check: str):
    """A host root with these files and the registry's CA in containers' certs.d; our verdict
    on team/app:1.0 from it: (root, reference, the check's result, the run's exit code)."""
    hp = f"127.0.0.1:{reg.port}"
    root = make_root(tmp, {"etc/containers/policy.json": ACCEPT, **files})
    with_ca(root, pki, hp)
    ref = f"{hp}/team/app:1.0"
    r = ours(root, ref, env, pki)
    return root, ref, r.check(check), r.rc


def test_healthy_podman_host_passes_and_skopeo_pulls(image_registry, pki, env, tmp_path, schema):
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    root = make_root(
        tmp_path,
        {
            "etc/containers/registries.conf": 'unqualified-search-registries = ["docker.io"]\n',
            "etc/containers/policy.json": ACCEPT,
            "usr/bin/podman": "",
        },
    )
    with_ca(root, pki, hp)
    ref = f"{hp}/team/app:1.0"
    r = ours(root, ref, env, pki)
    validate_report(r.report, schema)
    assert r.rc == 0, r.out
    rt = r.check("container-runtimes")
    assert rt["evidence"]["runtimes"]["podman"]["present"], rt
    for cid in ("registries-conf", "signature-policy", "podman-credentials"):
        assert r.check(cid)["status"] == "pass", r.check(cid)
    assert r.check("containerd-hosts")["status"] == "skip"
    lab.client_ok(skopeo_copy(root, ref, tmp_path))


def test_blocked_registry_fails_like_skopeo(image_registry, pki, env, tmp_path):
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    block = f'# our registry is off limits\n[[registry]]\nlocation = "{hp}"\nblocked = true\n'
    files = {
        "etc/containers/registries.conf": "",
        "etc/containers/registries.conf.d/50-block.conf": block,
    }
    root, ref, c, rc = podman_case(tmp_path, pki, reg, env, files, "registries-conf")
    assert (c["status"], c["code"]) == ("fail", "REGISTRY_BLOCKED"), c
    assert rc == 1
    assert "50-block.conf line 3" in c["summary"] and c["faq"][0] == "registries-conf"
    assert any("blocked = false" in s for s in c["remediation"])
    lab.client_failed(skopeo_copy(root, ref, tmp_path), f"registry {hp} is blocked")


def test_mirror_down_warns_and_skopeo_falls_back(image_registry, pki, env, tmp_path):
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    dead = lab.closed_port()
    conf = (
        f'[[registry]]\nlocation = "{hp}"\n\n[[registry.mirror]]\nlocation = "127.0.0.1:{dead}"\n'
    )
    root, ref, c, rc = podman_case(
        tmp_path, pki, reg, env, {"etc/containers/registries.conf": conf}, "registries-conf"
    )
    assert (c["status"], c["code"]) == ("warn", "MIRROR_UNREACHABLE"), c
    assert f"127.0.0.1:{dead}" in c["summary"] and rc == 0
    lab.client_ok(skopeo_copy(root, ref, tmp_path))


def test_location_rewritten_to_a_dead_host_fails_like_skopeo(image_registry, pki, env, tmp_path):
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    dead = lab.closed_port()
    conf = f'[[registry]]\nprefix = "{hp}/team"\nlocation = "127.0.0.1:{dead}/team"\n'
    root, ref, c, rc = podman_case(
        tmp_path, pki, reg, env, {"etc/containers/registries.conf": conf}, "registries-conf"
    )
    assert (c["status"], c["code"]) == ("fail", "RUNTIME_ENDPOINT_ERROR"), c
    assert rc == 1
    assert f"127.0.0.1:{dead}" in c["summary"] and "refused" in c["summary"]
    lab.client_failed(skopeo_copy(root, ref, tmp_path), f"127.0.0.1:{dead}", "connection refused")


def test_ca_missing_from_containers_certs_d_fails_like_skopeo(image_registry, pki, env, tmp_path):
    """Our --ca-bundle trusts the registry; podman's certs.d does not: the podman verdict
    follows podman's trust."""
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    root = make_root(
        tmp_path,
        {"etc/containers/registries.conf": "", "etc/containers/policy.json": ACCEPT},
    )
    (root / "etc/containers/certs.d" / hp).mkdir(parents=True)
    ref = f"{hp}/team/app:1.0"
    r = ours(root, ref, env, pki)
    c = r.check("registries-conf")
    assert (c["status"], c["code"]) == ("fail", "RUNTIME_ENDPOINT_ERROR"), c
    assert "not trusted" in c["summary"]
    assert any(f"/etc/containers/certs.d/{hp}/ca.crt" in s for s in c["remediation"])
    theirs = skopeo_copy(root, ref, tmp_path)
    lab.client_failed(theirs, "x509", "certificate signed by unknown authority")
    # marked insecure, both pull without the CA
    (root / "etc/containers/registries.conf").write_text(
        f'[[registry]]\nlocation = "{hp}"\ninsecure = true\n'
    )
    r = ours(root, ref, env, pki)
    c = r.check("registries-conf")
    assert c["status"] == "pass" and "insecure" in c["summary"], c
    lab.client_ok(skopeo_copy(root, ref, tmp_path))


def test_policy_reject_fails_like_skopeo(image_registry, pki, env, tmp_path):
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    policy = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {f"{hp}/team": [{"type": "reject"}]}},
    }
    root, ref, c, rc = podman_case(
        tmp_path, pki, reg, env, {"etc/containers/policy.json": policy}, "signature-policy"
    )
    assert (c["status"], c["code"]) == ("fail", "POLICY_REJECT"), c
    assert rc == 1
    assert c["evidence"]["scope"] == f"{hp}/team" and "policy.json" in c["summary"]
    assert any("insecureAcceptAnything" in s for s in c["remediation"])
    lab.client_failed(skopeo_copy(root, ref, tmp_path), "is rejected by policy")
    # a more specific scope that accepts wins over the namespace's reject, for both
    policy["transports"]["docker"][f"{hp}/team/app"] = [{"type": "insecureAcceptAnything"}]
    (root / "etc/containers/policy.json").write_text(json.dumps(policy))
    assert ours(root, ref, env, pki).check("signature-policy")["status"] == "pass"
    lab.client_ok(skopeo_copy(root, ref, tmp_path))


def test_signed_by_with_missing_key_fails_like_skopeo(image_registry, pki, env, tmp_path):
    """The clients read a signedBy key only for a signature they found: with no signature they
    stop on that, with one they stop on the missing key. Ours names the same cause each time."""
    reg, digest = image_registry
    hp = f"127.0.0.1:{reg.port}"
    key = tmp_path / "nowhere" / "team.gpg"  # neither on this machine nor under the host root
    look = tmp_path / "sigstore"
    policy = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {
            "docker": {hp: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key)}]}
        },
    }
    files = {
        "etc/containers/policy.json": policy,
        "etc/containers/registries.d/default.yaml": f"default-docker:\n  lookaside: file://{look}\n",
    }
    root, ref, c, rc = podman_case(tmp_path, pki, reg, env, files, "signature-policy")
    assert (c["status"], c["code"]) == ("fail", "SIGNATURE_MISSING"), c
    assert rc == 1 and f"its key {key} is not here either" in c["summary"], c
    theirs = skopeo_copy(root, ref, tmp_path)
    lab.client_failed(theirs, "A signature was required, but no signature exists")
    # a signature where both look (skopeo at the path, ours under the host root)
    leaf = f"team/app@{digest.replace(':', '=')}/signature-1"
    for base in (look, root / str(look).lstrip("/")):
        (base / leaf).parent.mkdir(parents=True)
        # an OpenPGP packet's first byte, so it reads as a simple signature; not a real one
        (base / leaf).write_bytes(b"\xa3\x01 not a real signature")
    c = ours(root, ref, env, pki).check("signature-policy")
    assert (c["status"], c["code"]) == ("fail", "SIGNATURE_KEY_MISSING"), c
    assert str(key) in c["summary"], c
    lab.client_failed(skopeo_copy(root, ref, tmp_path), str(key), "no such file or directory")


def test_signed_by_on_an_unsigned_image_fails_like_skopeo(image_registry, pki, env, tmp_path):
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    root = make_root(tmp_path, {"etc/pki/team.gpg": "not a real key, but present\n"})
    policy = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {
            "docker": {
                hp: [
                    {
                        "type": "signedBy",
                        "keyType": "GPGKeys",
                        "keyPath": str(root / "etc/pki/team.gpg"),
                    }
                ]
            }
        },
    }
    # the path in policy.json is the real one, for skopeo; ours reads it under the root too
    (root / str(root / "etc/pki/team.gpg").lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(root / "etc/pki/team.gpg", root / str(root / "etc/pki/team.gpg").lstrip("/"))
    (root / "etc/containers").mkdir(parents=True, exist_ok=True)
    (root / "etc/containers/policy.json").write_text(json.dumps(policy))
    look = tmp_path / "sigstore"
    look.mkdir()
    (root / "etc/containers/registries.d").mkdir(parents=True)
    (root / "etc/containers/registries.d/default.yaml").write_text(
        f"default-docker:\n  lookaside: file://{look}\n"
    )
    with_ca(root, pki, hp)
    ref = f"{hp}/team/app:1.0"
    r = ours(root, ref, env, pki)
    c = r.check("signature-policy")
    assert (c["status"], c["code"]) == ("fail", "SIGNATURE_MISSING"), c
    assert "no signature exists" in c["summary"] and str(look) in c["summary"]
    theirs = skopeo_copy(root, ref, tmp_path)
    lab.client_failed(theirs, "A signature was required, but no signature exists")


SHORT = "rd-probe-app:1.0"


def short_name_verdict(root: Path, dns_server, env, pki) -> dict:
    r = lab.diagnose(
        "check-health",
        SHORT,
        "--host-root",
        str(root),
        "--runtime",
        "podman",
        "--nameserver",
        dns_server.nameserver,
        "--ca-bundle",
        str(pki.ca_file),
        "--checks",
        "registries-conf",
        "-f",
        "json",
        env=env,
    )
    return r.check("registries-conf")


def podman_pull(root: Path, tmp: Path, env, *more: str) -> subprocess.CompletedProcess[str]:
    """podman pull SHORT with the host root's registries.conf, policy and CA folder, and a
    store of its own."""
    import tempfile

    store = Path(tempfile.mkdtemp(prefix="rdp"))  # podman wants a short runroot
    # an empty user drop-in folder hides this machine's own (its short-name aliases)
    podhome = tmp / "podhome"
    (podhome / ".config/containers/registries.conf.d").mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(
            [
                PODMAN or "podman",
                "--root",
                str(store / "root"),
                "--runroot",
                str(store / "run"),
                "--storage-driver",
                "vfs",
                "pull",
                "--signature-policy",
                str(root / "etc/containers/policy.json"),
                *more,
                SHORT,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={
                **env,
                "CONTAINERS_REGISTRIES_CONF": str(root / "etc/containers/registries.conf"),
                "HOME": str(podhome),
            },
        )
    finally:
        shutil.rmtree(store, ignore_errors=True)


def test_short_name_enforcing_fails_like_podman(image_registry, pki, env, tmp_path, dns_server):
    if PODMAN is None:
        pytest.skip("podman is not installed")
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    conf = (
        'unqualified-search-registries = ["registry.test:5000", "alias.test:5000"]\n'
        'short-name-mode = "enforcing"\n'
    )
    root = make_root(
        tmp_path,
        {"etc/containers/registries.conf": conf, "etc/containers/policy.json": ACCEPT},
    )
    with_ca(root, pki, hp)
    c = short_name_verdict(root, dns_server, env, pki)
    assert (c["status"], c["code"]) == ("fail", "SHORT_NAME_ENFORCING"), c
    assert "registries.conf line 2" in c["summary"]
    assert any(f"docker.io/library/{SHORT}" in s for s in c["remediation"])
    assert any("[aliases]" in s for s in c["remediation"])
    theirs = podman_pull(root, tmp_path, env)
    lab.client_failed(theirs, "short-name resolution enforced but cannot prompt without a TTY")
    # the fix the verdict gives, an alias, resolves it without a prompt: podman pulls the image
    # the alias names, and the verdict passes
    (root / "etc/containers/registries.conf").write_text(
        f'{conf}\n[aliases]\n"rd-probe-app" = "{hp}/team/app"\n'
    )
    c = short_name_verdict(root, dns_server, env, pki)
    assert (c["status"], c["code"]) == ("pass", None), c
    assert c["evidence"]["alias"]["value"] == f"{hp}/team/app", c
    theirs = podman_pull(
        root, tmp_path, env, "--cert-dir", str(root / "etc/containers/certs.d" / hp)
    )
    lab.client_ok(theirs)
    assert f"{hp}/team/app:1.0" in theirs.stdout + theirs.stderr, theirs.stdout + theirs.stderr


def test_broken_registries_conf_names_the_line(pki, env, tmp_path):
    root = make_root(
        tmp_path,
        {
            "etc/containers/registries.conf": '[[registry]]\nlocation = "x.io"\nblocked = maybe\n',
            "etc/containers/policy.json": ACCEPT,
        },
    )
    r = ours(root, "registry.test/team/app:1", env, pki)
    c = r.check("registries-conf")
    assert (c["status"], c["code"]) == ("fail", "CONTAINERS_CONFIG_ERROR"), c
    assert "line 3" in c["summary"] and "Traceback" not in r.err


# ------------------------------------------------------------------------------ auth.json
def podman_credentials_live(ref: str, env) -> lab.Run:
    """Our podman-credentials verdict on this very machine (HOME and XDG_RUNTIME_DIR from env)."""
    return lab.diagnose(
        "check-health",
        ref,
        "--host-root",
        "/",
        "--runtime",
        "podman",
        "--checks",
        "podman-credentials",
        "-f",
        "json",
        env=env,
    )


def test_podman_credentials_precedence_matches_podman(tmp_path, env):
    """Our answer to 'which login does podman use' against podman's own (--get-login), as the
    files are added one by one, most preferred last."""
    if PODMAN is None:
        pytest.skip("podman is not installed")
    home = tmp_path / "h"
    xdg = tmp_path / "xdg"
    (home / ".docker").mkdir(parents=True)
    (home / ".config/containers").mkdir(parents=True)
    (xdg / "containers").mkdir(parents=True)
    server = "registry.test:5000"

    def auth(user: str) -> dict:
        secret = f"{user}-s3cret-pw"
        return {"auths": {server: {"auth": base64.b64encode(f"{user}:{secret}".encode()).decode()}}}

    e = {**env, "HOME": str(home), "XDG_RUNTIME_DIR": str(xdg)}
    files = [
        (home / ".docker/config.json", "dockeruser"),
        (home / ".config/containers/auth.json", "homeuser"),
        (xdg / "containers/auth.json", "xdguser"),
    ]
    outputs = []
    for path, user in files:
        path.write_text(json.dumps(auth(user)))
        theirs = subprocess.run(
            [PODMAN, "login", "--get-login", server],
            capture_output=True,
            text=True,
            timeout=30,
            env=e,
            stdin=subprocess.DEVNULL,
        )
        r = podman_credentials_live(f"{server}/team/app:1", e)
        outputs += [r.out, r.err]
        c = r.check("podman-credentials")
        assert theirs.stdout.strip() == user, theirs.stdout + theirs.stderr
        assert f"user {user}" in c["summary"], c
        if user != "dockeruser":
            assert (c["status"], c["code"]) == ("warn", "CREDENTIALS_DISAGREE"), c
    blob = "\n".join(outputs)
    for _, user in files:
        assert f"{user}-s3cret-pw" not in blob
        assert base64.b64encode(f"{user}:{user}-s3cret-pw".encode()).decode() not in blob


# ------------------------------------------------------------------------ containerd / ctr
@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    if CONTAINERD is None or CTR is None or os.geteuid() != 0:
        pytest.skip("containerd, ctr and root are needed")
    d = tmp_path_factory.mktemp("containerd")
    cfg = d / "config.toml"
    cfg.write_text(
        f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{d}/containerd.sock"\n'
    )
    log = (d / "containerd.log").open("wb")
    proc = subprocess.Popen([CONTAINERD, "--config", str(cfg)], stdout=log, stderr=log)
    sock = d / "containerd.sock"
    try:
        for _ in range(150):
            if sock.exists():
                break
            time.sleep(0.1)
        else:
            pytest.skip(f"containerd did not start: {(d / 'containerd.log').read_text()[-500:]}")
        yield sock
    finally:
        lab.stop_process(proc)
        log.close()


def ctr_pull(sock: Path, root: Path, ref: str) -> subprocess.CompletedProcess[str]:
    ns = f"t{time.monotonic_ns()}"
    return subprocess.run(
        [
            CTR,
            "--address",
            str(sock),
            "-n",
            ns,
            "images",
            "pull",
            "--hosts-dir",
            str(root / "etc/containerd/certs.d"),
            ref,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def hosts_root(tmp: Path, pki, hp: str, hosts_toml: str | None, ca: bool = True) -> Path:
    files: dict[str, str | dict] = {"etc/containerd/config.toml": "version = 2\n"}
    if hosts_toml is not None:
        files[f"etc/containerd/certs.d/{hp}/hosts.toml"] = hosts_toml
    root = make_root(tmp, files)
    if ca:
        with_ca(root, pki, hp, "etc/containerd/certs.d")
    return root


# ctr_says: None when ctr pulls; else what its error names (the same cause as our summary)
@pytest.mark.parametrize(
    ("case", "want_status", "want_code", "needle", "ctr_says"),
    [
        ("ca", "pass", None, None, None),
        ("dead-mirror-first", "warn", "MIRROR_UNREACHABLE", "refused", None),
        (
            "dead-mirror-untrusted-server",
            "fail",
            "CONTAINERD_HOSTS_ERROR",
            "not trusted",
            ("x509", "certificate signed by unknown authority"),
        ),
        (
            "missing-ca",
            "fail",
            "CONTAINERD_CA_MISSING",
            "/nonexistent/ca.crt",
            ("/nonexistent/ca.crt", "no such file or directory"),
        ),
        ("skip-verify", "warn", "TLS_VERIFY_DISABLED", "skip_verify", None),
        ("no-hosts-toml", "fail", "CONTAINERD_HOSTS_ERROR", "HTTP 400", ("400 Bad Request",)),
    ],
)
def test_containerd_hosts_agree_with_ctr(
    containerd, image_registry, pki, env, tmp_path, case, want_status, want_code, needle, ctr_says
):
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    base = f"https://{hp}"
    dead = f"https://127.0.0.1:{lab.closed_port()}"
    toml = {
        "ca": f'server = "{base}"\n[host."{base}"]\n  ca = "ca.crt"\n',
        "dead-mirror-first": (
            f'server = "{base}"\n[host."{dead}"]\n  capabilities = ["pull", "resolve"]\n'
            f'  ca = "ca.crt"\n[host."{base}"]\n  ca = "ca.crt"\n'
        ),
        "dead-mirror-untrusted-server": (
            f'server = "{base}"\n[host."{dead}"]\n  capabilities = ["pull", "resolve"]\n'
        ),
        "missing-ca": f'server = "{base}"\n[host."{base}"]\n  ca = "/nonexistent/ca.crt"\n',
        "skip-verify": f'server = "{base}"\n[host."{base}"]\n  skip_verify = true\n',
        "no-hosts-toml": None,
    }[case]
    root = hosts_root(tmp_path, pki, hp, toml)
    ref = f"{hp}/team/app:1.0"
    r = ours(root, ref, env, pki, runtime="containerd")
    c = r.check("containerd-hosts")
    assert (c["status"], c["code"]) == (want_status, want_code), c
    if needle:
        assert needle in c["summary"], c
    if want_status != "pass":
        assert c["faq"][0] == "containerd-hosts" and c["remediation"], c
    theirs = ctr_pull(containerd, root, ref)
    if ctr_says is None:
        lab.client_ok(theirs)
        assert pulls(c), c
    else:
        lab.client_failed(theirs, *ctr_says)
        assert not pulls(c), c
    assert r.check("registries-conf")["status"] == "skip"


def test_registries_conf_merge_order(tmp_path):
    """Drop-ins in name order replace an entry of the same prefix; the user's drop-in folder
    replaces the system one; the alias cache fills in only what no file sets."""
    from diagnose.containers import find_registry, load_registries_conf

    root = make_root(
        tmp_path,
        {
            "etc/containers/registries.conf": (
                'unqualified-search-registries = ["a.io"]\n[[registry]]\nprefix = "x.io"\n'
                'location = "first.io"\n[aliases]\n"app" = "a.io/team/app"\n'
            ),
            "etc/containers/registries.conf.d/20-b.conf": (
                '[[registry]]\nprefix = "x.io"\nlocation = "second.io"\n'
            ),
            "etc/containers/registries.conf.d/10-a.conf": (
                'unqualified-search-registries = ["b.io", "c.io"]\n'
            ),
            "var/cache/containers/short-name-aliases.conf": (
                '[aliases]\n"app" = "cache.io/app"\n"tool" = "cache.io/tool"\n'
            ),
        },
    )
    home = root / "root"
    conf = load_registries_conf(root, home)
    assert find_registry(conf, "x.io/team/app:1").location == "second.io"
    assert conf.search == ["b.io", "c.io"]
    assert conf.aliases["app"][0] == "a.io/team/app"
    assert conf.aliases["tool"][0] == "cache.io/tool"
    assert find_registry(conf, "x.iox/app") is None
    (home / ".config/containers/registries.conf.d").mkdir(parents=True)
    conf = load_registries_conf(root, home)
    assert find_registry(conf, "x.io/team/app:1").location == "first.io"


def test_broken_auth_file_fails_like_podman(tmp_path, env):
    if PODMAN is None:
        pytest.skip("podman is not installed")
    home, xdg = tmp_path / "h", tmp_path / "xdg"
    (xdg / "containers").mkdir(parents=True)
    home.mkdir()
    (xdg / "containers/auth.json").write_text('{"auths": {"registry.test:5000": {"auth": "eA=="')
    e = {**env, "HOME": str(home), "XDG_RUNTIME_DIR": str(xdg)}
    r = podman_credentials_live("registry.test:5000/team/app:1", e)
    c = r.check("podman-credentials")
    assert (c["status"], c["code"]) == ("fail", "CREDENTIALS_ERROR"), c
    assert str(xdg / "containers/auth.json") in c["summary"] and r.rc == 1
    theirs = subprocess.run(
        [PODMAN, "login", "--get-login", "registry.test:5000"],
        capture_output=True,
        text=True,
        timeout=30,
        env=e,
        stdin=subprocess.DEVNULL,
    )
    lab.client_failed(theirs, str(xdg / "containers/auth.json"), "unexpected end of JSON input")


def test_crio_reads_its_own_policy_and_auth_file(image_registry, pki, env, tmp_path):
    """CRI-O's crio.conf.d can point at another policy.json and a global auth file: the
    verdict for --runtime crio follows them, not podman's files."""
    reg, _ = image_registry
    hp = f"127.0.0.1:{reg.port}"
    reject = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {hp: [{"type": "reject"}]}},
    }
    login = base64.b64encode(b"crio-user:PLANTED-crio-pw-2290").decode()
    root = make_root(
        tmp_path,
        {
            "etc/containers/policy.json": ACCEPT,
            "etc/crio/crio.conf": "[crio]\n[crio.image]\n",
            "etc/crio/crio.conf.d/10-image.conf": (
                '[crio.image]\nsignature_policy = "/etc/crio/policy.json"\n'
                'global_auth_file = "/etc/crio/auth.json"\n'
            ),
            "etc/crio/policy.json": reject,
            "etc/crio/auth.json": {"auths": {hp: {"auth": login}}},
        },
    )
    with_ca(root, pki, hp)
    ref = f"{hp}/team/app:1.0"
    r = ours(root, ref, env, pki, runtime="crio")
    c = r.check("signature-policy")
    assert (c["status"], c["code"]) == ("fail", "POLICY_REJECT"), c
    assert "/etc/crio/policy.json" in c["summary"], c
    cred = r.check("podman-credentials")
    assert "crio-user" in cred["summary"] and "/etc/crio/auth.json" in cred["summary"], cred
    assert "PLANTED-crio-pw-2290" not in r.out + r.err
    # no CRI-O here: skopeo, a client of the same library, given CRI-O's policy file, refuses
    lab.client_failed(
        skopeo_copy(root, ref, tmp_path, "etc/crio/policy.json"), "rejected by policy"
    )
    # podman on the same host keeps the shared, accepting policy, and skopeo with it pulls
    r = ours(root, ref, env, pki, runtime="podman")
    assert r.check("signature-policy")["status"] == "pass"
    lab.client_ok(skopeo_copy(root, ref, tmp_path))
    # a crio.conf that does not parse names its line
    (root / "etc/crio/crio.conf.d/20-broken.conf").write_text("[crio.image\n")
    c = ours(root, ref, env, pki, runtime="crio").check("registries-conf")
    assert (c["status"], c["code"]) == ("fail", "CONTAINERS_CONFIG_ERROR"), c
    assert "20-broken.conf line 1" in c["summary"], c


def test_docker_hub_login_in_the_docker_config_is_podmans_too(tmp_path, env):
    """docker writes Docker Hub's login under https://index.docker.io/v1/; podman reads it for
    docker.io, and so do we."""
    if PODMAN is None:
        pytest.skip("podman is not installed")
    home, xdg = tmp_path / "h", tmp_path / "xdg"
    (home / ".docker").mkdir(parents=True)
    xdg.mkdir()
    auth = base64.b64encode(b"hubuser:PLANTED-hub-pw-6634").decode()
    (home / ".docker/config.json").write_text(
        json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": auth}}})
    )
    e = {**env, "HOME": str(home), "XDG_RUNTIME_DIR": str(xdg)}
    theirs = subprocess.run(
        [PODMAN, "login", "--get-login", "docker.io"],
        capture_output=True,
        text=True,
        timeout=30,
        env=e,
        stdin=subprocess.DEVNULL,
    )
    assert theirs.stdout.strip() == "hubuser", theirs.stdout + theirs.stderr
    r = podman_credentials_live("docker.io/library/busybox:1", e)
    c = r.check("podman-credentials")
    assert c["status"] == "pass" and "user hubuser" in c["summary"], c
    assert "PLANTED-hub-pw-6634" not in r.out + r.err
