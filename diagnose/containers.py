"""The configuration that decides a pull on hosts where dockerd does not pull: podman, CRI-O,
skopeo and buildah (containers/image: registries.conf, policy.json, auth.json) and containerd
(config.toml, certs.d/<host>/hosts.toml).

Pure readers, read-only: every function takes the host root and returns what it found and what
was wrong with it, never raising on bad input, so each can be fuzzed. The matching rules are the
clients' own: the longest `[[registry]]` prefix wins, a policy scope is looked up from the most
specific, containerd tries the hosts of hosts.toml in file order and the server last.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diagnose.dockerhost import json_object, read_text
from diagnose.reference import api_host, hub_domain

SYSTEM_REGISTRIES_CONF = "etc/containers/registries.conf"
SYSTEM_REGISTRIES_D = "etc/containers/registries.conf.d"
SYSTEM_POLICY = "etc/containers/policy.json"
SYSTEM_LOOKASIDE_D = "etc/containers/registries.d"
DEFAULT_LOOKASIDE = "var/lib/containers/sigstore"
CONTAINERD_CONFIG = "etc/containerd/config.toml"
CONTAINERD_CERTS_D = "etc/containerd/certs.d"
MAX_DROPINS = 200


def _toml(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(document, None), (None, "line L column C: why") or (None, None) when absent."""
    text = read_text(path)
    if text is None:
        return None, None
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = f"line {m.group(1)} column {m.group(2)}: " if m else ""
        return None, where + re.sub(r"\s*\(at line.*\)$", "", msg)
    except (RecursionError, ValueError) as exc:
        return None, f"cannot be read: {type(exc).__name__}"


def line_of(path: Path, needle: str) -> int | None:
    """The first line of a file that holds needle (the key or value a finding points at)."""
    text = read_text(path)
    if text is None or not needle:
        return None
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    return None


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _bool(v: Any) -> bool:
    return v is True


# ------------------------------------------------------------------ registries.conf (v2)
@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"  # all | digest-only | tag-only


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()
    source: str = ""

    @property
    def is_wildcard(self) -> bool:
        return self.prefix.startswith("*.")


@dataclass
class RegistriesConf:
    files: list[str] = field(default_factory=list)
    registries: list[RegistryEntry] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    search_source: str = ""
    short_name_mode: str = ""
    short_name_source: str = ""
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (value, file)
    errors: list[str] = field(default_factory=list)
    v1: bool = False

    @property
    def exists(self) -> bool:
        return bool(self.files)


