"""Certificates and trust pools as Go's crypto/x509 holds them: a parent is found by the raw
bytes of its subject, any certificate of a pool is a trust anchor, and the system pool is read
from the files Go reads on Linux. Parsing is left to `cryptography`, lazily: most certificates
of a system pool are never looked at beyond their subject."""

from __future__ import annotations

import binascii
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

# extensions Go understands (a critical one it does not understand refuses the certificate)
HANDLED = {
    "2.5.29.14",
    "2.5.29.15",
    "2.5.29.17",
    "2.5.29.19",
    "2.5.29.30",
    "2.5.29.31",
    "2.5.29.32",
    "2.5.29.33",
    "2.5.29.35",
    "2.5.29.36",
    "2.5.29.37",
    "2.5.29.54",
    "1.3.6.1.5.5.7.1.1",
}
# Go's system roots on Linux (crypto/x509/root_linux.go): the first bundle found, then every
# file of the directories; SSL_CERT_FILE and SSL_CERT_DIR replace them
CERT_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
CERT_DIRS = ("/etc/ssl/certs", "/etc/pki/tls/certs")
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----", re.S)


# ------------------------------------------------------------------------------------- DER
def _tlv(buf: bytes, i: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at i."""
    tag, size = buf[i], buf[i + 1]
    start = i + 2
    if size & 0x80:
        n = size & 0x7F
        size = int.from_bytes(buf[start : start + n], "big")
        start += n
    end = start + size
    if end > len(buf):
        raise ValueError("truncated DER")
    return tag, start, end


def raw_names(der: bytes) -> tuple[bytes, bytes]:
    """The issuer and subject exactly as encoded: Go matches a parent by these bytes."""
    try:
        _, cert, _ = _tlv(der, 0)
        _, i, _ = _tlv(der, cert)
        tag, _, end = _tlv(der, i)
        if tag == 0xA0:  # version
            _, _, end = _tlv(der, end)
        _, _, end = _tlv(der, end)  # signature algorithm
        _, _, issuer_end = _tlv(der, end)
        issuer = der[end:issuer_end]
        _, _, validity_end = _tlv(der, issuer_end)
        _, _, subject_end = _tlv(der, validity_end)
        return issuer, der[validity_end:subject_end]
    except IndexError:
        raise ValueError("not a DER certificate") from None


def pem_certificates(data: bytes) -> list[bytes]:
    """The DER of every CERTIFICATE block, as Go's AppendCertsFromPEM finds them."""
    out = []
    for m in PEM.finditer(data):
        try:
            der = binascii.a2b_base64(m.group(1))
            raw_names(der)
        except (binascii.Error, ValueError):
            continue
        out.append(der)
    return out


# --------------------------------------------------------------------------- certificate
class CertError(ValueError):
    """A certificate Go would not parse."""


class GoCert:
    """One certificate and the facts Go's verification reads from it (parsed when needed)."""

    def __init__(self, der: bytes) -> None:
        self.der = der
        self.raw_issuer, self.raw_subject = raw_names(der)

    @cached_property
    def x(self) -> x509.Certificate:
        from cryptography import x509

        try:
            return x509.load_der_x509_certificate(self.der)
        except ValueError as exc:
            raise CertError(f"x509: malformed certificate ({exc})") from None

    @cached_property
    def ext(self) -> dict[str, Any]:
        """Extensions by dotted OID: (critical, value)."""
        try:
            return {e.oid.dotted_string: (e.critical, e.value) for e in self.x.extensions}
        except ValueError as exc:
            raise CertError(f"x509: malformed extension ({exc})") from None

    def _value(self, oid: str) -> Any:
        got = self.ext.get(oid)
        return got[1] if got else None

    @property
    def self_issued(self) -> bool:
        return self.raw_issuer == self.raw_subject

    @cached_property
    def common_name(self) -> str:
        from cryptography.x509.oid import NameOID

        names = self.x.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[-1].value) if names else ""

    @cached_property
    def label(self) -> str:
        """How Go names a candidate authority in its hint: CN, else O, else the serial."""
        from cryptography.x509.oid import NameOID

        if self.common_name:
            return self.common_name
        org = self.x.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(org[0].value) if org else f"serial:{self.x.serial_number}"

    @cached_property
    def sans(self) -> tuple[list[str], list[Any]]:
        from cryptography import x509

        san = self._value("2.5.29.17")
        if san is None:
            return [], []
        return san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)

    @property
    def has_san(self) -> bool:
        return "2.5.29.17" in self.ext

    @cached_property
    def basic(self) -> tuple[bool, bool, int]:
        """(present, is a CA, max path length; -1 for none)."""
        bc = self._value("2.5.29.19")
        if bc is None:
            return False, False, -1
        return True, bool(bc.ca), -1 if bc.path_length is None else int(bc.path_length)

    @cached_property
    def eku(self) -> list[str] | None:
        value = self._value("2.5.29.37")
        return None if value is None else [o.dotted_string for o in value]

    @cached_property
    def ski(self) -> bytes:
        v = self._value("2.5.29.14")
        return bytes(v.digest) if v is not None else b""

    @cached_property
    def aki(self) -> bytes:
        v = self._value("2.5.29.35")
        return bytes(v.key_identifier or b"") if v is not None else b""

    @cached_property
    def ca_issuers(self) -> list[str]:
        from cryptography.x509.oid import AuthorityInformationAccessOID

        v = self._value("1.3.6.1.5.5.7.1.1")
        if v is None:
            return []
        return [
            str(d.access_location.value)
            for d in v
            if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        ]

    @cached_property
    def unhandled_critical(self) -> bool:
        from cryptography import x509

        for oid, (critical, value) in self.ext.items():
            if not critical:
                continue
            if oid not in HANDLED:
                return True
            if oid == "2.5.29.17" and not any(
                isinstance(
                    n,
                    x509.DNSName
                    | x509.IPAddress
                    | x509.RFC822Name
                    | x509.UniformResourceIdentifier,
                )
                for n in value
            ):
                return True
            if oid == "2.5.29.30" and any(
                not isinstance(
                    n,
                    x509.DNSName
                    | x509.IPAddress
                    | x509.RFC822Name
                    | x509.UniformResourceIdentifier,
                )
                for n in (*(value.permitted_subtrees or ()), *(value.excluded_subtrees or ()))
            ):
                return True
        return False

    @cached_property
    def rsa_bits(self) -> int | None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = self.x.public_key()
        return key.key_size if isinstance(key, rsa.RSAPublicKey) else None

    @cached_property
    def key_der(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.x.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def describe(self) -> dict[str, Any]:
        """Subject, issuer and key identifiers, for evidence."""
        return {
            "subject": self.x.subject.rfc4514_string(),
            "issuer": self.x.issuer.rfc4514_string(),
            "subject_key_id": hexid(self.ski) or None,
            "authority_key_id": hexid(self.aki) or None,
        }


def hexid(b: bytes) -> str:
    return ":".join(f"{c:02X}" for c in b)


# ----------------------------------------------------------------------------------- pools
class Pool:
    """A set of trust anchors, as a Go CertPool: any certificate in it ends a chain."""

    def __init__(self, ders: Iterable[bytes] = ()) -> None:
        self.by_subject: dict[bytes, list[GoCert]] = {}
        self.digests: set[bytes] = set()
        for der in ders:
            self.add(der)

    def add(self, der: bytes) -> None:
        if der in self.digests:
            return
        try:
            cert = GoCert(der)
        except ValueError:
            return
        self.digests.add(der)
        self.by_subject.setdefault(cert.raw_subject, []).append(cert)

    def __len__(self) -> int:
        return len(self.digests)

    def contains(self, cert: GoCert) -> bool:
        return cert.der in self.digests

    def parents(self, cert: GoCert) -> list[GoCert]:
        """Go's findPotentialParents: same raw subject; matching key ids first."""
        matching, one, mismatch = [], [], []
        for c in self.by_subject.get(cert.raw_issuer, ()):
            try:
                ski, aki = c.ski, cert.aki
            except CertError:
                continue
            if ski == aki:
                matching.append(c)
            elif bool(ski) != bool(aki):
                one.append(c)
            else:
                mismatch.append(c)
        return matching + one + mismatch

    def union(self, other: Pool) -> Pool:
        out = Pool()
        for pool in (self, other):
            for certs in pool.by_subject.values():
                for c in certs:
                    if c.der not in out.digests:
                        out.digests.add(c.der)
                        out.by_subject.setdefault(c.raw_subject, []).append(c)
        return out


class CAFileError(OSError):
    """A CA file a client is told to read that cannot be read or holds no certificate."""

    def __init__(self, path: str | Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path, self.why = str(path), why


_FILE_POOLS: dict[tuple[Any, ...], Pool] = {}


def pool_from_files(paths: Iterable[str | Path], *, strict: bool = False) -> Pool:
    """The certificates of PEM files. docker and containers/image skip a bad file; containerd
    (strict) refuses to pull ("unable to load CA cert"). Kept for the process while the files
    do not change (a probe reads the same --ca-bundle every time)."""
    names = [str(p) for p in paths]
    stamp: list[Any] = [strict]
    for name in names:
        try:
            st = os.stat(name)
            stamp.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append((name, None))
    key = tuple(stamp)
    with _SYSTEM_LOCK:
        kept = _FILE_POOLS.get(key)
    if kept is not None:
        return kept
    pool = _read_files(names, strict)
    with _SYSTEM_LOCK:
        if len(_FILE_POOLS) >= 64:
            _FILE_POOLS.clear()
        _FILE_POOLS[key] = pool
    return pool


def _read_files(paths: list[str], strict: bool) -> Pool:
    pool = Pool()
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CAFileError(path, str(exc.strerror or exc)) from None
        found = pem_certificates(data)
        if strict and not found:
            raise CAFileError(path, "not PEM (no certificate in it)")
        for der in found:
            pool.add(der)
    return pool


_SYSTEM: dict[tuple[str, tuple[Any, ...]], Pool] = {}
_SYSTEM_LOCK = threading.Lock()


def _where(environ: Mapping[str, str] | None) -> tuple[list[str], list[str]]:
    env = environ if environ is not None else os.environ
    files = [env["SSL_CERT_FILE"]] if env.get("SSL_CERT_FILE") else list(CERT_FILES)
    dirs = env["SSL_CERT_DIR"].split(":") if env.get("SSL_CERT_DIR") else list(CERT_DIRS)
    return files, dirs


def _cached(part: str, paths: list[str], read: Any) -> Pool:
    """A system pool part, read once per process (and again when one of its paths changes)."""
    stamp: list[Any] = []
    for p in paths:
        try:
            stamp.append((p, os.stat(p).st_mtime_ns))
        except OSError:
            stamp.append((p, None))
    key = (part, tuple(stamp))
    with _SYSTEM_LOCK:
        if key in _SYSTEM:
            return _SYSTEM[key]
    pool: Pool = read(paths)
    with _SYSTEM_LOCK:
        for old in [k for k in _SYSTEM if k[0] == part]:
            del _SYSTEM[old]
        _SYSTEM[key] = pool
    return pool


def _read_bundle(files: list[str]) -> Pool:
    pool = Pool()
    for f in files:
        try:
            data = Path(f).read_bytes()
        except OSError:
            continue
        for der in pem_certificates(data):
            pool.add(der)
        break
    return pool


def _read_dirs(dirs: list[str]) -> Pool:
    pool = Pool()
    for d in dirs:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_symlink() and os.path.dirname(os.readlink(e.path)) in ("", "."):
                    continue  # a hash link to a file of the same folder (read as itself)
                if e.is_file():
                    for der in pem_certificates(Path(e.path).read_bytes()):
                        pool.add(der)
            except OSError:
                continue
    return pool


def system_pool(environ: Mapping[str, str] | None = None, *, dirs: bool = True) -> Pool:
    """Go's system roots on Linux: the first bundle file found, then every file of the
    certificate folders (on most hosts the same certificates again, so `dirs=False` reads only
    the bundle, for a first try)."""
    files, folders = _where(environ)
    pool = _cached("bundle", files, _read_bundle)
    return pool.union(_cached("dirs", folders, _read_dirs)) if dirs else pool


@dataclass
class Trust:
    """The trust one client has: its own CA files (a Pool) and, unless it replaces them, the
    system roots, which are only read when the files alone do not decide."""

    files: Pool = field(default_factory=Pool)
    system: bool = True
    environ: Mapping[str, str] | None = None

    def pools(self) -> Iterator[Pool]:
        """Ever larger pools with the same verdict as the whole: a chain found in a part is
        found in the whole, so the system folders are only read when the rest fails."""
        if len(self.files):
            yield self.files
        if self.system:
            yield system_pool(self.environ, dirs=False).union(self.files)
            yield system_pool(self.environ).union(self.files)
