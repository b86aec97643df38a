"""Where each container runtime keeps its images on a host, how much room is left there, and how
much an image needs. Pure readers over the host root (no network, no writes), each returning what
it found and what was wrong, never raising on bad input, so that each can be fuzzed.

The paths are the runtimes' own: docker's `data-root` (command line, /etc/sysconfig/docker,
daemon.json; default /var/lib/docker), containerd's `root` in config.toml (default
/var/lib/containerd), the `graphroot` (or `imagestore`) of containers-storage's storage.conf for
podman, skopeo and buildah (default /var/lib/containers/storage; rootless:
~/.local/share/containers/storage) and CRI-O's `root` in crio.conf.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from diagnose.dockerhost import flag_values, parse_daemon_json, parse_sysconfig

DOCKER_DEFAULT = "/var/lib/docker"
CONTAINERD_DEFAULT = "/var/lib/containerd"
CONTAINERS_DEFAULT = "/var/lib/containers/storage"
# storage.conf: the administrator's file, else the one the distribution ships
STORAGE_CONF = ("etc/containers/storage.conf", "usr/share/containers/storage.conf")
MAX_LINKS = 40  # as the kernel, before ELOOP

# A gzip (or zstd) layer of ordinary files unpacks to about 2 to 3 times its compressed size;
# the check plans for the top of that range. An uncompressed tar layer unpacks to its own size.
UNPACK_FACTOR = 3


@dataclass(frozen=True)
class DataRoot:
    """One runtime's image store on the host."""

    runtime: str  # docker, containerd, podman, crio
    path: str  # as the host names it: /var/lib/docker
    source: str  # where that was set: "default", a file, or a command line flag
    driver: str = ""  # the storage driver when known (vfs keeps every layer as a full copy)
    # whether the compressed download is written under this root too (docker stages it in
    # <data-root>/tmp, containerd keeps it in its content store; containers/image stages it in
    # image_copy_tmp_dir, /var/tmp by default, outside the graph root)
    keeps_download: bool = True
    rootless: bool = False
    notes: tuple[str, ...] = ()


def _absolute(value: str, source: str, notes: list[str]) -> str:
    if value.startswith("/"):
        return value
    notes.append(f"{source} gives a relative path {value!r}: read from /")
    return "/" + value


def docker_root(root: Path, args: Sequence[str] = ()) -> DataRoot:
    """docker's data root as dockerd picks it: a flag on its command line (the running daemon's,
    or Red Hat's OPTIONS in /etc/sysconfig/docker), else daemon.json, else the default. The
    flag and the file key may not both be set (dockerd refuses to start)."""
    notes: list[str] = []
    sysconfig = parse_sysconfig(root / "etc/sysconfig/docker")
    config = [*flag_values(list(args), "--config-file"), "/etc/docker/daemon.json"][0]
    daemon = parse_daemon_json(root / config.lstrip("/"))
    if daemon.error:
        notes.append(f"{config} does not parse ({daemon.error})")
    path, source, driver = "", "default", ""
    for where, argv in (
        ("the dockerd command line", list(args)),
        ("OPTIONS in /etc/sysconfig/docker", sysconfig.options),
    ):
        for flag in ("--data-root", "--graph", "-g"):
            found = flag_values(argv, flag)
            if found and not path:
                path, source = found[-1], f"{flag} on {where}"
        found = flag_values(argv, "--storage-driver") + flag_values(argv, "-s")
        if found and not driver:
            driver = found[-1]
    if not path:
        for key in ("data-root", "graph"):  # "graph": the name before docker 17.05
            value = daemon.data.get(key)
            if isinstance(value, str) and value:
                path, source = value, f'"{key}" in {config}'
                break
    value = daemon.data.get("storage-driver")
    if not driver and isinstance(value, str):
        driver = value
    path = _absolute(path, source, notes) if path else DOCKER_DEFAULT
    features = daemon.data.get("features")
    if isinstance(features, dict) and features.get("containerd-snapshotter") is True:
        # docker's images then live in containerd's content store and snapshots
        store = containerd_root(root)
        notes += [*store.notes, f"docker's own data root {path} holds containers and volumes"]
        source = f"containerd's root ({store.source}): containerd-snapshotter in daemon.json"
        return DataRoot("docker", store.path, source, "", True, False, tuple(notes))
    return DataRoot("docker", path, source, driver, True, False, tuple(notes))


