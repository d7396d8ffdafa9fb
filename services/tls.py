"""mTLS for the embedded server: a private CA, a server certificate and client certificates,
generated under ``<data>/tls`` (keys mode 0600), and the SSL contexts clients connect with.

``upm``'s own CA is for the embedded default; to use your own, point ``UPM_TLS_DIR`` at a folder
holding ``ca.pem`` and ``client-<name>.pem`` / ``client-<name>.key``.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.errors import ConfigError

VALIDITY = datetime.timedelta(days=365)


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

    def client_context(self, name: str) -> ssl.SSLContext:
        """The context a client named ``name`` connects with (verifies the server, shows its cert)."""
        for path in (self.ca, self.cert(f"client-{name}"), self.key(f"client-{name}")):
            if not path.exists():
                raise ConfigError(f"TLS file {path} is missing: run `upm up --tls` or give UPM_TLS_DIR a CA and "
                                  f"client-{name}.pem / .key")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        context.load_cert_chain(str(self.cert(f"client-{name}")), str(self.key(f"client-{name}")))
        return context

    def server_block(self) -> str:
        """The nats-server ``tls`` block: require and verify client certificates from this CA."""
        return (
            "tls {\n"
            f'  cert_file: "{self.cert("server")}"\n'
            f'  key_file: "{self.key("server")}"\n'
            f'  ca_file: "{self.ca}"\n'
            "  verify: true\n"
            "  timeout: 2\n"
            "}\n"
        )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "UPM"),
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


def ensure_pki(folder: Path, clients: Iterable[str]) -> Pki:
    """Create the CA (once), the server certificate and any missing client certificates."""
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
    ca_name = x509.load_pem_x509_certificate(pki.ca.read_bytes()).subject
    wanted = [("server", True), *((f"client-{c}", False) for c in clients)]
    for name, server in wanted:
        if pki.cert(name).exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(name, loaded, ca_name, key=key, server=server)
        _write_key(pki.key(name), key)
        pki.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki
