"""The verifier with Go's crypto/x509 rules, rule by rule, both ways, on certificates made at
test time; the wording is checked against what Go prints (the real clients confirm it on real
servers in tests/test_certificates.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from diagnose import certadvice, x509go, x509pool
from diagnose.codes import Code
from tests import certlab, lab

HOST = "certs.test"


def der(i: certlab.Issued) -> bytes:
    return i.cert.public_bytes(serialization.Encoding.DER)


def trust(*anchors: certlab.Issued) -> x509pool.Trust:
    return x509pool.Trust(x509pool.Pool(der(a) for a in anchors), system=False)


@pytest.fixture(scope="module")
def f(tmp_path_factory) -> certlab.Factory:
    return certlab.Factory(tmp_path_factory.mktemp("x509go"))


@pytest.fixture(scope="module")
def inter(f) -> certlab.Issued:
    return f.ca("registry-diagnose x509 intermediate", f.root)


def check(f, leaf, *chain, anchors=None, host=HOST) -> x509go.Verdict:
    sent = [der(leaf), *(der(c) for c in chain)]
    return x509go.verify(sent, host, trust(*(anchors or (f.root,))))


def test_a_good_chain_passes_and_names_the_chain(f, inter):
    v = check(f, f.leaf(HOST, issuer=inter), inter)
    assert v.ok and v.reason == "ok" and not v.error
    assert [c["subject"] for c in v.chain][1:] == [
        inter.cert.subject.rfc4514_string(),
        f.root.cert.subject.rfc4514_string(),
    ]


def test_common_name_only_is_refused_for_names_and_addresses(f):
    for host in (HOST, "198.18.9.9"):
        v = check(f, f.leaf(host, san=False), host=host)
        assert (v.ok, v.reason) == (False, "legacy-cn")
        assert v.error == "x509: certificate relies on legacy Common Name field, use SANs instead"
    # a SAN is there: the CN no longer matters, Go lists what the SAN holds
    v = check(f, f.leaf("other.test", cn=HOST))
    assert v.error == f"x509: certificate is valid for other.test, not {HOST}"
    v = check(f, f.leaf("other.test"), host="198.18.9.9")
    assert v.error == (
        "x509: cannot validate certificate for 198.18.9.9 because it doesn't contain any IP SANs"
    )


@pytest.mark.parametrize(
    ("pattern", "host", "ok"),
    [
        ("*.example.test", "a.example.test", True),
        ("*.example.test", "a.b.example.test", False),
        ("*.example.test", "example.test", False),
        ("a*.example.test", "ab.example.test", False),  # partial wildcards never match
        ("Registry.Test", "registry.test.", True),  # case and a trailing dot
        ("registry.test", "registry.test", True),
    ],
)
def test_host_names_match_as_go_matches_them(f, pattern, host, ok):
    assert check(f, f.leaf(pattern), host=host).ok is ok


def test_an_ip_matches_only_an_ip_san(f):
    assert check(f, f.leaf("198.18.9.9"), host="198.18.9.9").ok
    assert check(f, f.leaf("::ffff:198.18.9.9"), host="198.18.9.9").ok
    assert not check(f, f.leaf("198.18.9.9"), host="198.18.9.10").ok


def test_a_missing_intermediate_is_named_and_never_fetched(f, inter):
    url = "http://198.18.9.9/intermediate.crt"
    leaf = f.leaf(HOST, issuer=inter, aia=url)
    v = check(f, leaf)
    assert (v.ok, v.reason) == (False, "chain-incomplete")
    assert v.error == "x509: certificate signed by unknown authority"
    m = v.missing
    assert m is not None and m["intermediate"] and m["fetch_url"] == url and m["sent"] == 1
    assert m["subject"] == inter.cert.subject.rfc4514_string()
    ski = inter.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert m["authority_key_id"] == x509pool.hexid(ski.digest)
    advice = certadvice.advise(v, HOST, 5000)
    assert advice.code == Code.TLS_CHAIN_INCOMPLETE
    assert advice.faq[0] == "certificate-chain-incomplete"
    assert "Fix the server" in advice.steps[0] and url in advice.steps[0]
    for where in ("/etc/docker/certs.d/certs.test:5000/ca.crt", "/etc/containers/certs.d/"):
        assert where in advice.steps[1]
    # the same server sending its chain passes; so does a pool holding the intermediate
    # itself (Go takes any certificate of its pool as an anchor, a root or not)
    assert check(f, leaf, inter).ok
    assert check(f, leaf, anchors=(inter,)).ok


def test_an_untrusted_root_is_not_called_an_incomplete_chain(f, inter):
    v = check(f, f.leaf(HOST, issuer=inter), inter, anchors=(f.ca("someone else", None),))
    assert (v.ok, v.reason) == (False, "unknown-authority")
    assert v.missing is not None and v.missing["subject"] == f.root.cert.subject.rfc4514_string()
    advice = certadvice.advise(v, HOST, 443)
    assert advice.code == Code.CONNECTIVITY_SSL_ERROR and "does not trust" in advice.why
    # a server that sends its own root along: the chain ends at a self-signed certificate
    # nobody trusts, so there is no missing issuer to name
    other = f.ca("private root", None)
    v = check(f, f.leaf(HOST, issuer=other), other)
    assert (v.reason, v.missing) == ("unknown-authority", None)
    assert certadvice.advise(v, HOST, 443).why.startswith("its certificate is not trusted")


def test_sha1_is_refused_below_the_root_and_allowed_on_it(f):
    v = check(f, f.leaf(HOST, sha1=True))
    assert (v.ok, v.reason) == (False, "insecure-signature")
    assert v.error == (
        'x509: certificate signed by unknown authority (possibly because of "x509: cannot '
        'verify signature: insecure algorithm SHA1-RSA" while trying to verify candidate '
        'authority certificate "registry-diagnose x509 test root")'
    )
    assert v.detail["certificate"].startswith("O=registry-diagnose tests")
    sha1_root = f.ca("old root", None, sha1=True, rsa_bits=2048)
    assert check(f, f.leaf(HOST, issuer=sha1_root), anchors=(sha1_root,)).ok
    advice = certadvice.advise(v, HOST, 443)
    assert (advice.code, advice.faq[0]) == (Code.TLS_CERT_WEAK, "certificate-weak")


def test_small_rsa_keys_are_a_warning_in_go_1_24_words(f):
    small = check(f, f.leaf(HOST, rsa_bits=768))
    assert small.ok and small.warning == (
        "tls: invalid signature by the server certificate: crypto/rsa: 768-bit keys are "
        "insecure (see https://go.dev/pkg/crypto/rsa#hdr-Minimum_key_size)"
    )
    assert small.detail["rsa_bits"] == 768
    advice = certadvice.advise(small, HOST, 443)
    assert advice.code == Code.TLS_CERT_WEAK and "1.24" in advice.why
    fine = check(f, f.leaf(HOST, rsa_bits=1024))  # OpenSSL's level 2 refuses it; Go does not
    assert fine.ok and not fine.warning


def test_extended_key_usage_must_allow_server_auth(f):
    v = check(f, f.leaf(HOST, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)))
    assert (v.reason, v.error) == (
        "usage",
        "x509: certificate specifies an incompatible key usage",
    )
    assert v.detail["eku"] == ["clientAuth"]
    assert certadvice.advise(v, HOST, 443).code == Code.TLS_CERT_USAGE
    assert check(f, f.leaf(HOST, eku=None)).ok  # no list at all: any usage
    both = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH)
    assert check(f, f.leaf(HOST, eku=both)).ok


def test_name_constraints_are_honoured(f):
    nc = f.ca("constrained intermediate", f.root, permitted=("allowed.test",))
    outside = check(f, f.leaf(HOST, issuer=nc), nc)
    assert (outside.ok, outside.reason) == (False, "name-constraints")
    # a candidate's own invalidity is Go's error as it is (a failed signature, only a hint)
    assert outside.error == (
        "x509: a root or intermediate certificate is not authorized to sign for this name: "
        'DNS name "certs.test" is not permitted by any constraint'
    )
    assert outside.detail["permitted"] == ["allowed.test"]
    assert check(f, f.leaf("r.allowed.test", issuer=nc), nc, host="r.allowed.test").ok
    excluding = f.ca("excluding intermediate", f.root, excluded=(HOST,))
    v = check(f, f.leaf(HOST, issuer=excluding), excluding)
    assert 'DNS name "certs.test" is excluded by constraint "certs.test"' in v.error
    advice = certadvice.advise(outside, HOST, 443)
    assert advice.code == Code.TLS_CERT_NAME_CONSTRAINTS and "allowed.test" in advice.why


def _custom(f, subject: str, issuer: certlab.Issued, **ext) -> certlab.Issued:
    """A certificate with exactly the extensions given (name -> (value, critical))."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    for value, critical in ext.values():
        b = b.add_extension(value, critical=critical)
    return certlab.Issued(b.sign(issuer.key, hashes.SHA256()), key)