def containerd_root(root: Path) -> DataRoot:
    """containerd's `root` from /etc/containerd/config.toml (every config version has it at
    the top level), else the default."""
    from diagnose.containers import CONTAINERD_CONFIG, _toml

    notes: list[str] = []
    doc, err = _toml(root / CONTAINERD_CONFIG)
    if err:
        notes.append(f"/{CONTAINERD_CONFIG} does not parse ({err})")
    value = doc.get("root") if doc else None
    if isinstance(value, str) and value:
        source = f"root in /{CONTAINERD_CONFIG}"
        return DataRoot("containerd", _absolute(value, source, notes), source, notes=tuple(notes))
    return DataRoot("containerd", CONTAINERD_DEFAULT, "default", notes=tuple(notes))


def _storage_section(path: Path, notes: list[str]) -> dict[str, Any] | None:
    from diagnose.containers import _toml

    doc, err = _toml(path)
    if err:
        notes.append(f"{path} does not parse ({err})")
        return None
    if doc is None:
        return None
    section = doc.get("storage")
    return section if isinstance(section, dict) else {}


def _expand(value: str, home: Path, environ: Mapping[str, str]) -> str:
    """$HOME, $UID and $USER in a rootless path, as containers/storage expands them."""
    for name, sub in (
        ("HOME", str(home)),
        ("UID", str(os.getuid())),
        ("USER", environ.get("USER", "")),
    ):
        value = value.replace("${" + name + "}", sub).replace("$" + name, sub)
    return value


def _shown(root: Path, path: Path) -> str:
    """A file as the host names it."""
    return "/" + str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def containers_root(
    root: Path, home: Path, environ: Mapping[str, str], live: bool, rootless: bool
) -> DataRoot:
    """The image store of podman, skopeo and buildah: storage.conf's `imagestore` when set,
    else its `graphroot`. A rootless user's own storage.conf ($CONTAINERS_STORAGE_CONF, else
    ~/.config/containers/storage.conf) replaces the system one; without it, the system file's
    `rootless_storage_path`, else ~/.local/share/containers/storage."""
    notes: list[str] = []
    own: list[Path] = []
    if live and environ.get("CONTAINERS_STORAGE_CONF"):
        own.append(Path(environ["CONTAINERS_STORAGE_CONF"]))
    if rootless:
        config_home = environ.get("XDG_CONFIG_HOME") if live else None
        own.append(
            (Path(config_home) if config_home else home / ".config") / "containers/storage.conf"
        )
    files = own + [root / p for p in STORAGE_CONF]
    chosen = next((f for f in files if f.is_file()), None)
    section = (_storage_section(chosen, notes) if chosen is not None else None) or {}
    driver = str(section.get("driver")) if isinstance(section.get("driver"), str) else ""
    keys = (
        ("rootless_storage_path",)
        if rootless and chosen not in own
        else ("imagestore", "graphroot")
    )
    for key in keys:
        value = section.get(key)
        if isinstance(value, str) and value and chosen is not None:
            source = f"{key} in {_shown(root, chosen)}"
            path = _absolute(_expand(value, home, environ) if rootless else value, source, notes)
            return DataRoot("podman", path, source, driver, False, rootless, tuple(notes))
    if rootless:
        data_home = environ.get("XDG_DATA_HOME") if live else None
        path = str((Path(data_home) if data_home else home / ".local/share") / "containers/storage")
    else:
        path = CONTAINERS_DEFAULT
    return DataRoot("podman", path, "default", driver, False, rootless, tuple(notes))


def crio_root(root: Path, storage: DataRoot) -> DataRoot:
    """CRI-O's store: `root` (and `storage_driver`) of [crio] in crio.conf and crio.conf.d,
    a later file winning, else the system storage.conf's (CRI-O runs as root)."""
    from diagnose.containers import _dropins, _toml

    notes = list(storage.notes)
    path, source, driver = storage.path, storage.source, storage.driver
    for conf in [root / "etc/crio/crio.conf", *_dropins(root / "etc/crio/crio.conf.d")]:
        doc, err = _toml(conf)
        if err:
            notes.append(f"{conf} does not parse ({err})")
            continue
        crio = doc.get("crio") if doc else None
        if not isinstance(crio, dict):
            continue
        shown = _shown(root, conf)
        if isinstance(crio.get("root"), str) and crio["root"]:
            source = f"root of [crio] in {shown}"
            path = _absolute(crio["root"], source, notes)
        if isinstance(crio.get("storage_driver"), str) and crio["storage_driver"]:
            driver = crio["storage_driver"]
    return DataRoot("crio", path, source, driver, False, False, tuple(notes))


# ------------------------------------------------------------------------------ measuring
@dataclass(frozen=True)
class Space:
    """Room on the file system that holds (or will hold) a data root."""

    path: str  # the data root, as the host names it
    measured: str  # where statvfs was taken: the data root, or its nearest existing ancestor
    exists: bool
    total: int = 0
    free: int = 0  # bytes the runtime may still write (root may use the reserved blocks)
    available: int = 0  # bytes any user may still write (what `df` shows as Avail)
    inodes: int = 0  # 0: the file system makes inodes as it needs them (btrfs), no limit
    free_inodes: int = 0
    error: str | None = None

    @property
    def used_fraction(self) -> float:
        return 1.0 - self.free / self.total if self.total else 0.0