def is_file(path: Path) -> bool:
    """Path.is_file as Python 3.12 has it: a path this user may not look at (the host's /root
    seen by a non-root container) is not there, rather than a PermissionError."""
    try:
        return path.is_file()
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    """Path.is_dir, with the same rule."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _dropins(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.glob("*.conf") if p.is_file())[:MAX_DROPINS]
    except OSError:
        return []


def user_home(root: Path, environ: dict[str, str] | None, live: bool) -> Path:
    """The home of the user the clients run as: $HOME on this machine, /root under a host root."""
    if live and environ and environ.get("HOME"):
        return Path(environ["HOME"])
    return root / "root"


def registries_conf_files(root: Path, home: Path) -> list[Path]:
    """The files in the order containers/image reads them: the user's registries.conf instead of
    the system one when it exists, then the drop-ins of the user's registries.conf.d when that
    folder exists, else of the system one."""
    user = home / ".config/containers/registries.conf"
    main = user if is_file(user) else root / SYSTEM_REGISTRIES_CONF
    out = [main] if is_file(main) else []
    user_d = home / ".config/containers/registries.conf.d"
    out += _dropins(user_d if is_dir(user_d) else root / SYSTEM_REGISTRIES_D)
    return out


def _mirrors(raw: Any) -> tuple[Mirror, ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for m in raw:
        if isinstance(m, dict) and _str(m.get("location")):
            out.append(
                Mirror(
                    _str(m["location"]),
                    _bool(m.get("insecure")),
                    _str(m.get("pull-from-mirror")) or "all",
                )
            )
    return tuple(out)


def load_registries_conf(root: Path, home: Path) -> RegistriesConf:
    """registries.conf with its drop-ins merged as containers/image merges them: an entry with
    the prefix of an earlier one replaces it, the search list and the short-name mode are
    replaced when a later file sets them, aliases are merged (a later file wins)."""
    conf = RegistriesConf()
    by_prefix: dict[str, RegistryEntry] = {}
    for path in registries_conf_files(root, home):
        doc, err = _toml(path)
        conf.files.append(str(path))
        if err:
            conf.errors.append(f"{path} {err}")
            continue
        if doc is None:
            continue
        if "registries" in doc and isinstance(doc["registries"], dict):
            conf.v1 = True
            conf.errors.append(
                f"{path} uses the version 1 format ([registries.search] …): podman 4 and later "
                "refuse it; rewrite it as version 2 ([[registry]] tables)"
            )
        search = doc.get("unqualified-search-registries")
        if isinstance(search, list):
            conf.search = [s for s in search if isinstance(s, str)]
            conf.search_source = str(path)
        mode = doc.get("short-name-mode")
        if isinstance(mode, str) and mode:
            conf.short_name_mode = mode
            conf.short_name_source = str(path)
        aliases = doc.get("aliases")
        if isinstance(aliases, dict):
            for k, v in aliases.items():
                if isinstance(v, str):
                    conf.aliases[str(k)] = (v, str(path))
        for raw in doc.get("registry") or []:
            if not isinstance(raw, dict):
                continue
            location = _str(raw.get("location")).rstrip("/")
            prefix = _str(raw.get("prefix")).rstrip("/") or location
            if not prefix:
                conf.errors.append(f"{path}: a [[registry]] with neither prefix nor location")
                continue
            by_prefix[prefix] = RegistryEntry(
                prefix=prefix,
                location=location,
                insecure=_bool(raw.get("insecure")),
                blocked=_bool(raw.get("blocked")),
                mirror_by_digest_only=_bool(raw.get("mirror-by-digest-only")),
                mirrors=_mirrors(raw.get("mirror")),
                source=str(path),
            )
    conf.registries = list(by_prefix.values())
    # aliases podman recorded after a prompt: used when no configuration file has one
    for cache in (home / ".cache/containers", root / "var/cache/containers"):
        doc, _ = _toml(cache / "short-name-aliases.conf")
        aliases = doc.get("aliases") if doc else None
        if isinstance(aliases, dict):
            for k, v in aliases.items():
                if isinstance(v, str):
                    conf.aliases.setdefault(str(k), (v, str(cache / "short-name-aliases.conf")))
            break
    return conf


def _prefix_match(ref: str, prefix: str) -> int:
    """How many characters of ref the prefix covers (-1: it does not apply), as
    containers/image's refMatchingPrefix measures it."""
    if prefix.startswith("*."):
        host = ref.split("/", 1)[0]
        return len(prefix) if host.endswith(prefix[1:]) else -1
    if ref == prefix:
        return len(prefix)
    if len(ref) > len(prefix) and ref.startswith(prefix) and ref[len(prefix)] in ":/@":
        return len(prefix)
    return -1


def find_registry(conf: RegistriesConf, ref: str) -> RegistryEntry | None:
    """The [[registry]] that applies to a fully qualified reference: the longest prefix."""
    best, size = None, -1
    for entry in conf.registries:
        n = _prefix_match(ref, entry.prefix)
        if n > size:
            best, size = entry, n
    return best


@dataclass(frozen=True)
class PullSource:
    """One place the clients try, in order: a mirror or the primary location."""

    reference: str
    endpoint: str  # host[:port][/path]
    insecure: bool
    mirror: bool


def pull_sources(entry: RegistryEntry | None, ref: str, by_digest: bool) -> list[PullSource]:
    """Where containers/image looks for ref, in order: the mirrors that may serve it, then the
    primary location (the prefix rewritten to `location`)."""
    if entry is None:
        return [PullSource(ref, ref.split("/", 1)[0], False, False)]
    rest = ref[len(entry.prefix) :] if not entry.is_wildcard else ref[len(ref.split("/", 1)[0]) :]
    primary = (entry.location or ref.split("/", 1)[0]) if not entry.is_wildcard else ""
    out = []
    for m in entry.mirrors:
        mode = "digest-only" if entry.mirror_by_digest_only else m.pull_from_mirror
        if (mode == "digest-only" and not by_digest) or (mode == "tag-only" and by_digest):
            continue
        out.append(PullSource(m.location + rest, m.location, m.insecure, True))
    loc = primary or ref.split("/", 1)[0]
    out.append(PullSource(loc + rest, loc, entry.insecure, False))
    return out


