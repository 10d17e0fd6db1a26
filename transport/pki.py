"""A small X.509 PKI for the centre broker's TLS: one CA, server and client certificates.

Keys are ECDSA P-256. A client certificate's subject CN is the identity the centre broker
uses as the MQTT user name (`use_identity_as_username`): a gateway id such as `gw-demo`, or
`centre` for the centre service. Private keys are written atomically with mode 0600, in a
directory created 0700, whatever the umask.

Every function is idempotent: when the files already exist they are reused (after checking
that the certificate matches its key and was issued by the given CA), so running setup twice
changes nothing. Remove the files to re-issue.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from transport.keys import private_dir, write_secret

CA_DAYS = 3650
LEAF_DAYS = 1825
DEFAULT_SERVER_HOSTS = ("127.0.0.1", "::1", "localhost")
_DNS_LABELS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})*$")


class PkiError(Exception):
    """A certificate or key is unreadable, mismatched, or not issued by the expected CA."""


@dataclass(frozen=True)
class CaFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CertFiles:
    """A leaf certificate, its key, and the CA certificate that verifies it (and its peer)."""

    ca: Path
    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_public(path: Path, data: bytes) -> None:
    private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _new_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret(path, pem)
    return key


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot load private key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an ECDSA private key")
    return key


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot load certificate {path}: {exc}") from None


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise PkiError("certificate has no common name")
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


def _check_pair(cert_path: Path, key_path: Path) -> x509.Certificate:
    cert = load_cert(cert_path)
    key = load_key(key_path)
    if cert.public_key() != key.public_key():
        raise PkiError(f"{cert_path} does not match {key_path}; remove both to re-issue")
    return cert


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise PkiError(
            f"certificate {common_name(cert)!r} was not issued by CA {common_name(ca_cert)!r}"
        ) from None


def create_ca(dir: Path, name: str = "onekey CA", days: int = CA_DAYS) -> CaFiles:
    """The CA in `dir` (ca.crt, ca.key), created if absent."""
    files = CaFiles(cert=Path(dir) / "ca.crt", key=Path(dir) / "ca.key")
    if files.cert.exists() and files.key.exists():
        _check_pair(files.cert, files.key)
        return files
    if files.cert.exists() or files.key.exists():
        raise PkiError(f"only one of {files.cert} and {files.key} exists; remove it to re-create")
    key = _new_key(files.key)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        if host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _issue(
    ca: CaFiles,
    dir: Path,
    stem: str,
    cn: str,
    usage: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None,
    days: int,
) -> CertFiles:
    files = CertFiles(ca=ca.cert, cert=Path(dir) / f"{stem}.crt", key=Path(dir) / f"{stem}.key")
    ca_cert = load_cert(ca.cert)
    if files.cert.exists() and files.key.exists():
        cert = _check_pair(files.cert, files.key)
        verify_issued_by(cert, ca_cert)
        if common_name(cert) != cn:
            raise PkiError(f"{files.cert} is for {common_name(cert)!r}, not {cn!r}")
        return files
    ca_key = load_key(ca.key)
    if ca_cert.public_key() != ca_key.public_key():
        raise PkiError(f"{ca.cert} does not match {ca.key}")
    key = _new_key(files.key)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def issue_server(
    ca: CaFiles, dir: Path, name: str, hosts: Sequence[str] = (), days: int = LEAF_DAYS
) -> CertFiles:
    """A server certificate `{dir}/{name}.crt` whose SAN holds 127.0.0.1, ::1, localhost and
    `hosts` (IP addresses and DNS names). Clients check the host they dial against the SAN."""
    san = _san([*DEFAULT_SERVER_HOSTS, *hosts])
    return _issue(ca, dir, name, name, ExtendedKeyUsageOID.SERVER_AUTH, san, days)


def issue_client(ca: CaFiles, dir: Path, cn: str, days: int = LEAF_DAYS) -> CertFiles:
    """A client certificate `{dir}/{cn}.crt` with subject CN = `cn` (the MQTT identity)."""
    if not cn or "/" in cn or "+" in cn or "#" in cn or cn.startswith("."):
        raise PkiError(f"{cn!r} cannot be an MQTT identity (no '/', '+', '#', not empty)")
    # The SAN repeats the identity, for verifiers that follow RFC 5280 strictly; Mosquitto
    # takes the identity from the CN.
    san = x509.SubjectAlternativeName([x509.DNSName(cn)]) if _DNS_LABELS.match(cn) else None
    return _issue(ca, dir, cn, cn, ExtendedKeyUsageOID.CLIENT_AUTH, san, days)


# -- revocation and renewal ------------------------------------------------------------------
#
# The CA directory keeps `revoked.json` (serial, CN, when, why) and `ca.crl`, a PEM CRL signed
# by the CA that the centre broker loads (`crlfile`). OpenSSL refuses EVERY client once a
# loaded CRL is past its nextUpdate, so the CRL is re-signed by `onekey pki crl` (the centre's
# weekly `onekey-crl.timer`) long before CRL_DAYS run out.

CRL_DAYS = 90


@dataclass(frozen=True)
class Revoked:
    serial: int
    cn: str
    at: str  # ISO 8601 UTC
    reason: str


def crl_path(ca: CaFiles) -> Path:
    return ca.cert.with_name("ca.crl")


def _revoked_path(ca: CaFiles) -> Path:
    return ca.cert.with_name("revoked.json")


def revoked_list(ca: CaFiles) -> list[Revoked]:
    import json

    path = _revoked_path(ca)
    try:
        rows = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read {path}: {exc}; restore it from a backup") from None
    return [Revoked(int(r["serial"]), str(r["cn"]), str(r["at"]), str(r["reason"])) for r in rows]


def write_crl(ca: CaFiles, days: int = CRL_DAYS) -> Path:
    """(Re-)sign the CRL from revoked.json; returns its path."""
    ca_cert = load_cert(ca.cert)
    ca_key = load_key(ca.key)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
    )
    for r in revoked_list(ca):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(r.serial)
            .revocation_date(dt.datetime.fromisoformat(r.at))
            .build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    path = crl_path(ca)
    _write_public(path, crl.public_bytes(serialization.Encoding.PEM))
    return path


def revoke(ca: CaFiles, cert_path: Path, reason: str = "unspecified") -> Revoked:
    """Add the certificate to revoked.json and re-sign the CRL. Revoking twice is harmless."""
    import json

    cert = load_cert(cert_path)
    verify_issued_by(cert, load_cert(ca.cert))
    rows = revoked_list(ca)
    for r in rows:
        if r.serial == cert.serial_number:
            write_crl(ca)
            return r
    entry = Revoked(cert.serial_number, common_name(cert), _now().isoformat(), reason)
    rows.append(entry)
    data = json.dumps([r.__dict__ for r in rows], indent=1).encode()
    _write_public(_revoked_path(ca), data)
    write_crl(ca)
    return entry


def renew(ca: CaFiles, files: CertFiles, days: int = LEAF_DAYS) -> CertFiles:
    """A new key and certificate with the same CN, usage and SAN, in the same files. The old
    pair is kept beside them (`.old`) until the next renewal; revoke the old one with
    `revoke(ca, old_cert)` once every peer uses the new one."""
    old = _check_pair(files.cert, files.key)
    verify_issued_by(old, load_cert(ca.cert))
    usage = old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    try:
        san: x509.SubjectAlternativeName | None = old.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        san = None
    old_cert = files.cert.with_name(files.cert.name + ".old")
    old_key = files.key.with_name(files.key.name + ".old")
    os.replace(files.cert, old_cert)
    os.replace(files.key, old_key)
    try:
        return _issue(
            ca, files.cert.parent, files.cert.stem, common_name(old), next(iter(usage)), san, days
        )
    except BaseException:
        os.replace(old_cert, files.cert)
        os.replace(old_key, files.key)
        raise


def expires(cert_path: Path) -> dt.datetime:
    return load_cert(cert_path).not_valid_after_utc
