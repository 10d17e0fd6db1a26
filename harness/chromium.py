"""Debian's chromium as the console's tests and benchmark drive it (through Playwright, with
`executable_path`: no browser is downloaded). scripts/setup.sh installs it for the test extra."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("ONEKEY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A console left open on a desk sounds an alarm without anyone clicking first; headless,
    # there is nobody to click.
    "--autoplay-policy=no-user-gesture-required",
]


class ChromiumMissing(RuntimeError):
    pass


def require_chromium() -> str:
    """The browser's path; ChromiumMissing, saying how to install it, if it is not there."""
    if not os.access(CHROMIUM, os.X_OK):
        raise ChromiumMissing(
            f"{CHROMIUM} not found: the console's browser tests drive Debian's chromium; "
            "run `bash scripts/setup.sh` (apt-get install chromium) or set ONEKEY_CHROMIUM"
        )
    return CHROMIUM
