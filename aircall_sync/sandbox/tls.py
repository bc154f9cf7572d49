"""Certificates for the HTTPS sandbox: a private CA and a loopback server certificate.

simple-salesforce always builds ``https://`` URLs from ``instance_url``
(DESIGN.md §4), so the Salesforce emulator has to speak TLS on 127.0.0.1.
:func:`ensure_tls_files` writes, into a directory the caller chooses:

- ``sandbox-ca.pem``: a self-signed CA certificate. This is the file the
  tool's ``salesforce.ca_bundle`` (or ``REQUESTS_CA_BUNDLE`` /
  ``SSL_CERT_FILE``) points at;
- ``sandbox-server.pem`` / ``sandbox-server-key.pem``: a certificate for
  ``127.0.0.1``, ``::1`` and ``localhost`` signed by that CA, and its key.

The certificates carry the extensions strict verifiers insist on (Python
3.13's ``VERIFY_X509_STRICT``: basic constraints, key usage, subject and
authority key identifiers, a SAN), so the same files work with requests,
httpx and OpenSSL command-line tools. Keys are ECDSA P-256: generating them
takes milliseconds, which keeps test start-up fast.

Existing files are reused while they are valid for at least another day and
still match each other, so a sandbox restarted on the same directory keeps the
CA that a settings file already points at.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsFiles", "ensure_tls_files", "generate_jwt_keypair", "server_ssl_context"]

CA_FILE = "sandbox-ca.pem"
CERT_FILE = "sandbox-server.pem"
KEY_FILE = "sandbox-server-key.pem"

# Long enough for a demo machine left alone for a while, short enough that a
# leaked sandbox CA is not trusted for years.
_VALID_DAYS = 90


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of the PEM files written by :func:`ensure_tls_files`."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aircall-sync sandbox (not Salesforce)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _still_good(files: TlsFiles) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    horizon = datetime.now(UTC) + timedelta(days=1)
    if ca.not_valid_after_utc < horizon or cert.not_valid_after_utc < horizon:
        return False
    if cert.issuer != ca.subject:
        return False
    ca_pub = ca.public_key()
    if not isinstance(ca_pub, ec.EllipticCurvePublicKey):
        return False
    try:
        ca_pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except Exception:  # noqa: BLE001 - any verification failure means "regenerate"
        return False
    return key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def ensure_tls_files(directory: str | os.PathLike[str], *, reuse: bool = True) -> TlsFiles:
    """Write (or reuse) the sandbox CA and server certificate under ``directory``."""
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(base / CA_FILE, base / CERT_FILE, base / KEY_FILE)
    if reuse and _still_good(files):
        return files

    now = datetime.now(UTC)
    not_before = now - timedelta(hours=1)  # tolerate small clock skew between processes
    not_after = now + timedelta(days=_VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("aircall-sync sandbox CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.server_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(
        files.server_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    return files


def _write(path: Path, data: bytes, mode: int) -> None:
    # Write then rename so a concurrent reader never sees half a PEM file.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A server-side context loaded with the sandbox certificate (the server sets TCP_NODELAY)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.server_cert), str(files.server_key))
    return ctx


def generate_jwt_keypair(directory: str | os.PathLike[str], *, name: str = "sandbox-jwt") -> tuple[Path, Path]:
    """An RSA key and its self-signed certificate for the JWT bearer flow (reference §7).

    Returns ``(private_key_path, certificate_path)``: the tool signs with the
    key (``salesforce.private_key_file``), the emulator verifies with the
    certificate (``AuthConfig.jwt_certificate``), as a connected app would.
    """
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    subject = _name("aircall-sync sandbox connected app")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=_VALID_DAYS))
        .sign(key, hashes.SHA256())
    )
    key_path = base / f"{name}-key.pem"
    cert_path = base / f"{name}-cert.pem"
    _write(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return key_path, cert_path