# --------------------------------------------------------------------------- policy.json
@dataclass
class Policy:
    path: str = ""
    exists: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def load_policy(root: Path, home: Path) -> Policy:
    """The user's policy.json when it exists, else the system one (as podman chooses)."""
    user = home / ".config/containers/policy.json"
    return load_policy_file(user if is_file(user) else root / SYSTEM_POLICY)


def load_policy_file(path: Path) -> Policy:
    out = Policy(str(path))
    text = read_text(path)
    if text is None:
        return out
    out.exists = True
    data, out.error = json_object(text)
    if out.error:
        return out
    if not isinstance(data.get("default"), list) or not data["default"]:
        out.error = 'has no "default" requirement list: the clients refuse the whole file'
    out.data = data
    return out


def policy_scopes(ref_name: str) -> Iterator[str]:
    """The docker-transport scopes for a repository (host[:port]/path), most specific first:
    the repository, each parent namespace, the host, then wildcards on the host's domains."""
    parts = ref_name.split("/")
    for n in range(len(parts), 0, -1):
        yield "/".join(parts[:n])
    host = parts[0].split(":")[0]
    labels = host.split(".")
    for n in range(1, len(labels)):
        yield "*." + ".".join(labels[n:])


@dataclass(frozen=True)
class Requirement:
    scope: str  # "" for the transport default, "default" for the global default
    requirements: tuple[dict[str, Any], ...]


def requirement_for(policy: Policy, ref_name: str, ref_full: str = "") -> Requirement:
    """The requirement list that applies to a reference (transport `docker`)."""
    transports = policy.data.get("transports")
    docker = transports.get("docker") if isinstance(transports, dict) else None
    if isinstance(docker, dict):
        for scope in ([ref_full] if ref_full else []) + list(policy_scopes(ref_name)):
            reqs = docker.get(scope)
            if isinstance(reqs, list):
                return Requirement(scope, tuple(r for r in reqs if isinstance(r, dict)))
        if isinstance(docker.get(""), list):
            return Requirement("", tuple(r for r in docker[""] if isinstance(r, dict)))
    default = policy.data.get("default")
    reqs = tuple(r for r in default if isinstance(r, dict)) if isinstance(default, list) else ()
    return Requirement("default", reqs)


def lookaside_for(root: Path, home: Path, ref_name: str) -> tuple[str | None, bool, str]:
    """(lookaside URL, use-sigstore-attachments, the file that said so) for a repository, from
    registries.d: the most specific `docker:` key, else `default-docker`. The user's folder,
    when it exists, is read instead of the system one. An unreadable file counts as absent."""
    from diagnose.yamlish import YamlError, loads

    best: tuple[int, str | None, bool, str] = (-1, None, False, "")
    default: tuple[str | None, bool, str] = (None, False, "")
    user = home / ".config/containers/registries.d"
    folder = user if is_dir(user) else root / SYSTEM_LOOKASIDE_D
    try:
        files = sorted(folder.glob("*.yaml"))[:MAX_DROPINS] if folder.is_dir() else []
    except OSError:
        files = []

    def facts(section: Any) -> tuple[str | None, bool]:
        if not isinstance(section, dict):
            return None, False
        look = section.get("lookaside") or section.get("sigstore")
        return (look if isinstance(look, str) else None), section.get(
            "use-sigstore-attachments"
        ) is True

    for f in files:
        try:
            doc = loads(read_text(f) or "")
        except YamlError:
            continue
        if not isinstance(doc, dict):
            continue
        if "default-docker" in doc:
            default = (*facts(doc["default-docker"]), str(f))
        docker = doc.get("docker")
        if isinstance(docker, dict):
            for key, section in docker.items():
                n = _prefix_match(ref_name, str(key))
                if n > best[0]:
                    best = (n, *facts(section), str(f))
    if best[0] >= 0:
        return best[1], best[2], best[3]
    return default


