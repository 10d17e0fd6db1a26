"""The centre PKI: certificates chain to the CA, carry the right identity, keys stay private."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from transport.pki import PkiError, common_name, create_ca, issue_client, issue_server, load_cert


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _store(ca_cert: Path) -> Store:
    return Store([load_cert(ca_cert)])


def test_server_certificate_chains_to_ca_for_loopback_and_given_hosts(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    srv = issue_server(ca, tmp_path, "centre-broker", ["centre.example", "10.0.0.5"])
    leaf = load_cert(srv.cert)
    verifier = PolicyBuilder().store(_store(ca.cert))
    for name in ("localhost", "centre.example"):
        verifier.build_server_verifier(x509.DNSName(name)).verify(leaf, [])
    for ip in ("127.0.0.1", "::1", "10.0.0.5"):
        ip_name = x509.IPAddress(ipaddress.ip_address(ip))
        verifier.build_server_verifier(ip_name).verify(leaf, [])
    with pytest.raises(VerificationError):
        verifier.build_server_verifier(x509.DNSName("other.example")).verify(leaf, [])


def test_client_certificate_names_the_identity_and_chains_to_ca(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    cli = issue_client(ca, tmp_path, "gw-demo")
    leaf = load_cert(cli.cert)
    assert common_name(leaf) == "gw-demo"
    assert cli.ca == ca.cert
    verified = PolicyBuilder().store(_store(ca.cert)).build_client_verifier().verify(leaf, [])
    assert verified.chain[-1] == load_cert(ca.cert)


def test_certificate_from_another_ca_does_not_verify(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "a")
    other = create_ca(tmp_path / "b")
    leaf = load_cert(issue_client(other, tmp_path / "b", "gw-1").cert)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(_store(ca.cert)).build_client_verifier().verify(leaf, [])


def test_private_keys_are_mode_0600(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    srv = issue_server(ca, tmp_path, "centre-broker")
    cli = issue_client(ca, tmp_path, "centre")
    for key in (ca.key, srv.key, cli.key):
        assert _mode(key) == 0o600, key
    for cert in (ca.cert, srv.cert, cli.cert):
        assert _mode(cert) == 0o644, cert
    assert not list(tmp_path.glob("*.tmp"))


def test_issuing_twice_reuses_existing_files(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    cli = issue_client(ca, tmp_path, "gw-1")
    before = (ca.cert.read_bytes(), cli.cert.read_bytes(), cli.key.read_bytes())
    ca2 = create_ca(tmp_path)
    cli2 = issue_client(ca2, tmp_path, "gw-1")
    assert (ca2, cli2) == (ca, cli)
    assert (ca.cert.read_bytes(), cli.cert.read_bytes(), cli.key.read_bytes()) == before


def test_existing_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "a")
    other = create_ca(tmp_path / "b")
    issue_client(other, tmp_path / "shared", "gw-1")
    with pytest.raises(PkiError, match="not issued by"):
        issue_client(ca, tmp_path / "shared", "gw-1")


def test_ca_is_valid_for_ten_years_and_is_a_ca(tmp_path: Path) -> None:
    cert = load_cert(create_ca(tmp_path).cert)
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life >= dt.timedelta(days=3650)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_identity_with_topic_characters_is_refused(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    for bad in ("", "gw/1", "gw+", "#"):
        with pytest.raises(PkiError):
            issue_client(ca, tmp_path, bad)


# -- revocation and renewal


def test_revoke_lists_the_serial_in_a_crl_signed_by_the_ca(tmp_path: Path) -> None:
    from cryptography import x509 as _x509

    from transport.pki import crl_path, load_cert, revoke, write_crl

    ca = create_ca(tmp_path)
    write_crl(ca)
    leaf = issue_client(ca, tmp_path, "gw-a")
    first = revoke(ca, leaf.cert, "stolen")
    again = revoke(ca, leaf.cert, "stolen")  # twice is harmless
    assert first == again
    crl = _x509.load_pem_x509_crl(crl_path(ca).read_bytes())
    assert crl.is_signature_valid(load_cert(ca.cert).public_key())  # type: ignore[arg-type]
    serials = [r.serial_number for r in crl]
    assert serials == [load_cert(leaf.cert).serial_number]
    assert crl.next_update_utc is not None and crl.last_update_utc < crl.next_update_utc


def test_renew_gives_a_new_key_with_the_same_identity(tmp_path: Path) -> None:
    from transport.pki import common_name, load_cert, renew

    ca = create_ca(tmp_path)
    leaf = issue_client(ca, tmp_path, "gw-a")
    old_key = leaf.key.read_bytes()
    old_serial = load_cert(leaf.cert).serial_number
    new = renew(ca, leaf)
    assert new.cert == leaf.cert and new.key == leaf.key
    assert leaf.key.read_bytes() != old_key
    cert = load_cert(new.cert)
    assert common_name(cert) == "gw-a" and cert.serial_number != old_serial
    assert load_cert(leaf.cert.with_name("gw-a.crt.old")).serial_number == old_serial
    assert (leaf.key.with_name("gw-a.key.old").stat().st_mode & 0o077) == 0


def test_revoking_a_certificate_of_another_ca_is_refused(tmp_path: Path) -> None:
    from transport.pki import revoke

    ca = create_ca(tmp_path / "a")
    other = create_ca(tmp_path / "b")
    leaf = issue_client(other, tmp_path / "b", "gw-x")
    with pytest.raises(PkiError, match="not issued by"):
        revoke(ca, leaf.cert)
