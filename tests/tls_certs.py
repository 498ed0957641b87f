"""Self-signed certificates for the TLS tests, made with ``cryptography``: a CA, a server
certificate for localhost/127.0.0.1 signed by it, a client certificate signed by it, and a
second, unrelated CA (the "wrong CA")."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certificates:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca_cert: Path
    wrong_client_cert: Path
    wrong_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(subject: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    cert = (
        _builder(common_name, _name(common_name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(common_name: str, ca: x509.Certificate, ca_key, usage, san: list[x509.GeneralName] | None):
    key = _key()
    builder = (
        _builder(common_name, ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key=None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_name(path.stem + "-key.pem")
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
        ))
        key_path.chmod(0o600)


def make_certificates(directory: Path) -> Certificates:
    """Write the CA, server, client and wrong-CA certificates (PEM) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("rdzv test CA")
    server, server_key = _leaf(
        "localhost", ca, ca_key, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client, client_key = _leaf("rdzv-client", ca, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH], None)
    wrong_ca, wrong_ca_key = _ca("some other CA")
    wrong_client, wrong_client_key = _leaf("intruder", wrong_ca, wrong_ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH], None)
    _write(directory / "ca.pem", ca)
    _write(directory / "server.pem", server, server_key)
    _write(directory / "client.pem", client, client_key)
    _write(directory / "wrong-ca.pem", wrong_ca)
    _write(directory / "intruder.pem", wrong_client, wrong_client_key)
    return Certificates(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        wrong_ca_cert=directory / "wrong-ca.pem",
        wrong_client_cert=directory / "intruder.pem",
        wrong_client_key=directory / "intruder-key.pem",
    )
