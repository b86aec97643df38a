"""The host's own limits: room and inodes in each runtime's data root, measured on real small
file systems (tmpfs mounted at the data root under a fixture host root), and set beside what
docker, ctr and podman do when they pull onto the very same file system."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnose.dataroots import (
    DataRoot,
    containerd_root,
    containers_root,
    crio_root,
    docker_root,
    image_size,
    measure,
    nearest_existing,
)
from diagnose.explain import explain_text
from tests import lab
from tests.conftest import validate_report

MIB = 1024 * 1024
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

# where each runtime's data root is set in the fixture host root, and what the check says
RUNTIME_FILES = {
    "docker": ("etc/docker/daemon.json", '{"data-root": "/srv/docker-data"}', "/srv/docker-data"),
    "containerd": (
        "etc/containerd/config.toml",
        'version = 2\nroot = "/srv/containerd"\n',
        "/srv/containerd",
    ),
    "podman": (
        "etc/containers/storage.conf",
        '[storage]\ndriver = "overlay"\ngraphroot = "/srv/containers/storage"\n',
        "/srv/containers/storage",
    ),
    "crio": ("etc/crio/crio.conf", '[crio]\nroot = "/srv/crio"\n', "/srv/crio"),
}
PRUNE = {
    "docker": ("docker system prune", "docker image prune -a"),
    "containerd": ("crictl rmi --prune", "ctr -n <namespace> images rm --sync"),
    "podman": ("podman system prune",),
    "crio": ("crictl rmi --prune",),
}


@contextlib.contextmanager
def tmpfs(path: Path, size: str, nr_inodes: int | None = None) -> Iterator[Path]:
    """A tmpfs of `size` mounted at path for the block, always unmounted after it."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A folder with a short path: daemons put unix sockets (108 bytes at most) in it."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="rdd"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def fill(path: Path, leave: int) -> None:
    """Write a file that leaves `leave` bytes free on path's file system."""
    st_ = os.statvfs(path)
    free = st_.f_bfree * st_.f_frsize
    assert free > leave, (free, leave)
    with (path / "filler").open("ab") as fh:
        fh.write(b"\0" * (free - leave))


def fill_inodes(path: Path, leave: int = 0) -> None:
    """Empty files until `leave` inodes are free (bounded by the inode count)."""
    folder = path / "many"
    folder.mkdir()
    for n in range(os.statvfs(path).f_files):
        if os.statvfs(path).f_ffree <= leave:
            break
        try:
            (folder / str(n)).touch()
        except OSError:
            break


def host_root(tmp: Path, runtime: str, content: str | None = None) -> tuple[Path, Path]:
    """A host root whose configuration puts runtime's data root under /srv; (root, where the
    data root is under it)."""
    rel, default, data_root = RUNTIME_FILES[runtime]
    root = tmp / f"root-{runtime}-{time.monotonic_ns()}"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(content if content is not None else default)
    return root, root / data_root.lstrip("/")


@pytest.fixture(scope="module")
def image(registry, pki) -> str:
    """A real image of one 1 MiB layer (random bytes: it does not compress) in the registry."""
    base = f"https://127.0.0.1:{registry.port}"
    lab.push_real_image(base, "disk/app", "1", ca_file=pki.ca_file, payload=MIB)
    return f"127.0.0.1:{registry.port}/disk/app:1"


def verdict(root: Path, ref: str, runtime: str, env, pki, schema) -> dict:
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
        "disk-space,platform",
        "-f",
        "json",
        env=env,
    )
    assert r.rc in (0, 1) and "Traceback" not in r.err, r.out + r.err
    validate_report(r.report, schema)
    return r.check("disk-space")


# ------------------------------------------------------------------- fixture roots on tmpfs
@ROOT_ONLY
@pytest.mark.parametrize("runtime", ["docker", "containerd", "podman", "crio"])
def test_a_nearly_full_data_root_fails_with_the_prune_commands(
    runtime, image, env, pki, schema, tmp_path
):
    root, data = host_root(tmp_path, runtime)
    with tmpfs(data, "8m"):
        roomy = verdict(root, image, runtime, env, pki, schema)
        assert roomy["status"] == "pass", roomy
        assert RUNTIME_FILES[runtime][2] in roomy["summary"]
        assert "room for" in roomy["summary"]
        fill(data, 512 * 1024)
        c = verdict(root, image, runtime, env, pki, schema)
    assert (c["status"], c["code"], c["faq"]) == ("fail", "DISK_SPACE_LOW", ["disk-space"]), c
    assert RUNTIME_FILES[runtime][2] in c["summary"] and "no space left on device" in c["summary"]
    assert image in c["summary"]
    for command in PRUNE[runtime]:
        assert any(command in step for step in c["remediation"]), (command, c["remediation"])
    facts = c["evidence"]["roots"][0]
    assert facts["runtime"] == runtime and facts["exists"] is True
    assert facts["free_bytes"] < facts["needs_bytes"]
    assert RUNTIME_FILES[runtime][0] in facts["source"]


