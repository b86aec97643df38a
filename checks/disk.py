"""Room where the runtimes keep their images: a full or nearly full data root (space or inodes)
fails a pull with "no space left on device" however healthy the registry is. Each runtime in
play is measured where it really writes (its configured data root, under the host root), against
the size of the image named when its manifest is known."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from diagnose.check import Check
from diagnose.choices import RUNTIMES
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.facts import DAEMON, PLATFORM_MANIFEST
from diagnose.models import Finding, Issue, Status, combine, passed, skipped

if TYPE_CHECKING:
    from diagnose.dataroots import DataRoot, ImageSize, Space

MIB = 1024 * 1024
GIB = 1024 * MIB
# full: under 1% of the file system and under 100 MiB free (a pull writes metadata as well as
# layers); nearly full: under 5% and under 1 GiB (the next ordinary image may not fit)
FULL = (0.01, 100 * MIB)
NEARLY_FULL = (0.05, 1 * GIB)
# every file and directory a layer unpacks takes an inode: a base image holds hundreds to
# thousands of them, and the runtime adds a few per layer of its own
INODES_FULL = 100
INODES_LOW = (0.05, 10_000)

NAMES = {"docker": "docker", "containerd": "containerd", "podman": "podman", "crio": "CRI-O"}
WHAT_FAILS = {
    "docker": "docker downloads each layer into {path}/tmp and then unpacks it into {path}; "
    "out of room, `docker pull` stops with `write {path}/tmp/GetImageBlob…: no space left on "
    "device` or `failed to register layer: … no space left on device`",
    "containerd": "containerd keeps the compressed layers in its content store under {path} "
    "and unpacks them into snapshots there; out of room, a pull stops with `failed to copy: … "
    "no space left on device` or `failed to extract layer sha256:…: … no space left on device`",
    "podman": "podman unpacks the layers into {path} (the download itself is staged in "
    "/var/tmp); out of room, a pull stops with `writing blob: adding layer with blob …: "
    "ApplyLayer … no space left on device`",
    "crio": "CRI-O unpacks the layers into {path}; out of room, the kubelet reports `Failed to "
    "pull image …: writing blob: adding layer with blob …: … no space left on device`",
}
INODE_STEP = (
    "Out of inodes, the same `no space left on device` appears while `df -h` still shows room "
    "(`df -i {path}` tells): removing images frees their files; ext4 fixes its number of inodes "
    "when the file system is made (`mkfs.ext4 -N`), xfs and btrfs make more as they need them."
)


def remedies(root: DataRoot) -> list[str]:
    """The commands that free room in, or move, one runtime's data root."""
    path = root.path
    look = f"`df -h {path}` and `df -i {path}`"
    if root.runtime == "docker":
        return [
            f"See what takes the room: `docker system df`, {look}.",
            "Free it: `docker system prune` (stopped containers, unused networks, dangling "
            "images, build cache), then `docker image prune -a` to remove every image no "
            "container uses.",
            'Or give docker a larger disk: `"data-root": "/mnt/larger/docker"` in '
            "/etc/docker/daemon.json (or `--data-root` on its command line, never both), then "
            "restart docker; images pulled before stay behind in the old place.",
        ]
    if root.runtime == "containerd":
        return [
            f"See what takes the room: {look}, `ctr -n <namespace> images ls` (`ctr namespaces "
            "ls`; the kubelet's images are in k8s.io).",
            "Free it: `crictl rmi --prune` removes the images no container uses (Kubernetes "
            "nodes); with ctr, `ctr -n <namespace> images rm --sync <ref>` removes an image and "
            "waits for containerd's garbage collector to delete its content and snapshots.",
            "Or move `root` in /etc/containerd/config.toml to a larger disk, then "
            "`sudo systemctl restart containerd`.",
        ]
    if root.runtime == "crio":
        return [
            f"See what takes the room: `crictl imagefsinfo`, {look}.",
            "Free it: `crictl rmi --prune` removes the images no container uses.",
            "Or move `root` of [crio] in /etc/crio/crio.conf (else `graphroot` in "
            "/etc/containers/storage.conf) to a larger disk, then `sudo systemctl restart crio`.",
        ]
    who = " (as the user whose storage it is)" if root.rootless else ""
    return [
        f"See what takes the room: `podman system df`, {look}.",
        f"Free it{who}: `podman system prune` (add `-a` to remove every image no container "
        "uses), or `podman image prune -a`.",
        "Or move `graphroot` in storage.conf to a larger disk (on SELinux hosts label the new "
        "folder as the old one: `semanage fcontext -a -e /var/lib/containers/storage <new>`, "
        "then `restorecon -R -v <new>`).",
    ]


