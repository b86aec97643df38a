"""Facts one check leaves for others, under typed keys.

A check that learns something later checks need (the registry's challenge, a token, the
manifest) puts it under a `Fact[T]` key; a reader asks for the same key and gets a `T` back,
checked by mypy on both sides. Report evidence is output only: it is scrubbed and flattened to
JSON, so no check reads another check's evidence back.

A reader first waits for the producing check (`ctx.result(id)`), then asks `ctx.fact(KEY)`;
a fact is None when its producer did not run, failed before learning it, or was skipped.
Third-party checks may declare keys of their own the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from diagnose.challenge import Challenge
    from diagnose.secrets import Secret
    from diagnose.tokens import Grant

T = TypeVar("T")


class Fact(Generic[T]):
    """A typed key (in the spirit of pytest's StashKey): its identity is the object itself,
    its name is for messages and debugging."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Fact({self.name!r})"


@dataclass(frozen=True)
class ApiAnswer:
    """What GET /v2/ answered, as the api check saw it."""

    status: int
    final_url: str
    challenge: Challenge | None = None
    date: str | None = None
    received_at: float = 0.0


@dataclass(frozen=True)
class DaemonInfo:
    """The docker daemon as its engine API and process table describe it."""

    present: bool | None
    version: str | None = None
    debug: bool | None = None
    registry_config: dict[str, Any] = field(default_factory=dict)
    proxies: dict[str, str] = field(default_factory=dict)  # HTTP_PROXY... from /info
    args: tuple[str, ...] = ()  # the first dockerd's command line arguments
    os_type: str | None = None  # "linux" or "windows" (/info OSType): how it treats foreign layers


@dataclass(frozen=True)
class ProxyTls:
    """The registry's certificate as seen through the environment's proxy (proxy check)."""

    proxy: str  # host:port, never user-info
    source: str  # e.g. "environment HTTPS_PROXY"
    issuer: str  # who signed the certificate the tunnel handed over
    trusted: bool  # by this run's trust store (system store and --ca-bundle)
    reissued: bool | None  # signed by someone else than the registry's own (None: not compared)


# the scheme the registry speaks ("https", or "http" for an insecure registry): tls
SCHEME: Fact[str] = Fact("scheme")
# GET /v2/: api
API_ANSWER: Fact[ApiAnswer] = Fact("api-answer")
# the challenge the token flow follows: auth-challenge
CHALLENGE: Fact[Challenge] = Fact("challenge")
# what the credential was exchanged for: refresh-token
GRANT: Fact[Grant] = Fact("grant")
# the access token for the run's scope: access-token (renewed by scope while it waits)
ACCESS_TOKEN: Fact[Secret] = Fact("access-token")
# the repository's tags: authorized-request
TAGS: Fact[list[str]] = Fact("tags")
# the manifest the reference names (maybe an index) and its digest: manifest
IMAGE_MANIFEST: Fact[dict[str, Any]] = Fact("image-manifest")
IMAGE_MANIFEST_DIGEST: Fact[str] = Fact("image-manifest-digest")
# the image manifest for the chosen platform: platform
PLATFORM_MANIFEST: Fact[dict[str, Any]] = Fact("platform-manifest")
# the docker daemon: docker-daemon (host scope)
DAEMON: Fact[DaemonInfo] = Fact("daemon")
# the runtimes whose pulls are diagnosed: container-runtimes (host scope)
ACTIVE_RUNTIMES: Fact[tuple[str, ...]] = Fact("active-runtimes")
# TLS through the environment's proxy: proxy
PROXY_TLS: Fact[ProxyTls] = Fact("proxy-tls")
# the internet download speed in Mbit/s: internet-speed (host scope)
INTERNET_MBPS: Fact[float] = Fact("internet-mbps")
