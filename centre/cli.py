"""`onekey centre ...` commands."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path
from typing import Any

import uvicorn

from centre.api import create_app
from centre.config import CentreConfig, ConfigError, load_config
from centre.enrol import EnrolError, centre_public_key, enrol_gateway, init_centre
from centre.live import LiveHub
from centre.store import StoreError
from transport import backup
from transport.keys import load_private_key

# Errors the top-level command line prints as one line (no traceback).
ERRORS: tuple[type[Exception], ...] = (ConfigError, EnrolError, StoreError, backup.BackupError)

log = logging.getLogger("onekey.centre")


def add_commands(sub: Any) -> None:
    c = sub.add_parser("centre", help="the township centre service, its keys and gateways")
    csub = c.add_subparsers(dest="centre_cmd", required=True, metavar="COMMAND")

    run = csub.add_parser("run", help="run the centre (HTTP API, web page, ingest) until stopped")
    run.add_argument("--config", type=Path, required=True, help="centre TOML config file")
    run.set_defaults(func=_run)

    init = csub.add_parser("init", help="create the centre's signing key and a config file")
    init.add_argument("--dir", type=Path, required=True, help="directory for key, config, db")
    init.add_argument("--http-host", default="127.0.0.1")
    init.add_argument("--http-port", type=int, default=8080)
    init.add_argument("--broker-host", default="127.0.0.1")
    init.add_argument("--broker-port", type=int, default=8883)
    init.add_argument("--ca", default="ca.pem", help="CA certificate (relative to --dir)")
    init.add_argument("--cert", default="centre-cert.pem", help="centre client certificate")
    init.add_argument("--key", default="centre-key.pem", help="centre client certificate key")
    init.set_defaults(func=_init)

    enrol = csub.add_parser("enrol-gateway", help="enrol a gateway or replace its public key")
    enrol.add_argument("--config", type=Path, required=True)
    enrol.add_argument("--id", required=True, help="gateway id, e.g. gw-demo")
    enrol.add_argument("--public-key", required=True, help="gateway's Ed25519 public key (hex)")
    enrol.add_argument("--name", default=None, help="a readable name, e.g. the village's")
    enrol.add_argument(
        "--village",
        action="append",
        default=None,
        metavar="VILLAGE",
        help="a village id it serves (repeat for each; broadcasts to it go through this "
        "gateway); without --village, the villages enrolled before are kept",
    )
    enrol.set_defaults(func=_enrol)

    bk = csub.add_parser(
        "backup", help="copy the centre's database while it runs, keeping the newest copies"
    )
    bk.add_argument("--config", type=Path, required=True)
    bk.add_argument("--dir", type=Path, default=None,
                    help="backup directory (default: a backups directory beside the database)")
    bk.add_argument("--keep", type=int, default=backup.DEFAULT_KEEP,
                    help=f"how many copies to keep (default {backup.DEFAULT_KEEP})")
    bk.set_defaults(func=_backup)
    rs = csub.add_parser(
        "restore", help="replace the centre's database with a backup (the centre must be stopped)"
    )
    rs.add_argument("--config", type=Path, required=True)
    rs.add_argument("file", type=Path, help="a copy made by `onekey centre backup`")
    rs.set_defaults(func=_restore)

    show = csub.add_parser("show-key", help="print the centre's public key (gateways pin it)")
    show.add_argument("--config", type=Path, required=True)
    show.set_defaults(func=_show_key)


class _CentreServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, live: LiveHub) -> None:
        super().__init__(config)
        self.live = live

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn waits for responses in progress before it stops; a console's event stream
        # never ends by itself, so it is ended first (the pages show their banner and retry).
        self.live.close()
        await super().shutdown(sockets)


def uvicorn_server(config: CentreConfig, **kwargs: Any) -> uvicorn.Server:
    """A uvicorn server for the centre app; `await server.serve()` runs it in this loop."""
    app = create_app(config, **kwargs)
    return _CentreServer(
        uvicorn.Config(
            app,
            host=config.http_host,
            port=config.http_port,
            lifespan="on",
            log_config=None,  # keep the caller's logging set-up
            access_log=False,
            # Requests still running this long after a stop are cut rather than holding it.
            timeout_graceful_shutdown=5,
        ),
        app.state.live,
    )


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    load_private_key(cfg.key_path)  # fail here, with a clear message, not inside the server
    server = uvicorn_server(cfg)
    server.run()
    return 0 if server.started else 1


def _init(args: argparse.Namespace) -> int:
    path, pub = init_centre(
        args.dir,
        http_host=args.http_host,
        http_port=args.http_port,
        broker_host=args.broker_host,
        broker_port=args.broker_port,
        ca=args.ca,
        cert=args.cert,
        tls_key=args.key,
    )
    print(f"config: {path}")
    print(f"centre public key: {pub}")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    gw = enrol_gateway(args.config, args.id, args.public_key, args.name, args.village)
    villages = ", ".join(gw.villages) or "none yet (its heartbeat may list them)"
    print(f"enrolled gateway {gw.id} key {gw.public_key} villages {villages}")
    return 0


# What `onekey centre restore` accepts: a database with the centre's tables.
CENTRE_DB = backup.DbKind(
    "centre",
    frozenset({"gateways", "alarms", "downlinks", "broadcasts"}),
    "Ctrl-C or SIGTERM to `onekey centre run`, or stop the service that runs it",
)


def _backup(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    where = args.dir if args.dir is not None else cfg.db_path.parent / "backups"
    result = backup.backup(cfg.db_path, where, CENTRE_DB, keep=args.keep)
    print(f"backup {result.path} bytes={result.size} duration_s={result.duration_s:.3f} "
          f"removed={len(result.removed)}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    result = backup.restore(cfg.db_path, args.file, CENTRE_DB)
    aside = f"; the database it replaced is kept at {result.aside}" if result.aside else ""
    print(f"restored {result.db} from {args.file}{aside}")
    return 0


def _show_key(args: argparse.Namespace) -> int:
    print(centre_public_key(args.config))
    return 0