@ROOT_ONLY
@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_out_of_inodes_fails_with_the_inode_code(runtime, image, env, pki, schema, tmp_path):
    root, data = host_root(tmp_path, runtime)
    with tmpfs(data, "8m", nr_inodes=256):
        fill_inodes(data, leave=10)
        c = verdict(root, image, runtime, env, pki, schema)
    assert (c["status"], c["code"]) == ("fail", "DISK_INODES_LOW"), c
    assert c["evidence"]["codes"] == ["DISK_INODES_LOW"]  # the blocks are fine
    assert "inodes" in c["summary"] and "df -i" in c["remediation"][0]
    assert any(PRUNE[runtime][0] in step for step in c["remediation"])


@ROOT_ONLY
def test_room_for_the_download_but_maybe_not_the_unpacking_warns(image, env, pki, schema, tmp_path):
    root, data = host_root(tmp_path, "docker")
    with tmpfs(data, "8m"):
        fill(data, 3 * MIB)  # >= 2 x 1 MiB certain, < 1 MiB + 3 x 1 MiB planned
        c = verdict(root, image, "docker", env, pki, schema)
    assert (c["status"], c["code"]) == ("warn", "DISK_SPACE_LOW"), c
    assert "may run out of room" in c["summary"]
    facts = c["evidence"]["roots"][0]
    assert facts["needs_bytes"] <= facts["free_bytes"] < facts["plans_bytes"]
    assert c["evidence"]["unpack_factor"] == 3


@ROOT_ONLY
def test_without_an_image_a_full_root_fails_and_a_nearly_full_one_warns(
    registry, env, pki, schema, tmp_path
):
    root, data = host_root(tmp_path, "containerd")
    with tmpfs(data, "8m"):
        fill(data, 300 * 1024)  # under 5% of 8 MiB
        warn = verdict(root, f"127.0.0.1:{registry.port}", "containerd", env, pki, schema)
        fill(data, 0)
        full = verdict(root, f"127.0.0.1:{registry.port}", "containerd", env, pki, schema)
    assert (warn["status"], warn["code"]) == ("warn", "DISK_SPACE_LOW"), warn
    assert "nearly full" in warn["summary"] and warn["evidence"]["size_unknown"] == "no image named"
    assert (full["status"], full["code"]) == ("fail", "DISK_SPACE_LOW"), full
    assert "is full" in full["summary"]


@ROOT_ONLY
def test_a_symbolic_link_is_followed_inside_the_host_root(image, env, pki, schema, tmp_path):
    """/var/lib/docker moved to another disk with a link, the usual way: the link's absolute
    target is read under the host root, never on this machine."""
    root, _ = host_root(tmp_path, "docker", "{}")
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/docker").symlink_to("/mnt/big/docker")
    with tmpfs(root / "mnt/big", "8m"):
        (root / "mnt/big/docker").mkdir()
        fill(root / "mnt/big", 256 * 1024)
        c = verdict(root, image, "docker", env, pki, schema)
    assert (c["status"], c["code"]) == ("fail", "DISK_SPACE_LOW"), c
    facts = c["evidence"]["roots"][0]
    assert (facts["path"], facts["source"], facts["measured"]) == (
        "/var/lib/docker",
        "default",
        "/mnt/big/docker",
    )


def test_a_data_root_that_does_not_exist_is_said_not_a_crash(image, env, pki, schema, tmp_path):
    root, _ = host_root(tmp_path, "docker", '{"data-root": "/nowhere/docker"}')
    c = verdict(root, image, "docker", env, pki, schema)
    assert c["status"] in ("pass", "warn", "fail"), c
    assert "/nowhere/docker" in json.dumps(c["evidence"])
    facts = c["evidence"]["roots"][0]
    assert facts["exists"] is False and facts["measured"] == "/"
    if c["status"] == "pass":
        assert "not made yet: measured /" in c["summary"]


