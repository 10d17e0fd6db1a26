"""The `onekey` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from transport.keys import KeyFileError


def build_parser() -> argparse.ArgumentParser:
    from centre.cli import add_commands as centre_commands
    from gateway.cli import add_commands as gateway_commands
    from onekey.cap import add_commands as cap_commands
    from onekey.demo import add_commands as demo_commands
    from onekey.install import add_commands as install_commands
    from onekey.pki import add_commands as pki_commands
    from onekey.sim import add_commands as sim_commands
    from onekey.vboard import add_commands as vboard_commands
    from onekey.vmodem import add_commands as vmodem_commands
    from provisioning.cli import add_commands as provisioning_commands

    parser = argparse.ArgumentParser(
        prog="onekey",
        description="One-key alarm and village broadcast system: gateway, centre, demo, tools.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("ONEKEY_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default INFO, or $ONEKEY_LOG_LEVEL)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gateway_commands(sub)
    centre_commands(sub)
    demo_commands(sub)
    sim_commands(sub)
    provisioning_commands(sub)
    vboard_commands(sub)
    vmodem_commands(sub)
    cap_commands(sub)
    install_commands(sub)
    pki_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    import centre.cli
    import gateway.cli
    import provisioning.cli
    from onekey.install import InstallError
    from transport.pki import PkiError

    known: tuple[type[Exception], ...] = (
        *gateway.cli.ERRORS,
        *getattr(centre.cli, "ERRORS", ()),
        *provisioning.cli.ERRORS,
        KeyFileError,
        InstallError,
        PkiError,
    )
    try:
        rc: int = args.func(args)
    except known as exc:
        print(f"onekey: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