# ------------------------------------------------------------------------------ CRI-O
@dataclass
class CrioConf:
    files: list[str] = field(default_factory=list)
    signature_policy: str | None = None
    global_auth_file: str | None = None
    insecure_registries: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_crio_conf(root: Path) -> CrioConf:
    """CRI-O's [crio.image] settings from crio.conf and crio.conf.d/*.conf (in name order, a
    later file wins): the policy file and auth file it uses instead of the shared ones."""
    out = CrioConf()
    paths = [root / "etc/crio/crio.conf", *_dropins(root / "etc/crio/crio.conf.d")]
    for path in paths:
        doc, err = _toml(path)
        if err:
            out.files.append(str(path))
            out.errors.append(f"{path} {err}")
            continue
        if doc is None:
            continue
        out.files.append(str(path))
        crio = doc.get("crio")
        image = crio.get("image") if isinstance(crio, dict) else None
        if not isinstance(image, dict):
            continue
        if isinstance(image.get("signature_policy"), str) and image["signature_policy"]:
            out.signature_policy = image["signature_policy"]
        if isinstance(image.get("global_auth_file"), str) and image["global_auth_file"]:
            out.global_auth_file = image["global_auth_file"]
        if isinstance(image.get("insecure_registries"), list):
            out.insecure_registries = [
                x for x in image["insecure_registries"] if isinstance(x, str)
            ]
    return out


# ------------------------------------------------------------------------ credentials
def podman_auth_files(home: Path, environ: dict[str, str], root: Path, live: bool) -> list[Path]:
    """The files podman, skopeo and CRI-O read credentials from, in order."""
    out: list[Path] = []
    if live and environ.get("REGISTRY_AUTH_FILE"):
        out.append(Path(environ["REGISTRY_AUTH_FILE"]))
    runtime = environ.get("XDG_RUNTIME_DIR") if live else None
    out.append(
        Path(runtime) / "containers/auth.json" if runtime else root / "run/containers/0/auth.json"
    )
    out.append(home / ".config/containers/auth.json")
    docker = (
        Path(environ["DOCKER_CONFIG"])
        if live and environ.get("DOCKER_CONFIG")
        else home / ".docker"
    )
    out.append(docker / "config.json")
    out.append(home / ".dockercfg")
    return out


def auth_keys_for(ref_name: str) -> list[str]:
    """The auth.json keys that apply to a repository, most specific first (containers/image
    looks up host/ns/repo, then each parent, then the host)."""
    parts = ref_name.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def normalize_auth_key(key: str) -> str:
    """An auths key as containers/image reads it: scheme and /v1/ or /v2/ dropped."""
    k = re.sub(r"^https?://", "", key.strip())
    k = re.sub(r"/v[12]/?$", "", k).rstrip("/")
    host, slash, rest = k.partition("/")
    return hub_domain(host) + slash + rest


# ----------------------------------------------------------------------------- containerd
@dataclass
class ContainerdConfig:
    path: str = ""
    exists: bool = False
    version: int = 1
    error: str | None = None
    config_path: str | None = None  # the CRI registry config_path
    mirrors: dict[str, list[str]] = field(default_factory=dict)  # legacy registry.mirrors
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # legacy registry.configs


def load_containerd_config(root: Path) -> ContainerdConfig:
    path = root / CONTAINERD_CONFIG
    out = ContainerdConfig(str(path))
    doc, err = _toml(path)
    if err:
        out.exists, out.error = True, err
        return out
    if doc is None:
        return out
    out.exists = True
    version = doc.get("version", 1)
    out.version = version if isinstance(version, int) else 1
    plugins = doc.get("plugins") if isinstance(doc.get("plugins"), dict) else {}
    assert isinstance(plugins, dict)
    for name in ("io.containerd.cri.v1.images", "io.containerd.grpc.v1.cri", "cri"):
        cri = plugins.get(name)
        if not isinstance(cri, dict):
            continue
        reg = cri.get("registry")
        if not isinstance(reg, dict):
            continue
        if isinstance(reg.get("config_path"), str):
            out.config_path = reg["config_path"]
        mirrors = reg.get("mirrors")
        if isinstance(mirrors, dict):
            for host, m in mirrors.items():
                if isinstance(m, dict) and isinstance(m.get("endpoint"), list):
                    out.mirrors[str(host)] = [e for e in m["endpoint"] if isinstance(e, str)]
        configs = reg.get("configs")
        if isinstance(configs, dict):
            out.configs = {str(k): v for k, v in configs.items() if isinstance(v, dict)}
    return out