def test_no_runtime_no_verdict(registry, env, pki, schema):
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--checks",
        "disk-space",
        "-f",
        "json",
        env=env,
    )
    validate_report(r.report, schema)
    assert r.check("disk-space")["status"] == "skip"


# -------------------------------------------------------------------- the readers, directly
def test_docker_data_root_from_each_place_dockerd_takes_it(tmp_path):
    root = tmp_path / "r"
    (root / "etc/docker").mkdir(parents=True)
    assert docker_root(root).path == "/var/lib/docker"
    (root / "etc/docker/daemon.json").write_text(
        '{"data-root": "/data/d", "storage-driver": "vfs"}'
    )
    got = docker_root(root)
    assert (got.path, got.driver) == ("/data/d", "vfs")
    assert got.source == '"data-root" in /etc/docker/daemon.json'
    assert docker_root(root, ["--data-root", "/flag/d"]).path == "/flag/d"
    assert docker_root(root, ["--data-root=/flag/e"]).source.startswith(
        "--data-root on the dockerd"
    )
    assert docker_root(root, ["-g", "/old/g"]).path == "/old/g"
    assert docker_root(root, ["--graph=/old/graph"]).path == "/old/graph"
    (root / "etc/other.json").write_text('{"data-root": "/other"}')
    other = docker_root(root, ["--config-file", "/etc/other.json"])
    assert (other.path, other.source) == ("/other", '"data-root" in /etc/other.json')
    (root / "etc/sysconfig").mkdir()
    (root / "etc/sysconfig/docker").write_text("OPTIONS='--selinux-enabled -g /rh/docker'\n")
    assert docker_root(root).path == "/rh/docker"
    (root / "etc/docker/daemon.json").write_text('{"features": {"containerd-snapshotter": true}}')
    (root / "etc/containerd").mkdir()
    (root / "etc/containerd/config.toml").write_text('root = "/ctd"\n')
    snap = docker_root(root)
    assert snap.path == "/ctd" and "containerd-snapshotter" in snap.source
    (root / "etc/docker/daemon.json").write_text("{not json")
    (root / "etc/sysconfig/docker").unlink()
    broken = docker_root(root)
    assert broken.path == "/var/lib/docker" and "does not parse" in broken.notes[0]


def test_storage_conf_as_containers_storage_reads_it(tmp_path):
    root = tmp_path / "r"
    home = tmp_path / "home"
    (root / "usr/share/containers").mkdir(parents=True)
    (root / "usr/share/containers/storage.conf").write_text(
        '[storage]\ngraphroot = "/shipped"\nrootless_storage_path = "$HOME/rl"\n'
    )
    assert containers_root(root, home, {}, False, False).path == "/shipped"
    (root / "etc/containers").mkdir(parents=True)
    (root / "etc/containers/storage.conf").write_text(
        '[storage]\ngraphroot = "/admin"\nimagestore = "/images"\n'
    )
    got = containers_root(root, home, {}, False, False)
    assert (got.path, got.source) == ("/images", "imagestore in /etc/containers/storage.conf")
    assert got.keeps_download is False
    # rootless: the system file's rootless_storage_path ($HOME expanded), else the default
    rootless = containers_root(root, home, {}, True, True)
    assert rootless.path == str(home / ".local/share/containers/storage")
    (root / "etc/containers/storage.conf").write_text(
        '[storage]\nrootless_storage_path = "$HOME/rl"\n'
    )
    assert containers_root(root, home, {}, True, True).path == f"{home}/rl"
    (home / ".config/containers").mkdir(parents=True)
    (home / ".config/containers/storage.conf").write_text('[storage]\ngraphroot = "/mine"\n')
    assert containers_root(root, home, {}, True, True).path == "/mine"
    crio = tmp_path / "crio"
    (crio / "etc/crio/crio.conf.d").mkdir(parents=True)
    (crio / "etc/crio/crio.conf.d/10-root.conf").write_text(
        '[crio]\nroot = "/crio"\nstorage_driver = "vfs"\n'
    )
    got = crio_root(crio, containers_root(crio, home, {}, False, False))
    assert (got.path, got.driver) == ("/crio", "vfs")


