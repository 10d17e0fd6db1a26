"""`onekey pki ...`: the centre broker's CA, certificates and revocation list.

    onekey pki init --dir /var/lib/onekey/pki
    onekey pki issue --dir ... --client gw-xiaocun          (a gateway's certificate)
    onekey pki issue --dir ... --server centre-broker --host centre.example.cn
    onekey pki renew --dir ... --name gw-xiaocun             (new key and certificate)
    onekey pki revoke --dir ... --name gw-xiaocun --reason "gateway stolen"
    onekey pki crl --dir ...                                 (re-sign the CRL; weekly timer)
    onekey pki list --dir ...

After `revoke`, `crl` or `renew` of the broker's certificate, reload Mosquitto
(`systemctl reload mosquitto`): it re-reads its certificates and the CRL.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from transport import pki


def add_commands(sub: Any) -> None:
    p = sub.add_parser("pki", help="the centre broker's CA: issue, renew, revoke (CRL)")
    psub = p.add_subparsers(dest="pki_cmd", required=True, metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = psub.add_parser(name, help=help)
        c.add_argument("--dir", type=Path, required=True, help="the CA's directory (ca.crt, ca.key)")
        return c

    c = cmd("init", "create the CA (kept if it exists) and an empty CRL")
    c.add_argument("--name", default="onekey CA")
    c.set_defaults(func=_init)
    c = cmd("issue", "issue a client (gateway, centre) or server (broker) certificate")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--client", metavar="CN", help="the MQTT identity: a gateway id, or centre")
    who.add_argument("--server", metavar="NAME", help="a broker's certificate name")
    c.add_argument("--host", action="append", default=[], help="server: a name or address it is dialled by")
    c.add_argument("--days", type=int, default=pki.LEAF_DAYS)
    c.set_defaults(func=_issue)
    c = cmd("renew", "a new key and certificate with the same name (the old pair kept as .old)")
    c.add_argument("--name", required=True, help="the certificate's file name without .crt")
    c.add_argument("--days", type=int, default=pki.LEAF_DAYS)
    c.set_defaults(func=_renew)
    c = cmd("revoke", "revoke a certificate: the centre broker refuses it after its next reload")
    c.add_argument("--name", default=None, help="the certificate's file name without .crt")
    c.add_argument("--cert", type=Path, default=None, help="or the certificate file")
    c.add_argument("--reason", default="unspecified")
    c.set_defaults(func=_revoke)
    c = cmd("crl", f"re-sign the CRL (valid {pki.CRL_DAYS} days; the broker refuses all once expired)")
    c.set_defaults(func=_crl)
    c = cmd("list", "certificates in the directory: name, CN, expiry, revoked")
    c.set_defaults(func=_list)


def _ca(args: argparse.Namespace) -> pki.CaFiles:
    ca = pki.CaFiles(cert=args.dir / "ca.crt", key=args.dir / "ca.key")
    if not (ca.cert.exists() and ca.key.exists()):
        raise pki.PkiError(f"no CA in {args.dir} (ca.crt and ca.key); create it with `onekey pki init`")
    return ca


def _init(args: argparse.Namespace) -> int:
    ca = pki.create_ca(args.dir, args.name)
    if not pki.crl_path(ca).exists():
        pki.write_crl(ca)
    print(f"CA {ca.cert} (expires {pki.expires(ca.cert):%Y-%m-%d}); CRL {pki.crl_path(ca)}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    ca = _ca(args)
    if args.client:
        files = pki.issue_client(ca, args.dir, args.client, args.days)
    else:
        files = pki.issue_server(ca, args.dir, args.server, args.host, args.days)
    print(f"{files.cert} (key {files.key}, expires {pki.expires(files.cert):%Y-%m-%d})")
    return 0


def _leaf(args: argparse.Namespace) -> pki.CertFiles:
    name = args.name
    return pki.CertFiles(ca=args.dir / "ca.crt", cert=args.dir / f"{name}.crt", key=args.dir / f"{name}.key")


def _renew(args: argparse.Namespace) -> int:
    files = pki.renew(_ca(args), _leaf(args), args.days)
    print(f"{files.cert} renewed (expires {pki.expires(files.cert):%Y-%m-%d}); the old pair is "
          f"{files.cert.name}.old: revoke it once every peer uses the new one")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if (args.name is None) == (args.cert is None):
        raise pki.PkiError("give --name or --cert")
    cert = args.cert if args.cert is not None else _leaf(args).cert
    entry = pki.revoke(_ca(args), cert, args.reason)
    print(f"revoked {entry.cn} (serial {entry.serial:x}) at {entry.at}; CRL {pki.crl_path(_ca(args))}")
    print("reload the centre broker so that it refuses it now: systemctl reload mosquitto")
    return 0


def _crl(args: argparse.Namespace) -> int:
    path = pki.write_crl(_ca(args))
    print(f"CRL re-signed: {path} (valid {pki.CRL_DAYS} days)")
    return 0


def _list(args: argparse.Namespace) -> int:
    ca = _ca(args)
    revoked = {r.serial for r in pki.revoked_list(ca)}
    for path in sorted(args.dir.glob("*.crt")):
        cert = pki.load_cert(path)
        state = "revoked" if cert.serial_number in revoked else "valid"
        cn = pki.common_name(cert)
        print(f"{path.stem}\tCN={cn}\texpires {cert.not_valid_after_utc:%Y-%m-%d}\t{state}")
    return 0

