"""Certificates the way registries get them wrong, made at test time with `cryptography` (and
`openssl genrsa` for RSA keys below 1024 bits, which `cryptography` refuses to generate): a
name only in the Common Name, a leaf sent without its intermediate, SHA-1 signatures, small
RSA keys, an extended key usage for clients only, an intermediate constrained to other names."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ONE_DAY = dt.timedelta(days=1)


@dataclass
class Issued:
    cert: x509.Certificate
    key: Any

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _key(rsa_bits: int | None, tmp: Path) -> Any:
    if rsa_bits is None:
        return ec.generate_private_key(ec.SECP256R1())
    if rsa_bits >= 1024:
        return rsa.generate_private_key(65537, rsa_bits)
    out = tmp / f"rsa{rsa_bits}-{id(tmp)}.key"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(out), str(rsa_bits)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return serialization.load_pem_private_key(out.read_bytes(), None)


SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")
SHA1_RSA = bytes.fromhex("06092a864886f70d010105")


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _sign(b: x509.CertificateBuilder, key: Any, sha1: bool) -> x509.Certificate:
    """Signed with SHA-256, or with SHA-1, which `cryptography` no longer signs certificates
    with: the SHA-256 to-be-signed part gets SHA-1's algorithm and is signed by hand (RSA)."""
    cert = b.sign(key, hashes.SHA256())
    if not sha1:
        return cert
    from cryptography.hazmat.primitives.asymmetric import padding

    assert isinstance(key, rsa.RSAPrivateKey), "SHA-1 certificates need an RSA issuer"
    tbs = cert.tbs_certificate_bytes.replace(SHA256_RSA, SHA1_RSA, 1)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    algorithm = _der(0x30, SHA1_RSA + b"\x05\x00")
    der = _der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def _san(names: tuple[str, ...]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


@dataclass
class Factory:
    """A root CA and whatever the tests issue under it; files land in `dir`."""

    dir: Path
    root: Issued = field(init=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = self.ca("registry-diagnose x509 test root", None, rsa_bits=2048)

    def ca(
        self,
        name: str,
        issuer: Issued | None,
        *,
        permitted: tuple[str, ...] = (),
        excluded: tuple[str, ...] = (),
        sha1: bool = False,
        rsa_bits: int | None = None,
    ) -> Issued:
        key = _key(rsa_bits, self.dir)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "registry-diagnose tests"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - ONE_DAY)
            .not_valid_after(now + 300 * ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if issuer is not None:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
            )
        if permitted or excluded:
            b = b.add_extension(
                x509.NameConstraints(
                    permitted_subtrees=[x509.DNSName(n) for n in permitted] or None,
                    excluded_subtrees=[x509.DNSName(n) for n in excluded] or None,
                ),
                critical=True,
            )
        return Issued(_sign(b, issuer.key if issuer else key, sha1), key)

    def leaf(
        self,
        *names: str,
        issuer: Issued | None = None,
        cn: str | None = None,
        san: bool = True,
        rsa_bits: int | None = None,
        sha1: bool = False,
        eku: tuple[x509.ObjectIdentifier, ...] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
        aia: str | None = None,
    ) -> Issued:
        issuer = issuer or self.root
        key = _key(rsa_bits, self.dir)
        now = dt.datetime.now(dt.UTC)
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "registry-diagnose tests")]
        if cn or not san:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn or names[0]))
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - ONE_DAY)
            .not_valid_after(now + 200 * ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
            )
        )
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        if eku is not None:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if aia:
            b = b.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(aia),
                        )
                    ]
                ),
                critical=False,
            )
        return Issued(_sign(b, issuer.key, sha1), key)

    def files(self, name: str, leaf: Issued, *chain: Issued) -> tuple[Path, Path]:
        """The certificate file a server sends (the leaf, then `chain`) and its key file."""
        cert_file, key_file = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert_file.write_bytes(leaf.pem + b"".join(c.pem for c in chain))
        key_file.write_bytes(
            leaf.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file

    def pem_file(self, name: str, *certs: Issued) -> Path:
        path = self.dir / name
        path.write_bytes(b"".join(c.pem for c in certs))
        return path