def test_containerd_root_and_a_broken_config(tmp_path):
    root = tmp_path / "r"
    (root / "etc/containerd").mkdir(parents=True)
    assert containerd_root(root).path == "/var/lib/containerd"
    (root / "etc/containerd/config.toml").write_text('version = 3\nroot = "/ctd"\n')
    assert containerd_root(root).path == "/ctd"
    (root / "etc/containerd/config.toml").write_text("root = [")
    got = containerd_root(root)
    assert got.path == "/var/lib/containerd" and "does not parse" in got.notes[0]


def test_links_and_dot_dots_stay_inside_the_host_root(tmp_path):
    root = tmp_path / "r"
    (root / "a/b").mkdir(parents=True)
    (root / "a/up").symlink_to("../../../../..")
    (root / "a/loop").symlink_to("/a/loop")
    assert nearest_existing(root, "/a/up/a/b/c")[1:3] == ("/a/b", False)
    assert nearest_existing(root, "/../../a/b")[1:3] == ("/a/b", True)
    _, shown, exists, note = nearest_existing(root, "/a/loop/x")
    assert (shown, exists) == ("/a", False) and "symbolic links" in str(note)
    assert measure(root, "/a/loop/x").total > 0
    assert nearest_existing(root, "/a/b\0/c")[1:3] == ("/a", False)  # never a ValueError


def test_image_size_and_what_each_runtime_needs():
    manifest = {
        "config": {"size": 1000},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 100},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": 50},
        ],
    }
    size = image_size(manifest)
    assert size is not None and size.compressed == 1150
    docker = DataRoot("docker", "/d", "default")
    assert size.needs(docker) == (1150 + 150, 1150 + 300 + 50)
    podman = DataRoot("podman", "/p", "default", keeps_download=False)
    assert size.needs(podman) == (150, 350)
    vfs = DataRoot("docker", "/d", "default", driver="vfs")  # a full copy per layer
    assert size.needs(vfs)[0] == 1150 + 100 + 150
    assert image_size({"manifests": []}) is None and image_size(None) is None
    assert image_size({"layers": [{"size": True}, {"size": -1}, "x"]}) is not None


FILES = st.sampled_from(
    [
        "etc/docker/daemon.json",
        "etc/sysconfig/docker",
        "etc/containerd/config.toml",
        "etc/containers/storage.conf",
        "etc/crio/crio.conf",
    ]
)
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=200),
    st.sampled_from(
        [
            '{"data-root": 5}',
            '{"data-root": ""}',
            '{"graph": ["x"]}',
            "root = 3",
            "[storage]\ngraphroot = 1",
            "storage = 1",
            "[crio]\nroot = []",
            "crio = 2",
            "OPTIONS='-g'",
            'OPTIONS="--data-root"',
            '[storage]\ngraphroot = "relative/x"',
        ]
    ),
)


@settings(max_examples=150, deadline=None)
@given(files=st.lists(st.tuples(FILES, TEXT), max_size=4), args=st.lists(st.text(max_size=20)))
def test_readers_never_raise(tmp_path_factory, files, args):
    root = tmp_path_factory.mktemp("fz")
    for rel, text in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    home = root / "root"
    for got in (
        docker_root(root, args),
        containerd_root(root),
        containers_root(root, home, {}, False, False),
        crio_root(root, containers_root(root, home, {}, False, False)),
    ):
        assert got.path.startswith("/")
        measure(root, got.path)


# ----------------------------------------------- ground truth: the clients on the same disk
def _ours_says(c: dict) -> bool:
    """Our verdict as a yes/no about the pull: pass and warn pull, fail does not."""
    return c["status"] in ("pass", "warn")


def _agree(c: dict, ok: bool, their_err: str) -> None:
    assert _ours_says(c) == ok, (c, their_err)
    if not ok:
        assert "no space left on device" in their_err, their_err
        assert (c["code"], c["faq"]) == ("DISK_SPACE_LOW", ["disk-space"])
        assert "no space left on device" in c["summary"]
        # and explain, given the client's own words, names the same cause first
        assert explain_text(their_err, []).candidates[0].key == "disk-space", their_err


@pytest.fixture(scope="module")
def big_image(registry, pki) -> str:
    """One 4 MiB layer of random bytes: 4 MiB to download, 4 MiB unpacked."""
    base = f"https://127.0.0.1:{registry.port}"
    lab.push_real_image(base, "disk/big", "1", ca_file=pki.ca_file, payload=4 * MIB)
    return f"127.0.0.1:{registry.port}/disk/big:1"


# free MiB left on the data root -> whether the pull fits: docker and containerd need the
# download and the unpacked files (8 MiB), podman only the unpacked files (its download is
# staged in /var/tmp)
CASES = {"docker": (2, 6, 12), "containerd": (2, 6, 12), "podman": (2, 6)}