def _under(total: int, bound: tuple[float, int]) -> int:
    """The threshold `bound` sets on a file system of `total` bytes (or inodes)."""
    return int(min(total * bound[0], bound[1]))


def judge(
    root: DataRoot, space: Space, size: ImageSize | None, image: str | None
) -> tuple[list[Issue], dict[str, Any]]:
    """What is wrong with one data root, and what was seen there."""
    from diagnose.dataroots import UNPACK_FACTOR, human_bytes

    name, path = NAMES[root.runtime], root.path
    where = f"{name}'s data root {path} ({root.source})"
    facts: dict[str, Any] = {
        "runtime": root.runtime,
        "path": path,
        "source": root.source,
        "exists": space.exists,
        "measured": space.measured,
        "driver": root.driver or None,
        "rootless": root.rootless,
        "total_bytes": space.total,
        "free_bytes": space.free,
        "available_bytes": space.available,  # what df shows: root may use the reserved rest
        "used_percent": round(space.used_fraction * 100, 1),
        "inodes": space.inodes,
        "free_inodes": space.free_inodes,
        "notes": list(root.notes) + ([space.error] if space.error else []),
    }
    if not space.total:
        return [], facts
    issues: list[Issue] = []
    fails = WHAT_FAILS[root.runtime].format(path=path)
    steps = remedies(root)
    free, total = space.free, space.total
    shown_free = human_bytes(free)
    if size is not None and image:
        certain, planned = size.needs(root)
        facts.update(needs_bytes=certain, plans_bytes=planned)
        what = (
            "the compressed layers and their unpacked files"
            if root.keeps_download
            else "the unpacked layers"
        )
        if free < certain:
            issues.append(
                Issue(
                    Status.FAIL,
                    Code.DISK_SPACE_LOW,
                    ["disk-space"],
                    f"{where} has {shown_free} free; pulling {image} writes at least "
                    f"{human_bytes(certain)} there ({what}): {fails}",
                    steps,
                )
            )
        elif free < planned:
            issues.append(
                Issue(
                    Status.WARN,
                    Code.DISK_SPACE_LOW,
                    ["disk-space"],
                    f"{where} has {shown_free} free; {image} takes {human_bytes(certain)} to "
                    f"{human_bytes(planned)} there once unpacked (compressed layers counted "
                    f"{UNPACK_FACTOR} times over): the pull may run out of room. {fails}",
                    steps,
                )
            )
    usage = f"{shown_free} free of {human_bytes(total)}, {facts['used_percent']:g}% used"
    if not issues and free < _under(total, FULL):
        issues.append(
            Issue(
                Status.FAIL,
                Code.DISK_SPACE_LOW,
                ["disk-space"],
                f"{where} is full ({usage}): {fails}",
                steps,
            )
        )
    elif not issues and free < _under(total, NEARLY_FULL):
        issues.append(
            Issue(
                Status.WARN,
                Code.DISK_SPACE_LOW,
                ["disk-space"],
                f"{where} is nearly full ({usage}; under 5% and under 1 GiB free): the next "
                f"image may not fit. {fails}",
                steps,
            )
        )
    if space.inodes:
        left = f"{space.free_inodes} of {space.inodes} inodes free"
        if space.free_inodes < INODES_FULL:
            issues.append(
                Issue(
                    Status.FAIL,
                    Code.DISK_INODES_LOW,
                    ["disk-space"],
                    f"{where} is out of inodes ({left}, with {shown_free} free): every file "
                    f"a layer unpacks needs one, so {fails}",
                    [INODE_STEP.format(path=path), *steps],
                )
            )
        elif space.free_inodes < _under(space.inodes, INODES_LOW):
            issues.append(
                Issue(
                    Status.WARN,
                    Code.DISK_INODES_LOW,
                    ["disk-space"],
                    f"{where} is nearly out of inodes ({left}): an image of many small files "
                    "may not fit",
                    [INODE_STEP.format(path=path), *steps],
                )
            )
    return issues, facts


class DiskSpaceCheck(Check):
    id = "disk-space"
    title = "Room in the runtimes' data roots"
    order = 270
    depends_on = ("container-runtimes",)
    timeout_s = 10.0
    faq_keys = ("disk-space",)
    codes = (Code.DISK_SPACE_LOW, Code.DISK_INODES_LOW)

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.dataroots import human_bytes, measure

        playing = [r for r in RUNTIMES if ctx.in_play(r)]
        if not playing:
            return skipped("no container runtime on this host (--runtime to name one)")
        size, image, why = self._image(ctx)
        evidence: dict[str, Any] = {"image": image, "roots": []}
        if size is not None:
            from diagnose.dataroots import UNPACK_FACTOR

            evidence.update(
                compressed_bytes=size.compressed,
                layers=len(size.layers),
                unpack_factor=UNPACK_FACTOR,
            )
        else:
            evidence["size_unknown"] = why
        issues: list[Issue] = []
        parts: list[str] = []
        for root in self._roots(ctx, playing):
            space = measure(ctx.options.host_root, root.path, root.rootless)
            found, facts = judge(root, space, size, image)
            evidence["roots"].append(facts)
            issues += found
            part = f"{NAMES[root.runtime]} {root.path}: "
            if not space.total:
                part += f"not measured ({space.error})"
            else:
                part += f"{human_bytes(space.free)} free ({facts['used_percent']:g}% used)"
                if space.available < space.free * 0.99:  # blocks reserved for root
                    part += f" of which {human_bytes(space.available)} outside root's reserve"
                if space.inodes:
                    part += f", {space.free_inodes} inodes free"
            if not space.exists:
                part += f" (not made yet: measured {space.measured})"
            parts.append(part)
        if issues:
            return combine(issues, evidence)
        summary = "; ".join(parts)
        if size is not None and image:
            summary += f"; room for {image} ({human_bytes(size.compressed)} compressed)"
        return passed(summary, **evidence)

    @staticmethod
    def _image(ctx: CheckContext) -> tuple[ImageSize | None, str | None, str]:
        """The image named and what its manifest says about its size, or why not."""
        from diagnose.dataroots import image_size

        reg = ctx.registry
        if reg is None or reg.image is None:
            return None, None, "no image named"
        image = reg.image.normalized
        if ctx.result("platform") is None:
            return None, image, "the platform check did not run (its manifest gives the size)"
        size = image_size(ctx.fact(PLATFORM_MANIFEST))
        return size, image, "" if size else "no image manifest (see the platform check)"

    @staticmethod
    def _roots(ctx: CheckContext, playing: list[str]) -> list[DataRoot]:
        """Each runtime's data root, as it picks it on this host."""
        from diagnose.containers import user_home
        from diagnose.dataroots import containerd_root, containers_root, crio_root, docker_root

        root = ctx.options.host_root
        out: list[DataRoot] = []
        if "docker" in playing:
            ctx.result("docker-daemon")
            daemon = ctx.fact(DAEMON)
            out.append(docker_root(root, daemon.args if daemon else ()))
        if "containerd" in playing:
            out.append(containerd_root(root))
        environ = dict(ctx.environ)
        home = user_home(root, environ, ctx.live_host)
        if "podman" in playing:
            rootless = ctx.live_host and os.geteuid() != 0
            out.append(containers_root(root, home, environ, ctx.live_host, rootless))
        if "crio" in playing:
            out.append(crio_root(root, containers_root(root, home, environ, ctx.live_host, False)))
        return out
