"""Every run option, declared once: its flags, type, default, range, help and settings-file key.

The command line's parameters, the settings file's keys and the defaults of `Options` are all
made from this one table, and every value, typed on the command line or read from a file, goes
through the same `convert`: the same bad value gets the same one-line answer from either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from diagnose.choices import FailOn, Need, Runtime
from diagnose.errors import UsageError
from diagnose.secrets import shown

Kind = Literal["text", "number", "int", "flag", "path", "choice", "list", "duration"]


class OptionError(UsageError):
    """A value an option cannot take: one line, naming the option and the value."""


@dataclass(frozen=True)
class Spec:
    """One option. `check` refines a converted value (or raises ValueError with the reason)."""

    name: str  # the parameter name; the file key and the flag are this with dashes
    kind: Kind
    help: str
    metavar: str = ""
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # default: ("--" + key,)
    in_file: bool = True  # whether a settings file may set it
    check: Callable[[Any], Any] | None = None
    unit: str = ""

    @property
    def key(self) -> str:
        return self.name.replace("_", "-")

    @property
    def flag(self) -> str:
        return f"--{self.key}"

    def help_text(self) -> str:
        """The help line, with the default when there is one (as pip's options print it)."""
        if self.default is None or self.kind == "flag":
            return self.help
        if self.kind == "duration":
            value = self.default
            shown_default = f"{value / 60:g}m" if value % 60 == 0 else f"{value:g}s"
            return f"{self.help} (default {shown_default})"
        shown_default = self.default if not isinstance(self.default, float) else f"{self.default:g}"
        return f"{self.help} (default {shown_default}{self.unit and ' ' + self.unit})"

    def convert(self, raw: Any) -> Any:
        """raw (a string from the command line, or a value from TOML) as the run uses it."""
        try:
            value = _CONVERT[self.kind](self, raw)
            if self.check is not None:
                value = self.check(value)
            return value
        except (TypeError, ValueError) as exc:
            if isinstance(exc, OptionError):
                raise
            raise OptionError(f"{self.flag} {_show(raw)}: {exc}") from None


def _show(raw: Any) -> str:
    if isinstance(raw, list | tuple):
        return shown(",".join(str(x) for x in raw))
    return shown(str(raw))


# ----------------------------------------------------------------------------- converters
def _text(spec: Spec, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise TypeError("must be a non-empty string")
    return raw.strip()


def _number(spec: Spec, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise TypeError("must be a number")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a number")
    return _in_range(spec, value)


def _int(spec: Spec, raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise TypeError("must be a whole number")
    text = str(raw).strip()
    if isinstance(raw, str) and not (text.lstrip("-").isascii() and text.lstrip("-").isdigit()):
        raise ValueError("must be a whole number")
    return int(_in_range(spec, int(text)))


def _in_range(spec: Spec, value: float) -> float:
    unit = f" {spec.unit}" if spec.unit else ""
    if spec.low is not None and spec.high is not None and not spec.low <= value <= spec.high:
        raise ValueError(f"must be from {spec.low:g} to {spec.high:g}{unit}")
    if spec.low is not None and value < spec.low:
        raise ValueError(f"must be at least {spec.low:g}{unit}")
    if spec.high is not None and value > spec.high:
        raise ValueError(f"must be at most {spec.high:g}{unit}")
    return value


def _flag(spec: Spec, raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise TypeError("must be true or false")
    return raw


def _path(spec: Spec, raw: Any) -> Path:
    return Path(_text(spec, raw))


def _choice(spec: Spec, raw: Any) -> str:
    if not isinstance(raw, str) or raw.strip().lower() not in spec.choices:
        raise ValueError(f"must be {' or '.join(spec.choices)}")
    return raw.strip().lower()


def _list(spec: Spec, raw: Any) -> list[str]:
    items: list[str] = []
    for part in raw if isinstance(raw, list | tuple) else [raw]:
        if not isinstance(part, str):
            raise TypeError("must be a list of strings")
        items += [p.strip() for p in part.split(",") if p.strip()]
    if spec.choices:
        bad = [i for i in items if i.lower() not in spec.choices]
        if bad:
            raise ValueError(f"each must be one of {', '.join(spec.choices)}")
        items = [i.lower() for i in items]
    return items


def _duration(spec: Spec, raw: Any) -> float:
    """90, 90s, 10m, 1h -> seconds."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise TypeError("must be a duration such as 90s, 10m or 1h")
    text = str(raw).strip().lower()
    unit = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], 0)
    try:
        value = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise ValueError("must be a duration such as 90s, 10m or 1h") from None
    if not (math.isfinite(value) and 1 <= value <= 24 * 3600):
        raise ValueError("must be between 1s and 24h")
    return value


_CONVERT: dict[str, Callable[[Spec, Any], Any]] = {
    "text": _text,
    "number": _number,
    "int": _int,
    "flag": _flag,
    "path": _path,
    "choice": _choice,
    "list": _list,
    "duration": _duration,
}


# ------------------------------------------------------------------------- value checks
def _directory(path: Path) -> Path:
    if not path.is_dir():
        raise ValueError("is not a directory")
    return path


def _file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError("is not a file")
    return path


def _ca_bundle(path: Path) -> Path:
    from diagnose.tlscontext import check_ca_file

    check_ca_file(path)
    return path


def _nameserver(text: str) -> tuple[str, int]:
    from diagnose.resolve import parse_nameserver

    return parse_nameserver(text)


def _platform(text: str) -> str:
    from diagnose.oci import PlatformError, parse_platform

    try:
        return str(parse_platform(text))
    except PlatformError as exc:
        raise ValueError(str(exc)) from None


def _repository(text: str) -> str:
    from diagnose.target import valid_repository

    if not valid_repository(text):
        raise ValueError(
            "repository names are lower-case letters, digits and the separators . _ - /"
        )
    return text


def _runtimes(chosen: list[str]) -> tuple[str, ...]:
    """() for auto (each runtime found on the host); every runtime for `all`."""
    if not chosen or Runtime.auto in chosen:
        return ()
    if Runtime.all in chosen:
        return tuple(r.value for r in Runtime if r not in (Runtime.auto, Runtime.all))
    return tuple(dict.fromkeys(chosen))


def _values(kind: type[FailOn] | type[Need] | type[Runtime]) -> tuple[str, ...]:
    return tuple(k.value for k in kind)


MIB = 1024 * 1024

# The table. Order is the order of --help.
SPECS: tuple[Spec, ...] = (
    Spec("checks", "list", "Only these checks (comma-separated), plus what they need.", "IDS"),
    Spec("skip", "list", "Leave these checks out.", "IDS"),
    Spec("fail_on", "choice", "What exits 1: error, or warn too.", "LEVEL", "error",
         choices=_values(FailOn)),
    Spec("timeout", "number", "Deadline for the whole run.", "SECONDS", 30.0, 1, 3600,
         unit="seconds"),
    Spec("tries", "int", "Attempts for transient errors.", "N", 3, 1, 10),
    Spec("host_root", "path", "Read host files (/etc/...) under DIR.", "DIR", Path("/"),
         check=_directory),
    Spec("docker_config", "path", "Docker config dir (default $DOCKER_CONFIG, ~/.docker).",
         "DIR"),
    Spec("ca_bundle", "path", "Extra CA certificates (PEM) to trust.", "FILE",
         check=_ca_bundle),
    Spec("nameserver", "text", "Resolve every name with this DNS server.", "IP[:PORT]",
         check=_nameserver),
    Spec("insecure", "flag", "Allow plain HTTP or unverified TLS, as docker does.", default=False),
    Spec("repository", "text", "Repository for repository-level checks.", "REPO",
         check=_repository),
    Spec("username", "text", "User to log in as.", "USER", flags=("--username", "-u")),
    Spec("password_stdin", "flag", "Read the password from standard input.", default=False,
         in_file=False),
    Spec("identity_token_file", "path", "`az acr login --expose-token` output to use.", "FILE",
         in_file=False),
    Spec("require", "choice", "What must work: pull, or push too.", "ACTION", "pull",
         choices=_values(Need)),
    Spec("wait_for", "choice", "Wait until this action (pull or push) is granted.", "ACTION",
         choices=_values(Need)),
    Spec("propagation_timeout", "duration", "How long --wait-for waits.", "DURATION", 600.0),
    Spec("docker_host", "text", "Docker daemon socket (unix:///..., tcp://...).", "URL"),
    Spec("throughput", "flag", "Measure pull speed (and internet speed).", default=False),
    Spec("image", "text", "Image to diagnose: a full reference, or REPO:TAG on the named "
         "registries.", "REF"),
    Spec("platform", "text", "Platform to resolve an index for (default: this host's).",
         "OS/ARCH", check=_platform),
    Spec("runtime", "list", "Whose pull to diagnose: docker, podman, crio, containerd, all "
         "(repeatable; default auto: every runtime found on the host).", "RUNTIME",
         choices=_values(Runtime), check=_runtimes),
    Spec("pull_secret", "path", "An image pull secret (Secret manifest, YAML or JSON, or its "
         ".dockerconfigjson): the credential the kubelet would use.", "FILE", check=_file),
    Spec("image_credential_provider_config", "path", "The kubelet's CredentialProviderConfig "
         "(default: looked for on the host).", "FILE", check=_file),
    Spec("image_credential_provider_bin_dir", "path", "Where the kubelet finds credential "
         "provider binaries.", "DIR"),
    Spec("streams", "int", "Parallel pull streams.", "N", 3, 1, 16),
    Spec("throughput_seconds", "number", "Time budget of a speed test.", "SECONDS", 10.0, 1, 300,
         unit="seconds"),
    Spec("slow_below", "number", "Warn under this pull speed.", "MB/S", 2.0, 0, unit="MB/s"),
    Spec("push_test", "flag", "Also measure push (uploads, then deletes).", default=False),
    Spec("push_bytes", "int", "Push test size.", "BYTES", 16 * MIB, 1024, 1024 * MIB),
    Spec("speedtest_mini", "text", "Measure internet speed against this Mini.", "URL"),
    Spec("speedtest_server", "int", "speedtest.net server id to measure against.", "ID", low=1),
)  # fmt: skip
BY_NAME: dict[str, Spec] = {s.name: s for s in SPECS}
# settings-file keys that are not options of every run
FILE_ONLY: dict[str, Spec] = {
    "registries": Spec("registries", "list", "Registries to check.", "REGISTRY"),
    "registry": Spec("registry", "text", "One registry to check.", "REGISTRY"),
    "report": Spec("report", "list", "Reports to write (preflight).", "FORMAT:PATH"),
}
FORBIDDEN_KEYS = frozenset({"password", "token", "identity-token", "aad-token", "secret"})


def default(name: str) -> Any:
    """The default of option name: what `Options` uses when the option is not given."""
    return BY_NAME[name].default


def settle(given: Mapping[str, Any], from_file: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every option's value: the command line's, else the file's, else the default; each one
    converted and checked the same way, whichever source it came from."""
    out: dict[str, Any] = {}
    for spec in SPECS:
        raw = given.get(spec.name)
        if raw in (None, [], ()) or (spec.kind == "flag" and raw is False):
            raw = (from_file or {}).get(spec.name)
        out[spec.name] = spec.default if raw in (None, [], ()) else spec.convert(raw)
    return out


def from_table(path: Path, table: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a file sets, by option name, as given (converted later by `settle`);
    keys the file may not hold are refused here, naming the file."""
    out: dict[str, Any] = {}
    file_keys = {s.key: s for s in SPECS if s.in_file}
    for key, value in table.items():
        if key == "modules":  # probe modules of `serve` and `watch`: diagnose.modules reads them
            continue
        if key in FORBIDDEN_KEYS:
            raise OptionError(
                f"{path}: {key!r} does not belong in a settings file; use "
                "REGISTRY_DIAGNOSE_PASSWORD or --password-stdin"
            )
        if key == "registry":
            out["registries"] = [FILE_ONLY["registry"].convert(value)]
        elif key in FILE_ONLY:
            out[key] = FILE_ONLY[key].convert(value)
        elif key in file_keys:
            out[file_keys[key].name] = value
        else:
            known = sorted([*file_keys, *FILE_ONLY])
            raise OptionError(f"{path}: unknown setting {key!r} (known: {', '.join(known)})")
    return out


def names(only: Iterable[str] | None = None) -> list[Spec]:
    """The specs of the named options (all of them when only is None), in table order."""
    wanted = None if only is None else set(only)
    return [s for s in SPECS if wanted is None or s.name in wanted]
