"""Ed25519 key files for gateway and centre, and secret files (docs/protocol.md §6).

Keys are raw 32-byte Ed25519 keys kept as hex in files of mode 0600. The signed frame itself
is pure protocol: `protocol.signed`.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or readable by others."""


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 (it never exists with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def generate_private_key(path: Path) -> Ed25519PrivateKey:
    """Create a new key at `path` (0600). Refuses to overwrite an existing key."""
    if path.exists():
        raise KeyFileError(f"{path} already exists; remove it first if you mean to replace the key")
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    write_secret(path, raw.hex().encode() + b"\n")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        st = path.stat()
        text = path.read_text().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise KeyFileError(f"private key {path} is readable by others; run: chmod 600 {path}")
    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text))
    except ValueError:
        raise KeyFileError(f"{path} is not a 64-hex-digit Ed25519 private key") from None


def public_hex(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return raw.hex()


def load_public_hex(text: str) -> Ed25519PublicKey:
    try:
        raw = bytes.fromhex(text.strip())
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise KeyFileError("public key must be 64 hex digits (32 bytes of Ed25519)") from None
