"""`onekey cap ...`: CAP 1.2 XML in and out of the centre.

    onekey cap check FILE.xml                 # would the centre take it? (no centre needed)
    onekey cap import FILE.xml --by NAME      # POST it to the centre: it is broadcast
    onekey cap export BROADCAST_ID            # a broadcast as CAP 1.2 XML

`import` and `export` talk to the centre's HTTP API (`--api`, default $ONEKEY_CENTRE_API or
http://127.0.0.1:8080) with a staff API token (`--token-file`, else $ONEKEY_TOKEN; make one
with `onekey centre user token create`); `export --config centre.toml` reads the centre's
database instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_API = "http://127.0.0.1:8080"
TIMEOUT_S = 30.0


class CapCommandError(Exception):
    """The centre could not be reached, or refused the request; the message says why."""


def add_commands(sub: Any) -> None:
    c = sub.add_parser("cap", help="CAP 1.2 XML: check, import into the centre, export")
    csub = c.add_subparsers(dest="cap_cmd", required=True, metavar="COMMAND")
    api_help = f"the centre's HTTP API (default $ONEKEY_CENTRE_API or {DEFAULT_API})"
    token_help = ("file holding a staff API token (default: the token in $ONEKEY_TOKEN); "
                  "`onekey centre user token create` makes one")

    check = csub.add_parser("check", help="check that the centre would take a CAP alert")
    check.add_argument("file", type=Path, metavar="FILE.xml")
    check.add_argument("--language", help="the <info> to use when the alert has several")
    _import_options(check)
    check.set_defaults(func=_check)

    imp = csub.add_parser("import", help="send a CAP alert as a broadcast through the centre")
    imp.add_argument("file", type=Path, metavar="FILE.xml")
    imp.add_argument("--by", required=True, help="your name: the staff member who sends it")
    imp.add_argument("--language", help="the <info> to use when the alert has several")
    _import_options(imp)
    imp.add_argument("--confirm-extreme", action="store_true",
                     help="confirm a broadcast of severity Extreme to a whole village")
    imp.add_argument("--api", default=None, help=api_help)
    imp.add_argument("--token-file", type=Path, default=None, help=token_help)
    imp.set_defaults(func=_import)

    exp = csub.add_parser("export", help="print a broadcast as a CAP 1.2 alert")
    exp.add_argument("broadcast_id", metavar="BROADCAST_ID")
    src = exp.add_mutually_exclusive_group()
    src.add_argument("--api", default=None, help=api_help)
    src.add_argument("--config", type=Path, help="read the centre's database (centre.toml)")
    exp.add_argument("--token-file", type=Path, default=None, help=token_help + " (with --api)")
    exp.add_argument("-o", "--output", type=Path, help="write to this file, not stdout")
    exp.set_defaults(func=_export)


def _import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--valid-for", type=int, metavar="SECONDS", dest="valid_for_s",
                   help="how long it plays, for an alert without expires")
    p.add_argument("--text", help="what speakers say instead of the alert's text (at most 500 "
                   "characters), for an alert whose text is longer")


def _api(args: argparse.Namespace) -> str:
    return (args.api or os.environ.get("ONEKEY_CENTRE_API") or DEFAULT_API).rstrip("/")


def _token(args: argparse.Namespace) -> str:
    """The staff API token the centre's API needs: from --token-file, else $ONEKEY_TOKEN."""
    if args.token_file is not None:
        token = _read(args.token_file).decode("utf-8", "replace").strip()
        if not token:
            raise CapCommandError(f"token file {args.token_file} is empty")
        return token
    token = os.environ.get("ONEKEY_TOKEN", "").strip()
    if not token:
        raise CapCommandError(
            "the centre's API needs a staff API token: --token-file FILE or $ONEKEY_TOKEN "
            "(`onekey centre user token create USER --name NAME --config centre.toml`)"
        )
    return token


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CapCommandError(f"cannot read {path}: {exc.strerror}") from None


def _request(
    url: str, token: str, data: bytes | None = None, ctype: str | None = None
) -> bytes:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Authorization", f"Bearer {token}")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        try:
            parsed = json.loads(detail)["detail"]
            detail = parsed if isinstance(parsed, str) else json.dumps(parsed, ensure_ascii=False)
        except (ValueError, KeyError, TypeError):
            pass
        raise CapCommandError(f"the centre refused it (HTTP {exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CapCommandError(
            f"cannot reach the centre at {url}: {reason}; is it running? (see --api)"
        ) from None


def _fail(exc: Exception) -> int:
    print(f"onekey: error: {exc}", file=sys.stderr)
    return 2


def _check(args: argparse.Namespace) -> int:
    from centre.broadcast import BroadcastError
    from centre.cap import CapError, from_cap_xml, to_broadcast
    from centre.store import now_ms

    try:
        fields = from_cap_xml(_read(args.file), language=args.language)
        bc = to_broadcast(
            fields, by="check", centre_id="centre", now=now_ms(),
            valid_for_s=args.valid_for_s, text=args.text,
        )
    except (CapError, BroadcastError) as exc:
        print(f"{args.file}: refused: {exc}", file=sys.stderr)
        return 1
    except CapCommandError as exc:
        return _fail(exc)
    villages = ", ".join(a.village for a in bc.area)
    print(
        f"{args.file}: ok: {fields['id']} {bc.msg_type} {bc.status}, {bc.urgency}/{bc.severity}/"
        f"{bc.certainty} (priority {bc.priority}), villages {villages}, "
        f"{len(bc.text)} characters, repeat {bc.repeat}"
    )
    if fields["joined"]:
        print(f"joined: <info> blocks {', '.join(str(n) for n in fields['joined'])}")
    for part in fields["parts"]:
        print(f"part: {part['part']} {part['length']} characters")
    for note in fields["notes"]:
        print(f"note: {note}")
    return 0


def _import(args: argparse.Namespace) -> int:
    query = {"by": args.by}
    if args.language:
        query["language"] = args.language
    if args.valid_for_s is not None:
        query["valid_for_s"] = str(args.valid_for_s)
    if args.text:
        query["text"] = args.text
    if args.confirm_extreme:
        query["confirm_extreme"] = "true"
    url = f"{_api(args)}/api/broadcasts/cap?{urllib.parse.urlencode(query)}"
    try:
        answer = json.loads(_request(url, _token(args), _read(args.file), "application/cap+xml"))
    except CapCommandError as exc:
        return _fail(exc)
    gateways = ", ".join(g["gw"] for g in answer.get("gateways", [])) or "none"
    print(f"{answer['id']}: {answer['state']} (gateways {gateways})")
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        if args.config is not None:
            xml = asyncio.run(_export_from_db(args.config, args.broadcast_id))
        else:
            bc_id = urllib.parse.quote(args.broadcast_id, safe="")
            xml = _request(f"{_api(args)}/api/broadcasts/{bc_id}/cap", _token(args)).decode("utf-8")
    except CapCommandError as exc:
        return _fail(exc)
    if args.output is None:
        sys.stdout.write(xml)
        return 0
    try:
        args.output.write_text(xml, encoding="utf-8")
    except OSError as exc:
        return _fail(CapCommandError(f"cannot write {args.output}: {exc.strerror}"))
    return 0


async def _export_from_db(config_path: Path, bc_id: str) -> str:
    from centre.bcstore import BroadcastStore
    from centre.cap import cap_fields, to_cap_xml
    from centre.config import ConfigError, load_config
    from centre.store import Store, StoreError

    try:
        cfg = load_config(config_path)
        async with Store(cfg.db_path) as store:
            found = await BroadcastStore(store).get(bc_id)
    except (ConfigError, StoreError) as exc:
        raise CapCommandError(str(exc)) from None
    if found is None:
        raise CapCommandError(f"no broadcast {bc_id!r} in {cfg.db_path}")
    return to_cap_xml(cap_fields(found.bc))