@dataclass(frozen=True)
class HostEntry:
    """One place containerd may send a request for an image, in the order it tries them."""

    url: str
    capabilities: tuple[str, ...] = ("pull", "resolve", "push")
    ca: tuple[str, ...] = ()
    client: tuple[str, ...] = ()
    skip_verify: bool = False
    override_path: bool = False
    server: bool = False  # the `server` line (or the default), tried last


@dataclass
class HostsToml:
    directory: str
    path: str = ""
    exists: bool = False
    error: str | None = None
    hosts: list[HostEntry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _strings(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list):
        return tuple(
            x if isinstance(x, str) else str(x[0]) for x in v if isinstance(x, str | list) and x
        )
    return ()


def hosts_dir_name(host: str, port: int | None) -> str:
    """The certs.d folder containerd looks in for a registry: host:port, or host alone."""
    return f"{host}:{port}" if port else host


def default_server(host: str, port: int | None) -> str:
    """The server containerd uses with no `server` line: Docker Hub's API host for docker.io,
    plain HTTP for a loopback registry (containerd's own default), else HTTPS."""
    name = api_host(host)
    loopback = host == "localhost" or host.startswith("127.") or host in ("::1", "[::1]")
    return ("http://" if loopback else "https://") + name + (f":{port}" if port else "")


def load_hosts_toml(directory: Path, host: str, port: int | None, root: Path) -> HostsToml:
    """certs.d/<host[:port]>/hosts.toml (or `_default`), with relative `ca` / `client` paths
    made absolute against that folder, as containerd does (host paths: not under root)."""
    name = hosts_dir_name(host, port)
    folder = directory / name
    if not is_file(folder / "hosts.toml") and is_file(directory / "_default/hosts.toml"):
        folder = directory / "_default"
    out = HostsToml(str(folder), str(folder / "hosts.toml"))
    doc, err = _toml(folder / "hosts.toml")
    server_url = default_server(host, port)
    if err:
        out.exists, out.error = True, err
        return out
    if doc is not None:
        out.exists = True
        if isinstance(doc.get("server"), str) and doc["server"]:
            server_url = doc["server"]

        def absolute(p: str) -> str:
            if p.startswith("/"):
                return p
            try:
                return "/" + str((folder / p).relative_to(root))
            except ValueError:
                return str(folder / p)

        def entry(url: str, raw: dict[str, Any], server: bool) -> HostEntry:
            caps = raw.get("capabilities")
            ca = tuple(absolute(p) for p in _strings(raw.get("ca")))
            client = tuple(absolute(p) for p in _strings(raw.get("client")))
            return HostEntry(
                url=url.rstrip("/"),
                capabilities=tuple(c for c in caps if isinstance(c, str))
                if isinstance(caps, list)
                else ("pull", "resolve", "push"),
                ca=ca,
                client=client,
                skip_verify=_bool(raw.get("skip_verify")),
                override_path=_bool(raw.get("override_path")),
                server=server,
            )

        hosts = doc.get("host")
        if isinstance(hosts, dict):
            for url, raw in hosts.items():
                if isinstance(raw, dict):
                    out.hosts.append(entry(str(url), raw, False))
        out.hosts.append(entry(server_url, doc, True))
        return out
    out.hosts.append(HostEntry(server_url, server=True))
    return out


def hosts_directories(root: Path, cfg: ContainerdConfig) -> list[Path]:
    """Where containerd looks for certs.d folders: config_path (colon-separated), else
    /etc/containerd/certs.d (the path ctr and most installations use)."""
    raw = cfg.config_path or "/" + CONTAINERD_CERTS_D
    out = []
    for part in raw.split(":"):
        if part.strip():
            p = Path(part.strip())
            out.append(root / p.relative_to("/") if p.is_absolute() else root / p)
    return out


def v2_url(entry: HostEntry) -> str:
    """The /v2/ ping URL containerd would use for a host entry."""
    if entry.override_path:
        return entry.url + "/"
    base = entry.url
    if not re.match(r"^[a-z]+://", base):
        base = "https://" + base
    path_start = base.find("/", base.find("://") + 3)
    path = base[path_start:] if path_start >= 0 else ""
    if not path.endswith("/v2"):
        base += "/v2"
    return base + "/"
