"""Ed25519 key files for gateway and centre, and secret files (docs/protocol.md §6).

Keys are raw 32-byte Ed25519 keys kept as hex in files of mode 0600. The signed frame itself
is pure protocol: `protocol.signed`.

Also where every secret on disk is made private: `write_secret` (keys, passwords, tokens),
`private_dir` (state directories, 0700) and `private_file`/`private_db` (0600 files such as the
databases that hold device keys), whatever the process umask.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or readable by others."""


class PrivatePathError(OSError):
    """A state directory or a secret-bearing file cannot be created or made private."""


# State directories are 0700 and secret-bearing files 0600 whatever the umask: modes are set
# with chmod after creation (a umask only ever narrows what open() and mkdir() are given, and
# 0o000 narrows nothing; some other odd umask could leave the owner without access).
DIR_MODE = 0o700
FILE_MODE = 0o600
# What SQLite creates beside a database; it gives each the database file's own mode.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError as exc:
        raise PrivatePathError(
            f"cannot set mode {mode:o} on {path}: {exc.strerror}; run: chmod {mode:o} {path}"
        ) from None


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create `path`, and every missing parent, as a 0700 directory. An existing directory is
    left as it is unless `tighten`: then it is made 0700 too (for a directory that holds only
    our state, such as the gateway's state_dir; never for a shared parent such as /var/lib)."""
    missing: list[Path] = []
    p = Path(path)
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass  # made by someone else in between; checked below like any existing directory
        except OSError as exc:
            raise PrivatePathError(f"cannot create directory {d}: {exc.strerror}") from None
        else:
            _chmod(d, DIR_MODE)
    if not path.is_dir():
        raise PrivatePathError(f"{path} exists and is not a directory")
    if tighten and path.stat().st_mode & 0o777 != DIR_MODE:
        _chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure `path` exists as a 0600 file: created empty (its directory 0700 if missing),
    or, if it exists, its mode narrowed to 0600. Its contents are left alone."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        if path.stat().st_mode & 0o777 != FILE_MODE:
            _chmod(path, FILE_MODE)
        return path
    except OSError as exc:
        raise PrivatePathError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def private_db(path: Path) -> Path:
    """Prepare an SQLite database file before sqlite opens it: the file 0600 (SQLite then makes
    its -wal and -shm files with the same mode) and any side file left by an older run 0600."""
    private_file(path)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists() and side.stat().st_mode & 0o777 != FILE_MODE:
            _chmod(side, FILE_MODE)
    return path


def write_secret(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 (it never exists with wider permissions); its
    directory is created 0700 if missing."""
    private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # O_TRUNC on a leftover tmp file keeps its old mode
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
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
