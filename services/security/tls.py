"""mTLS for the embedded server: a private CA, a server certificate and client certificates,
generated under ``<data>/tls`` (keys mode 0600), and the SSL contexts clients connect with.

A client certificate ``client-<name>.pem`` has the subject ``CN=<name>,O=UPM`` and no subject
alternative name: with ``verify_and_map`` nats-server takes an e-mail SAN first, then a DNS SAN,
then the subject in RFC 2253 form, so the user it maps the certificate to is exactly
:func:`distinguished_name` ``(name)`` (the RDN order does not matter to the server; the set of RDNs
must match exactly).

``upm``'s own CA is for the embedded default; to use your own, point ``UPM_TLS_DIR`` at a folder
holding ``ca.pem`` and ``client-<name>.pem`` / ``client-<name>.key``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.errors import ConfigError

VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)  # `upm up` re-issues a certificate this close to expiry
ORGANIZATION = "UPM"
SERVER_NAME = "UPM NATS server"  # not a valid identity, so no client certificate can share its subject


def distinguished_name(name: str) -> str:
    """The NATS user a client certificate for ``name`` maps to (its subject, RFC 2253)."""
    return f"CN={name},O={ORGANIZATION}"


@dataclass(frozen=True)
class Pki:
    """Where the CA, the server's and the clients' certificates are."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def has_client(self, name: str) -> bool:
        """Whether there is a client certificate and key for ``name``."""
        return self.cert(f"client-{name}").exists() and self.key(f"client-{name}").exists()

    def client_context(self, name: str) -> ssl.SSLContext:
        """The context a client named ``name`` connects with (verifies the server, shows its cert)."""
        for path in (self.ca, self.cert(f"client-{name}"), self.key(f"client-{name}")):
            if not path.exists():
                raise ConfigError(f"TLS file {path} is missing: run `upm up --tls` or give UPM_TLS_DIR a CA and "
                                  f"client-{name}.pem / .key")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        context.load_cert_chain(str(self.cert(f"client-{name}")), str(self.key(f"client-{name}")))
        return context

    def server_block(self, *, map_identities: bool = False) -> str:
        """The nats-server ``tls`` block: require and verify client certificates from this CA; with
        ``map_identities`` each certificate also names the user it connects as (``verify_and_map``)."""
        verify = "verify_and_map" if map_identities else "verify"
        return (
            "tls {\n"
            f"  cert_file: {json.dumps(str(self.cert('server')))}\n"
            f"  key_file: {json.dumps(str(self.key('server')))}\n"
            f"  ca_file: {json.dumps(str(self.ca))}\n"
            f"  {verify}: true\n"
            "  timeout: 2\n"
            "}\n"
        )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _issue(
    subject: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    *,
    key: ec.EllipticCurvePrivateKey,
    is_ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def _current(path: Path, subject: x509.Name, ca: x509.Certificate) -> bool:
    """Whether the certificate at ``path`` exists with this subject, signed by ``ca``, and is not
    about to expire."""
    if not path.exists():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    fresh = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE
    return cert.subject == subject and fresh


def ensure_pki(folder: Path, clients: Iterable[str]) -> Pki:
    """Create the CA (once), the server certificate and the client certificates (``CN=<client>``)
    that are missing or stale (another subject, another CA, or close to expiry)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = Pki(folder)
    ca_key_path = folder / "ca.key"
    if not ca_key_path.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _issue("UPM embedded CA", ca_key, _name("UPM embedded CA"), key=ca_key, is_ca=True)
        _write_key(ca_key_path, ca_key)
        pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca_key_path} is not an EC private key; remove {folder} and run `upm up --tls` again")
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_name = ca.subject
    wanted = [("server", SERVER_NAME, True), *((f"client-{c}", c, False) for c in clients)]
    for name, common, server in wanted:
        if _current(pki.cert(name), _name(common), ca):
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(common, loaded, ca_name, key=key, server=server)
        _write_key(pki.key(name), key)
        pki.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki
