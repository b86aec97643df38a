"""Turning what a user typed into a registry the run can reach.

Structural problems (spaces, non-ASCII, a bad port) are bad input and stop the run with exit
code 2; problems docker would trip over later (upper case, an ACR naming rule) are left for the
`login-server` check so that they appear in the report with their remedy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from diagnose.errors import UsageError
from diagnose.models import ImageRef, Registry
from diagnose.reference import DOCKER_HUB_API

MAX_INPUT = 512
ACR_SUFFIXES = {
    "azurecr.io": "AzureCloud",
    "azurecr.cn": "AzureChinaCloud",
    "azurecr.us": "AzureUSGovernment",
}
# Docker Hub's login key is not where its registry API lives.
DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry.hub.docker.com"}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# The distribution reference grammar for a repository path, an optional tag or digest.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?P<repo>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)


class TargetError(UsageError):
    """Bad input: the message is one line, safe to print, and never echoes credentials."""


def valid_repository(name: str) -> bool:
    """A repository path as the distribution reference grammar allows it (no tag)."""
    m = _REFERENCE.match(name)
    return m is not None and m.group("tag") is None and m.group("digest") is None


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X}" if not ch.isprintable() or ch.isspace() else repr(ch)


def acr_suffix(host: str) -> str | None:
    for suffix in ACR_SUFFIXES:
        if host == suffix or host.endswith("." + suffix):
            return suffix
    return None


def parse_registry(text: str, *, insecure: bool = False, short_names: bool = True) -> Registry:
    """Normalise a registry name, URL or image reference; raise TargetError on bad input."""
    notes: list[str] = []
    if not isinstance(text, str) or not text.strip():
        raise TargetError("the registry name is empty")
    if len(text) > MAX_INPUT:
        raise TargetError(f"the registry name is {len(text)} characters long (at most {MAX_INPUT})")
    raw = text.strip()
    if raw != text:
        notes.append("surrounding white space removed")
    for i, ch in enumerate(raw):
        if ord(ch) > 127:
            raise TargetError(
                f"the registry name has a non-ASCII character {_describe(ch)} at position {i + 1}; "
                "registry names are ASCII (use the punycode form of an international name)"
            )
        if ch.isspace() or not ch.isprintable():
            raise TargetError(
                f"the registry name has {_describe(ch)} at position {i + 1}; "
                "a registry name has no spaces or control characters"
            )

    scheme = "https"
    m = _SCHEME.match(raw)
    if m:
        scheme = m.group(1).lower()
        if scheme not in ("http", "https"):
            raise TargetError(f"unsupported scheme {scheme!r}: use https:// or no scheme at all")
        raw = raw[m.end() :]
        notes.append(f"scheme {scheme}:// removed: docker takes the bare host name")
        if scheme == "http" and not insecure:
            notes.append("plain HTTP was asked for but --insecure was not given: HTTPS is checked")
            scheme = "https"
    elif insecure:
        scheme = "https"  # docker tries HTTPS first even for an insecure registry

    hostport, slash, path = raw.partition("/")
    if "@" in hostport:
        hostport = hostport.rpartition("@")[2]
        notes.append("user name and password in the name were removed and not used")
    if not hostport:
        raise TargetError("the registry name has no host")

    host, port = _split_port(hostport)
    host_given = host
    if host.endswith(".") and not host.startswith("["):
        host = host[:-1]
        notes.append("trailing dot removed")
    ip = _ip(host)
    if ip is None:
        _check_hostname(host)

    repository: str | None = None
    path = path.strip("/")
    if slash and path:
        if path in ("v2", "v1") or path.startswith(("v2/", "v1/")):
            notes.append(f"path /{path} removed: the login server is the host alone")
        else:
            ref = _REFERENCE.match(path)
            if ref is None:
                raise TargetError(
                    "the part after the host is not an image reference: repository names are "
                    "lower-case letters, digits and the separators . _ - /"
                )
            repository = ref.group("repo")
            notes.append(
                f"image reference given: login server is the host, repository {repository}"
            )

    lower = host.lower() if ip is None else str(ip)
    if short_names and ip is None and "." not in lower and port is None and lower != "localhost":
        lower = f"{lower}.azurecr.io"
        host_given = f"{host_given}.azurecr.io"
        notes.append(f"short name expanded to the ACR login server {lower}")
    if lower in DOCKER_HUB_ALIASES:
        notes.append(f"{lower} is Docker Hub's login name; its registry API is {DOCKER_HUB_API}")
        lower = DOCKER_HUB_API
    suffix = acr_suffix(lower) if ip is None else None
    return Registry(
        given=text.strip() if "@" not in text else _without_userinfo(text.strip()),
        host=lower,
        port=port,
        scheme=scheme,
        is_acr=suffix is not None,
        cloud=ACR_SUFFIXES.get(suffix) if suffix else None,
        repository=repository,
        notes=tuple(notes),
        host_given=host_given,
    )


def _without_userinfo(text: str) -> str:
    m = _SCHEME.match(text)
    head = m.group(0) if m else ""
    rest = text[len(head) :]
    hostport, slash, path = rest.partition("/")
    return head + hostport.rpartition("@")[2] + slash + path


def _split_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise TargetError("an IPv6 address in the registry name is missing its closing ]")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise TargetError("unexpected text after the IPv6 address")
        port_text = rest[1:] if rest else None
    elif hostport.count(":") > 1:
        raise TargetError(
            "an IPv6 address in a registry name must be written in brackets: [::1]:5000"
        )
    else:
        host, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None
    port: int | None = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise TargetError("the port must be a number from 1 to 65535")
        port = int(port_text)
    return host, port


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        if host.startswith("["):
            raise TargetError("the text in brackets is not an IPv6 address") from None
        return None
    if host.startswith("[") != (addr.version == 6):
        raise TargetError("only IPv6 addresses go in brackets")
    return addr


def _check_hostname(host: str) -> None:
    if len(host) > 253:
        raise TargetError(f"the host name is {len(host)} characters long (at most 253)")
    for label in host.split("."):
        if not label:
            raise TargetError(
                "the host name has an empty label (two dots in a row, or a leading dot)"
            )
        if len(label) > 63:
            raise TargetError(
                f"a label of the host name is {len(label)} characters long (at most 63)"
            )
        if not _LABEL.match(label):
            bad = next((c for c in label if not (c.isalnum() or c == "-")), None)
            what = f"the character {bad!r}" if bad else "a label that starts or ends with '-'"
            raise TargetError(
                f"the host name has {what}: host names use letters, digits, '-' and '.'"
            )


def registry_for_image(ref: ImageRef, *, insecure: bool = False) -> Registry:
    """The registry an image reference pulls from, carrying the image (docker's rules: the
    domain as the reference names it, Docker Hub's API host for docker.io)."""
    from dataclasses import replace

    reg = parse_registry(ref.domain, insecure=insecure, short_names=False)
    notes = [n for n in reg.notes if "short name" not in n]
    if ref.normalized != ref.given:
        notes.append(f"image reference {ref.given} is {ref.normalized} as docker reads it")
    if ref.digest and ref.tag:
        notes.append(f"the digest wins over the tag: docker pulls {ref.digest}, not :{ref.tag}")
    return replace(reg, given=ref.given, repository=ref.path.lower(), image=ref, notes=tuple(notes))


@dataclass(frozen=True)
class Targets:
    """What a run checks: the registries (each maybe carrying an image), where the names came
    from (argument, docker-config, none) and notes for the report."""

    registries: tuple[Registry, ...]
    source: str
    notes: tuple[str, ...] = ()


def image_target(text: str, insecure: bool) -> Registry:
    """A registry carrying the image named by text (docker's reference rules)."""
    from diagnose.reference import ReferenceError, parse_reference
    from diagnose.secrets import shown

    try:
        return registry_for_image(parse_reference(text), insecure=insecure)
    except (ReferenceError, TargetError) as exc:
        raise TargetError(f"image {shown(text)}: {exc}") from None


def _with_image(parsed: list[Registry], image: str, named: bool, insecure: bool) -> list[Registry]:
    """--image: a full reference adds (or fills) its registry; REPO:TAG applies to the
    registries named on the command line, and otherwise is read as docker reads it."""
    from dataclasses import replace

    from diagnose.reference import looks_like_domain

    first = image.strip().split("/", 1)[0]
    full = "/" in image and looks_like_domain(first)
    if full or not named or not parsed:
        target = image_target(image, insecure)
        out = [r for r in parsed if r.login_server != target.login_server or r.image]
        return [*out, target]
    return [
        r
        if r.image
        else replace(
            image_target(f"{r.login_server}/{image.strip()}", insecure),
            notes=r.notes,
            is_acr=r.is_acr,
            cloud=r.cloud,
        )
        for r in parsed
    ]


def resolve_targets(
    names: Sequence[str],
    *,
    docker_config: Path,
    insecure: bool = False,
    repository: str | None = None,
    image: str | None = None,
) -> Targets:
    """The registries a run checks: the names given (registries, URLs or image references),
    else every registry in the docker config at docker_config; TargetError on bad input."""
    from dataclasses import replace

    from diagnose import dockerconfig
    from diagnose.reference import is_image_reference
    from diagnose.secrets import shown

    notes: list[str] = []
    source = "argument"
    parsed: list[Registry] = []
    if names:
        for name in names:
            if is_image_reference(name):
                parsed.append(image_target(name, insecure))
                continue
            try:
                parsed.append(parse_registry(name, insecure=insecure))
            except TargetError as exc:
                raise TargetError(f"registry {shown(name)}: {exc}") from None
    else:
        source = "docker-config"
        try:
            config = dockerconfig.load_config(docker_config / "config.json")
        except dockerconfig.ConfigError as exc:
            raise TargetError(
                f"{exc}; name a registry instead: diagnose check-health <registry>"
            ) from None
        for key in dockerconfig.registry_keys(config or {}):
            try:
                parsed.append(parse_registry(key, insecure=insecure))
            except TargetError as exc:
                notes.append(f"docker config entry {shown(key)} skipped: {exc}")
        if not parsed:
            source = "none"
    if repository is not None:
        parsed = [r if r.image else replace(r, repository=repository) for r in parsed]
    if image:
        parsed = _with_image(parsed, image, bool(names), insecure)
        if source == "none":
            source = "argument"
    unique: dict[str, Registry] = {}
    for reg in parsed:
        held = unique.get(reg.login_server)
        if held is None or (reg.image is not None and held.image is None):
            unique[reg.login_server] = reg
        elif reg.image is not None and held.image is not None and reg.image != held.image:
            notes.append(
                f"one image per registry per run: {reg.image.given} left out "
                f"({held.image.given} is checked)"
            )
    return Targets(tuple(unique.values()), source, tuple(notes))