def test_an_intermediate_must_be_a_ca_within_its_path_length(f):
    san = (x509.SubjectAlternativeName([x509.DNSName(HOST)]), False)
    not_ca = _custom(f, "not a CA", f.root, bc=(x509.BasicConstraints(False, None), True))
    v = check(f, _custom(f, HOST, not_ca, san=san), not_ca)
    assert v.reason == "ca-usage"
    assert "parent certificate cannot sign this kind of certificate" in v.error
    zero = _custom(f, "path zero", f.root, bc=(x509.BasicConstraints(True, 0), True))
    below = _custom(f, "below zero", zero, bc=(x509.BasicConstraints(True, None), True))
    v = check(f, _custom(f, HOST, below, san=san), below, zero)
    assert "too many intermediates for path length constraint" in v.error
    assert certadvice.advise(v, HOST, 443).code == Code.TLS_CERT_USAGE


def test_an_unknown_critical_extension_refuses_the_certificate(f):
    odd = (
        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
        True,
    )
    san = (x509.SubjectAlternativeName([x509.DNSName(HOST)]), False)
    v = check(f, _custom(f, HOST, f.root, san=san, odd=odd))
    assert (v.reason, v.error) == ("critical-extension", "x509: unhandled critical extension")


def test_dates_use_go_words(f, pki):
    now = dt.datetime.now(dt.UTC)
    cert_file, _ = pki.leaf(
        "x509go-expired",
        HOST,
        not_before=now - dt.timedelta(days=9),
        not_after=now - dt.timedelta(days=2),
    )
    ders = x509pool.pem_certificates(Path(cert_file).read_bytes())
    ca = x509pool.pem_certificates(pki.ca_file.read_bytes())
    v = x509go.verify(ders, HOST, x509pool.Trust(x509pool.Pool(ca), system=False))
    assert v.reason == "expired"
    assert v.error.startswith("x509: certificate has expired or is not yet valid: current time ")
    assert " is after " in v.error


