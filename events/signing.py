"""ed25519 signing keys for signed log heads and evidence manifests.

The private key lives at ``<data>/keys/ed25519.pem`` (PKCS#8, mode 0600, created on first use);
its public half beside it at ``ed25519.pub`` (raw 32 bytes, hex). Other keys the folder trusts
(another UPM's, an old one after a rotation) go in ``<data>/trust/*.pub``, one hex key a line. A key id is
``ed25519:<first 16 hex of sha256(raw public key)>``. ed25519 signatures are deterministic, so
the same message and key always give the same signature. Signatures and keys travel as hex.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from events.codec import canonical_json
from events.errors import UpmEventError

KEY_DIR = "keys"
PRIVATE_FILE = "ed25519.pem"
PUBLIC_FILE = "ed25519.pub"
TRUST_DIR = "trust"
MAX_KEY_FILE_BYTES = 64 * 1024


class SigningKeyError(UpmEventError):
    """A signing key is missing, unreadable, or not an ed25519 key."""


def is_public_key(text: str) -> bool:
    """Whether ``text`` is an ed25519 public key as hex (64 hex digits)."""
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def key_id(public_hex: str) -> str:
    """The id of a public key given as hex."""
    return "ed25519:" + hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16]


class Signer:
    """An ed25519 private key: signs bytes, names its public half."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_hex = raw.hex()
        self.key_id = key_id(self.public_hex)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> str:
        return self._private.sign(message).hex()

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def verify(public_hex: str, message: bytes, signature_hex: str) -> bool:
    """Whether ``signature_hex`` is ``public_hex``'s ed25519 signature of ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_or_create(data_dir: Path | str) -> Signer:
    """The signing key of the data folder, created (mode 0600) if there is none yet. Several processes
    (copies of the auditor) may start on one new folder at once: the key appears whole or not at all
    (written aside, then hard-linked into place), and all of them use the one that got there first."""
    folder = Path(data_dir) / KEY_DIR
    path = folder / PRIVATE_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = Signer.generate()
        aside = folder / f".{PRIVATE_FILE}.{os.getpid()}"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(signer.private_pem())
                out.flush()
                os.fsync(out.fileno())
            os.link(aside, path)  # atomic, and refused when another process's key got there first
        except FileExistsError:
            pass
        else:
            public = folder / f".{PUBLIC_FILE}.{os.getpid()}"
            public.write_text(signer.public_hex + "\n")
            public.replace(folder / PUBLIC_FILE)
            return signer
        finally:
            aside.unlink(missing_ok=True)
    return load(path)


def load(path: Path) -> Signer:
    """The ed25519 private key in the PEM file ``path``."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(
            f"cannot read the signing key {path}: {exc}; restore it from backup, or move it away to "
            "start a new key (old heads and packs then verify only with the old public key)"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an ed25519 key; UPM signs with ed25519")
    if path.stat().st_mode & 0o077:
        raise SigningKeyError(
            f"{path} is readable by other users (mode {path.stat().st_mode & 0o777:o}); run `chmod 600 {path}`"
        )
    return Signer(key)


def parse_public_keys(text: str, source: str) -> dict[str, str]:
    """The public keys in a key file (hex, one per line; blank lines and ``#`` comments ignored), by key id."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if not is_public_key(entry):
            raise SigningKeyError(f"{source} line {number} is not an ed25519 public key: write 64 hex digits "
                                  "(as keys/ed25519.pub of a UPM data folder holds it)")
        out[key_id(entry)] = entry.lower()
    return out


def public_keys(data_dir: Path | str) -> dict[str, str]:
    """The keys a data folder trusts, by key id: its own (``keys/*.pub``) and the ones it was given
    (``trust/*.pub``, e.g. another UPM's key, or an old key after a rotation)."""
    out: dict[str, str] = {}
    for folder in (KEY_DIR, TRUST_DIR):
        for pub in sorted((Path(data_dir) / folder).glob("*.pub")):
            try:
                text = pub.read_text() if pub.is_file() and pub.stat().st_size <= MAX_KEY_FILE_BYTES else None
            except (OSError, UnicodeDecodeError) as exc:
                raise SigningKeyError(f"cannot read the key file {pub}: {exc}") from exc
            if text is None:
                raise SigningKeyError(f"{pub} is not a key file (a regular file of at most {MAX_KEY_FILE_BYTES} "
                                      "bytes, one hex key a line); move it out of the way")
            out.update(parse_public_keys(text, str(pub)))
    return out


def head_message(size: int, root: str, signed_at: str, key: str) -> bytes:
    """The bytes a log head's signature covers: canonical JSON of its size, root, time and key id."""
    return canonical_json({"key_id": key, "root": root, "signed_at": signed_at, "size": size})
