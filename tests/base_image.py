"""A container base image made on this machine, since there is no route to Docker Hub: Debian
(minbase) from Debian's archive with debootstrap, plus Debian's python3 and venv, slimmed the
way Debian's own slim images are (no docs, man pages, locales, iconv modules, apt lists or cached .debs).

The root filesystem is packed into a tarball kept under /var/cache, keyed by a hash of
everything that decides its contents, so that later runs import it in seconds; `docker import`
turns it into an image for the suite's private dockerd.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
CACHE = Path(os.environ.get("REGISTRY_DIAGNOSE_BASE_CACHE", "/var/cache/registry-diagnose"))
SLIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/templates.dat-old",
    "var/log",
    # glibc's iconv character sets: nothing in Python uses them
    f"usr/lib/{os.uname().machine}-linux-gnu/gconv",
)


def mirror() -> str:
    """The Debian mirror apt on this machine uses (deb.debian.org when none is named)."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if path.is_file():
            text = path.read_text()
            for m in re.finditer(
                r"^(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(https?://\S+)", text, re.MULTILINE
            ):
                if "security" not in m.group(1):
                    return m.group(1).rstrip("/")
    return "http://deb.debian.org/debian"


def cache_key() -> str:
    spec = "|".join([SUITE, "minbase", mirror(), *PACKAGES, *SLIM, os.uname().machine])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def debian_base(log: Path | None = None) -> tuple[Path, float]:
    """The base root filesystem as a tarball (made once, then cached), and the seconds it
    took to make now (0 when it came from the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"debian-{SUITE}-python3-{cache_key()}.tar"
    if tarball.is_file():
        return tarball, 0.0
    t0 = time.monotonic()
    root = CACHE / f"rootfs-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    out = log.open("wb") if log else subprocess.DEVNULL
    try:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                mirror(),
            ],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1500,
        )
    finally:
        if log and out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
    for rel in SLIM:
        target = root / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    partial = tarball.with_suffix(".part")
    with tarfile.open(partial, "w") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name)
    partial.replace(tarball)
    shutil.rmtree(root, ignore_errors=True)
    return tarball, time.monotonic() - t0


def trust_layer(directory: Path, base_tag: str) -> Path:
    """A build context that adds this machine's trust to the base: its CA bundle (the system
    store, plus any CA this machine's network needs to reach PyPI) and pip told to use it, so
    that pip inside a build reaches PyPI exactly as pip on this machine does."""
    directory.mkdir(parents=True, exist_ok=True)
    bundle = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    lines = [f"FROM {base_tag}"]
    if bundle.is_file():
        shutil.copy(bundle, directory / "ca-certificates.crt")
        (directory / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        lines += [
            "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
            "COPY pip.conf /etc/pip.conf",
        ]
    (directory / "Dockerfile").write_text("\n".join(lines) + "\n")
    return directory