def test_pools_read_pem_as_go_does(tmp_path, f, inter):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"junk\n" + f.root.pem + b"-----BEGIN PRIVATE KEY-----\nAA==\n" + inter.pem)
    assert len(x509pool.pool_from_files([bundle])) == 2
    (tmp_path / "empty.crt").write_text("not a certificate\n")
    assert len(x509pool.pool_from_files([tmp_path / "empty.crt"])) == 0  # docker skips it
    with pytest.raises(x509pool.CAFileError, match="not PEM"):  # containerd refuses it
        x509pool.pool_from_files([tmp_path / "empty.crt"], strict=True)
    with pytest.raises(x509pool.CAFileError):
        x509pool.pool_from_files([tmp_path / "missing.crt"])


def test_system_roots_come_from_ssl_cert_file_and_dir(tmp_path, f, inter):
    (tmp_path / "bundle.pem").write_bytes(f.root.pem)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "extra.pem").write_bytes(inter.pem)
    env = {"SSL_CERT_FILE": str(tmp_path / "bundle.pem"), "SSL_CERT_DIR": str(tmp_path / "dir")}
    assert len(x509pool.system_pool(env, dirs=False)) == 1
    assert len(x509pool.system_pool(env)) == 2
    leaf = f.leaf(HOST, issuer=inter)
    assert x509go.verify([der(leaf)], HOST, x509pool.Trust(environ=env)).ok


def test_go_quote_matches_strconv_quote():
    assert x509go.go_quote('a "b" \\ c\n') == '"a \\"b\\" \\\\ c\\n"'


def test_peer_chain_is_what_the_server_sent(f, inter):
    leaf = f.leaf(HOST, "127.0.0.1", issuer=inter)
    cert_file, key_file = f.files("peer-chain", leaf, inter)
    with lab.http_server({"/": (200, {}, b"")}, lab.server_context(cert_file, key_file)) as srv:
        import socket

        with socket.create_connection(("127.0.0.1", srv.port), 5) as sock:
            tls = x509go.client_context().wrap_socket(sock, server_hostname=HOST)
            chain = x509go.peer_chain(tls)
            tls.close()
    assert chain == [der(leaf), der(inter)]
