"""Image references read exactly as docker, podman and containerd read them.

The grammar and the normalisation rules are those of the distribution `reference` package that
every one of those clients vendors: a first component that looks like a host (a dot, a colon,
`localhost`, or upper case) is the registry, anything else lives on Docker Hub (`docker.io`,
`library/` for one-part names), the tag defaults to `latest`, and a digest wins over a tag.

What the clients refuse outright (an upper-case repository, a malformed digest) is not bad input
for this tool: it is the user's problem, reported as a finding with its fix. Only text that is
not a reference at all raises `ReferenceError`.
"""

from __future__ import annotations

import re

from diagnose.models import ImageRef

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = ("index.docker.io", "registry-1.docker.io")
DOCKER_HUB_API = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255
MAX_INPUT = 512

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_IDENTIFIER = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}


def hub_domain(host: str) -> str:
    """docker.io for any of Docker Hub's names, else host: the name configuration files use."""
    return DEFAULT_DOMAIN if host in LEGACY_DOMAINS else host


def api_host(domain: str) -> str:
    """Where the registry API of a reference's domain answers (Docker Hub's is elsewhere)."""
    return DOCKER_HUB_API if hub_domain(domain) == DEFAULT_DOMAIN else domain


class ReferenceError(ValueError):
    """Text that is not an image reference at all; one line, safe to print."""


def looks_like_domain(component: str) -> bool:
    """Whether docker reads the first path component as a registry host."""
    return (
        any(c in component for c in ".:")
        or component == "localhost"
        or component.lower() != component
    )


def split_domain(name: str) -> tuple[str, str]:
    """(domain, remainder) as docker's splitDockerDomain makes them."""
    first, slash, rest = name.partition("/")
    if not slash or not looks_like_domain(first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse_reference(text: str) -> ImageRef:
    """An image reference, normalised as docker normalises it.

    Raises ReferenceError only for text that cannot be a reference; problems docker would report
    (`repository name must be lowercase`, a bad digest) are kept in `problems`.
    """
    if not isinstance(text, str) or not text.strip():
        raise ReferenceError("the image reference is empty")
    if len(text) > MAX_INPUT:
        raise ReferenceError(f"the image reference is {len(text)} characters (at most {MAX_INPUT})")
    given = text.strip()
    for i, ch in enumerate(given):
        if ord(ch) > 127 or ch.isspace() or not ch.isprintable():
            shown = f"U+{ord(ch):04X}" if not ch.isprintable() or ch.isspace() else repr(ch)
            raise ReferenceError(
                f"the image reference has {shown} at position {i + 1}: references are ASCII "
                "with no spaces"
            )
    if _IDENTIFIER.match(given):
        raise ReferenceError(
            "a 64-character hexadecimal string is an image ID, not a reference to pull"
        )
    problems: list[str] = []
    domain, remainder = split_domain(given)
    # the repository path ends where a tag or a digest begins
    path_end = len(remainder)
    for sep in ("@", ":"):
        at = remainder.find(sep)
        if at >= 0:
            path_end = min(path_end, at)
    path = remainder[:path_end]
    rest = remainder[path_end:]
    if path.lower() != path:
        problems.append(f"invalid reference format: repository name ({path}) must be lowercase")
    m = _REFERENCE.match(f"{domain}/{path.lower()}{rest}")
    if m is None:
        raise ReferenceError(
            "invalid reference format: expected [registry[:port]/]repository[:tag][@digest] "
            "with a lower-case repository of letters, digits and . _ - /"
        )
    if len(m.group("name")) > NAME_TOTAL_LENGTH_MAX:
        problems.append(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    tag, digest = m.group("tag"), m.group("digest")
    if digest:
        algorithm, _, hexpart = digest.partition(":")
        want = _DIGEST_HEX.get(algorithm)
        if want is None:
            problems.append(f"unsupported digest algorithm {algorithm}")
        elif len(hexpart) != want:
            problems.append(f"invalid checksum digest length: {algorithm} has {want} hex digits")
        elif hexpart.lower() != hexpart:
            problems.append("invalid checksum digest format: hex digits are lower case")
    return ImageRef(
        given=given,
        domain=domain,
        path=path,
        tag=tag,
        digest=digest,
        problems=tuple(problems),
    )


def is_image_reference(text: str) -> bool:
    """Whether a command-line name is meant as an image rather than a registry.

    A registry is a host (`myregistry.azurecr.io`, `localhost:5000`, an ACR short name); an image
    has a path (`host/repo`), a tag that is not a port (`nginx:1.25`), or a digest.
    """
    t = text.strip()
    if "://" in t:
        return False
    hostish = t.split("/", 1)[0]
    if "@" in hostish and "/" in t:
        # user-info in front of a host (user:pw@host/...): a registry URL without its scheme
        return False
    if re.search(r"@[A-Za-z][A-Za-z0-9+._-]*:[0-9a-fA-F]{32,}$", t):
        return True
    if "@" in hostish:
        return False
    if "/" in t:
        return True
    _, colon, after = t.rpartition(":")
    return bool(colon) and not (after.isascii() and after.isdigit()) and bool(after)
