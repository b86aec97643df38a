"""What podman, CRI-O, skopeo and buildah checks share, kept light: loading it costs nothing
(containers/image's parsers load only when a check needs them)."""

from __future__ import annotations

from pathlib import Path

from diagnose.context import CheckContext
from diagnose.models import ImageRef

RUNTIMES = ("podman", "crio")
NOT_HERE = "neither podman, CRI-O, skopeo nor buildah is on this host (--runtime podman to check)"


def user_home_of(ctx: CheckContext) -> Path:
    """The home folder whose configuration these clients read (under --host-root)."""
    from diagnose.containers import user_home

    return user_home(ctx.options.host_root, dict(ctx.environ), ctx.live_host)


def names_of(ctx: CheckContext) -> tuple[str, str, ImageRef | None]:
    """(fully qualified reference, repository name host/path, the image) as containers/image
    sees them; without an image, the registry itself."""
    reg = ctx.registry
    assert reg is not None
    image = reg.image
    if image is None:
        return reg.login_server, reg.login_server, None
    name = f"{image.domain}/{image.path.lower()}"
    full = name + (f"@{image.digest}" if image.digest else f":{image.tag or 'latest'}")
    return full, name, image
