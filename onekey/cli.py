"""The `onekey` command line: one entry point, a subcommand per job.

Each top-level command's module is imported only when that command runs (or its own --help is
asked for): `onekey gateway run` on a Pi must not load the centre's web app, the demo's harness
or the provisioning tools (docs/performance.md, "Gateway memory"). `onekey --help` lists every
command from the table below without importing any of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from transport.keys import KeyFileError

# Top-level command -> (the module whose add_commands(sub) registers it, its one-line help).
# The help here is what `onekey --help` shows; the module's own parser replaces the entry when
# the command is used. Order: as listed by `onekey --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "gateway": ("gateway.cli", "the village gateway service and its device registry"),
    "centre": ("centre.cli", "the township centre service, its keys and gateways"),
    "demo": (
        "onekey.demo",
        "run a demo village on loopback: brokers, centre, gateway, firmware buttons and speakers",
    ),
    "sim": ("onekey.sim", "press or inspect a simulated button or speaker"),
    "provision": ("provisioning.cli", "provision boards over USB serial (technician)"),
    "enrol": ("provisioning.cli", "enrol this gateway at its centre: keys, TLS, pinned centre key"),
    "vboard": ("onekey.vboard", "a virtual board: MicroPython on a pseudo-terminal"),
    "vmodem": ("onekey.vmodem", "a virtual GSM modem (AT commands, SMS) on a pseudo-terminal"),
    "cap": ("onekey.cap", "CAP 1.2 XML: check, import into the centre, export"),
    "install": ("onekey.install", "set this machine up to run the gateway or the centre (root)"),
    "pki": ("onekey.pki", "the centre broker's CA: issue, renew, revoke (CRL)"),
}
# Errors whose message is the whole answer (printed as `onekey: error: ...`, exit 2), by the
# module that defines them; looked up only in modules already imported, since an error of a
# module never imported cannot have been raised.
_ERROR_MODULES = ("gateway.cli", "centre.cli", "provisioning.cli")
_ERROR_CLASSES = (("onekey.install", "InstallError"), ("transport.pki", "PkiError"))


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The top-level command named in `argv`, skipping the global options; None if none is."""
    skip = False
    for tok in argv:
        if skip:
            skip = False
            continue
        if tok == "--":
            return None
        if tok.startswith("-"):
            # `--log-level LEVEL` (or an abbreviation argparse accepts) takes the next word.
            if "=" not in tok and len(tok) > 2 and "--log-level".startswith(tok):
                skip = True
            continue
        return tok if tok in COMMANDS else None
    return None


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the full sub-parsers of `commands` (default: every command) and, for the
    others, an entry with their help only, so that every command is listed and named in errors."""
    wanted = set(COMMANDS) if commands is None else set(commands) & set(COMMANDS)
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
    modules = {COMMANDS[name][0] for name in wanted}
    # In the table's order, so that `onekey --help` lists the commands the same way whichever
    # were built in full; a module may register more than one (provisioning.cli: provision,
    # enrol).
    for name, (modname, helptext) in COMMANDS.items():
        if name in sub.choices:
            continue
        if modname in modules:
            importlib.import_module(modname).add_commands(sub)
        else:
            sub.add_parser(name, help=helptext)
    return parser


def _known_errors() -> tuple[type[Exception], ...]:
    known: list[type[Exception]] = [KeyFileError]
    for modname in _ERROR_MODULES:
        mod = sys.modules.get(modname)
        known.extend(getattr(mod, "ERRORS", ()))
    for modname, cls in _ERROR_CLASSES:
        mod = sys.modules.get(modname)
        if mod is not None:
            known.append(getattr(mod, cls))
    return tuple(known)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen_command(args_list)
    parser = build_parser([chosen] if chosen else [])
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    func: Any = args.func
    try:
        rc: int = func(args)
    except Exception as exc:
        if isinstance(exc, _known_errors()):
            print(f"onekey: error: {exc}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