def nearest_existing(root: Path, host_path: str) -> tuple[Path, str, bool, str | None]:
    """The data root, or its nearest existing ancestor, under the host root: (the path here,
    the host's name for it, whether the whole path exists, a note). Symbolic links are followed
    as the host would follow them (an absolute target starts again at the host root), at most
    MAX_LINKS of them; `..` never leaves the host root."""
    pending = [p for p in PurePosixPath(host_path).parts if p not in ("/", "", ".")]
    done: list[str] = []
    links = 0
    while pending:
        name = pending.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, name)
        try:
            mode = os.lstat(here).st_mode
        except (OSError, ValueError):  # ValueError: a NUL byte in the configured path
            return root.joinpath(*done), "/" + "/".join(done), False, None
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_LINKS:
                note = f"more than {MAX_LINKS} symbolic links under /{'/'.join(done)}"
                return root.joinpath(*done), "/" + "/".join(done), False, note
            try:
                target = os.readlink(here)
            except OSError:
                return root.joinpath(*done), "/" + "/".join(done), False, None
            parts = [p for p in PurePosixPath(target).parts if p not in ("", ".")]
            if target.startswith("/"):
                done = []
                parts = parts[1:]
            pending = parts + pending
            continue
        done.append(name)
    return root.joinpath(*done), "/" + "/".join(done), True, None


def measure(root: Path, host_path: str, rootless: bool = False) -> Space:
    """statvfs of the data root (or of its nearest existing ancestor). A runtime that runs as
    root may fill the blocks reserved for root; a rootless one may not."""
    here, shown, exists, note = nearest_existing(root, host_path)
    try:
        st = os.statvfs(here)
    except OSError as exc:
        return Space(host_path, shown, exists, error=f"statvfs {shown}: {exc.strerror or exc}")
    blocks = st.f_bavail if rootless else st.f_bfree
    inodes = st.f_favail if rootless else st.f_ffree
    return Space(
        host_path,
        shown,
        exists,
        total=st.f_blocks * st.f_frsize,
        free=blocks * st.f_frsize,
        available=st.f_bavail * st.f_frsize,
        inodes=st.f_files,
        free_inodes=inodes,
        error=note,
    )


# --------------------------------------------------------------------------- image sizes
@dataclass(frozen=True)
class ImageSize:
    """What an image's manifest says about its size."""

    compressed: int  # config and layers, as downloaded
    layers: tuple[tuple[int, bool], ...]  # (size, compressed?) of each layer, base first

    def unpacked(self, factor: float, driver: str = "") -> int:
        """The unpacked layers with compressed ones taken `factor` times their size; vfs
        keeps each layer as a full copy of its parent plus its own files."""
        sizes = [int(s * (factor if packed else 1)) for s, packed in self.layers]
        if driver == "vfs":
            total, running = 0, 0
            for s in sizes:
                running += s
                total += running
            return total
        return sum(sizes)

    def needs(self, data_root: DataRoot) -> tuple[int, int]:
        """(bytes a pull certainly writes under the data root, bytes to plan for): the
        compressed download where the runtime keeps it there, plus the unpacked layers (at
        least their compressed size; planned at UNPACK_FACTOR times a compressed layer)."""
        download = self.compressed if data_root.keeps_download else 0
        return (
            download + self.unpacked(1, data_root.driver),
            download + self.unpacked(UNPACK_FACTOR, data_root.driver),
        )


def is_compressed(media_type: str) -> bool:
    """Whether a layer media type is compressed (an unknown one counts as compressed)."""
    return not media_type.lower().endswith(".tar")


def image_size(manifest: Mapping[str, Any] | None) -> ImageSize | None:
    """The sizes an image manifest declares (None for an index, or no manifest at all)."""
    if not isinstance(manifest, Mapping) or not isinstance(manifest.get("layers"), list):
        return None
    layers: list[tuple[int, bool]] = []
    for layer in manifest["layers"]:
        if not isinstance(layer, Mapping):
            continue
        size = layer.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            layers.append((size, is_compressed(str(layer.get("mediaType") or ""))))
    config = manifest.get("config")
    config_size = config.get("size") if isinstance(config, Mapping) else 0
    if not isinstance(config_size, int) or isinstance(config_size, bool) or config_size < 0:
        config_size = 0
    return ImageSize(config_size + sum(s for s, _ in layers), tuple(layers))


def human_bytes(n: float) -> str:
    """A size in binary units, as `df -h` prints it."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