@ROOT_ONLY
def test_docker_pull_on_a_full_data_root_agrees(big_image, env, pki, schema, tmp_path):
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("dockerd and the docker CLI (Debian docker.io) are needed")
    root, data = host_root(tmp_path, "docker")
    with short_dir() as d, tmpfs(data, "32m"):
        (d / "daemon.json").write_text(json.dumps({"data-root": str(data)}))  # dockerd's view
        with lab.private_dockerd(d, d / "daemon.json", own_root=True) as host:
            info = subprocess.run(
                ["docker", "-H", host, "info", "-f", "{{.DockerRootDir}}"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert info.stdout.strip() == str(data)
            for left in CASES["docker"]:
                fill(data, left * MIB)
                ours = verdict(root, big_image, "docker", env, pki, schema)
                theirs = subprocess.run(
                    ["docker", "-H", host, "pull", big_image],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                _agree(ours, theirs.returncode == 0, theirs.stderr)
                assert (theirs.returncode == 0) == (left >= 9), (left, theirs.stderr)
                subprocess.run(
                    ["docker", "-H", host, "image", "prune", "-af"],
                    capture_output=True,
                    timeout=60,
                )
                (data / "filler").unlink()


@ROOT_ONLY
def test_ctr_pull_on_a_full_root_agrees(big_image, registry, env, pki, schema, tmp_path):
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd and ctr are needed")
    root, data = host_root(tmp_path, "containerd")
    hp = f"127.0.0.1:{registry.port}"
    certs = tmp_path / "certs.d" / hp
    certs.mkdir(parents=True)
    shutil.copy(pki.ca_file, certs / "ca.crt")
    (certs / "hosts.toml").write_text(
        f'server = "https://{hp}"\n[host."https://{hp}"]\n  ca = "{certs / "ca.crt"}"\n'
    )
    with short_dir() as d, tmpfs(data, "32m"):
        cfg = d / "config.toml"
        cfg.write_text(
            f'version = 2\nroot = "{data}"\nstate = "{d}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{d}/c.sock"\n'
        )
        with (d / "log").open("wb") as log:
            proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=log, stderr=log)
        try:
            for _ in range(150):
                if (d / "c.sock").exists():
                    break
                time.sleep(0.1)
            for n, left in enumerate(CASES["containerd"]):
                fill(data, left * MIB)
                ours = verdict(root, big_image, "containerd", env, pki, schema)
                pull = ["images", "pull", "--hosts-dir", str(tmp_path / "certs.d"), big_image]
                theirs = subprocess.run(
                    ["ctr", "--address", str(d / "c.sock"), "-n", f"t{n}", *pull],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    stdin=subprocess.DEVNULL,
                )
                _agree(ours, theirs.returncode == 0, theirs.stderr)
                assert (theirs.returncode == 0) == (left >= 9), (left, theirs.stderr)
                (data / "filler").unlink()
        finally:
            lab.stop_process(proc)


@ROOT_ONLY
def test_podman_pull_on_a_full_graphroot_agrees(big_image, env, pki, schema, tmp_path):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    root, data = host_root(tmp_path, "podman")
    podhome = tmp_path / "podhome"
    podhome.mkdir()
    conf = tmp_path / "storage.conf"
    with short_dir() as run, tmpfs(data, "32m"):
        for n, left in enumerate(CASES["podman"]):
            # podman reads the same kind of file, with this machine's path to the tmpfs
            conf.write_text(
                f'[storage]\ndriver = "vfs"\ngraphroot = "{data}/s{n}"\nrunroot = "{run}/{n}"\n'
            )
            fill(data, left * MIB)
            ours = verdict(root, big_image, "podman", env, pki, schema)
            theirs = subprocess.run(
                ["podman", "pull", "--tls-verify=false", big_image],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                env={**env, "HOME": str(podhome), "CONTAINERS_STORAGE_CONF": str(conf)},
            )
            _agree(ours, theirs.returncode == 0, theirs.stderr)
            assert (theirs.returncode == 0) == (left >= 5), (left, theirs.stderr)
            if theirs.returncode == 0:
                assert ours["status"] == "warn", ours  # 4 MiB unpacked < 6 < 3 x 4 MiB
            (data / "filler").unlink()
            shutil.rmtree(data / f"s{n}", ignore_errors=True)
