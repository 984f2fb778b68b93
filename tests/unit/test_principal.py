"""A TLS client certificate's principal, spelled as Java's X500Principal.getName() spells
it (Kafka's default SSL principal): ACLs match it as a string."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.principal import certificate_principal, subject_dn

_KEY = ec.generate_private_key(ec.SECP256R1())


def _certificate(*rdns: list[x509.NameAttribute]) -> bytes:
    name = x509.Name([x509.RelativeDistinguishedName(r) for r in rdns])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(_KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _a(oid: x509.ObjectIdentifier, value: str) -> list[x509.NameAttribute]:
    return [x509.NameAttribute(oid, value)]


def test_most_specific_first_with_javas_keywords() -> None:
    der = _certificate(
        _a(NameOID.COUNTRY_NAME, "US"),
        _a(NameOID.ORGANIZATION_NAME, "Example"),
        _a(NameOID.ORGANIZATIONAL_UNIT_NAME, "eng"),
        _a(NameOID.COMMON_NAME, "alice"),
    )
    assert subject_dn(der) == "CN=alice,OU=eng,O=Example,C=US"
    assert certificate_principal(der) == "User:CN=alice,OU=eng,O=Example,C=US"


def test_attributes_without_a_java_keyword_are_oid_and_der_hex() -> None:
    der = _certificate(_a(NameOID.EMAIL_ADDRESS, "a@x.org"), _a(NameOID.COMMON_NAME, "alice"))
    # emailAddress is an IA5String (tag 0x16), 7 bytes
    assert subject_dn(der) == "CN=alice,1.2.840.113549.1.9.1=#1607" + b"a@x.org".hex()


@pytest.mark.parametrize(
    ("value", "spelled"),
    [
        (" ", "\\ "),
        ("  a  ", "\\ \\ a\\ \\ "),
        ("a#b,c=d+e", "a\\#b\\,c\\=d\\+e"),
        ('<"x";\\>', '\\<\\"x\\"\\;\\\\\\>'),
    ],
)
def test_escapes_as_java_does(value: str, spelled: str) -> None:
    assert subject_dn(_certificate(_a(NameOID.COMMON_NAME, value))) == f"CN={spelled}"


def test_a_multi_valued_rdn_and_no_certificate() -> None:
    der = _certificate(
        [x509.NameAttribute(NameOID.COMMON_NAME, "a"), x509.NameAttribute(NameOID.USER_ID, "u")]
    )
    assert set(subject_dn(der).split("+")) == {"CN=a", "UID=u"}
    assert certificate_principal(None) is None
    assert certificate_principal(b"\x30\x03garbage") is None
