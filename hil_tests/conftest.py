"""Hardware in the loop: a board on a serial port, a whole local system around it.

    pytest hil_tests --port /dev/ttyUSB0 --wifi-ssid S --wifi-psk P --broker-host 192.168.1.20
    pytest hil_tests                  # a virtual board (`onekey vboard`), as CI runs it

With --port the village broker listens on every interface and the board dials --broker-host
(this machine's address on the board's Wi-Fi). Without --port a virtual board is started; if
that is impossible (no MicroPython unix port, no pseudo-terminals) the run FAILS: it never
passes by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.stack import LocalStack
from harness.vboard import VBoardProcess
from provisioning.gwadmin import GatewayAdmin, load_token


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hil", "hardware-in-the-loop (hil_tests)")
    g.addoption("--port", default=None, help="a board's serial port; without it, a virtual board")
    g.addoption("--role", default="button", choices=("button", "speaker"))
    g.addoption("--wifi-ssid", default=None, help="Wi-Fi the real board joins")
    g.addoption("--wifi-psk", default=None)
    g.addoption("--broker-host", default=None,
                help="this machine's address as the real board dials it")
    g.addoption("--press-timeout", type=float, default=120.0,
                help="real board: seconds to wait for a person to press")


@dataclass(frozen=True)
class Target:
    port: str
    virtual: bool
    role: str
    wifi_ssid: str | None
    wifi_psk: str | None
    broker_host: str | None
    press_timeout: float
    vboard: VBoardProcess | None


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    opt = request.config.getoption
    port = opt("--port")
    vb: VBoardProcess | None = None
    if port:
        if not os.path.exists(port):
            pytest.fail(f"--port {port}: no such serial port (`onekey provision list`)", pytrace=False)
        if not (opt("--wifi-ssid") and opt("--broker-host")):
            pytest.fail("a real board needs --wifi-ssid, --wifi-psk and --broker-host", pytrace=False)
    else:
        vb = VBoardProcess(tmp_path_factory.mktemp("hil") / "vboard", name=f"hil-{os.getpid()}")
        try:
            port = vb.start()
        except Exception as exc:  # any reason at all must fail the run, loudly
            vb.stop()
            pytest.fail(f"no --port given and no virtual board could be started: {exc}", pytrace=False)
    try:
        yield Target(port, vb is not None, opt("--role"), opt("--wifi-ssid"), opt("--wifi-psk"),
                     opt("--broker-host"), opt("--press-timeout"), vb)
    finally:
        if vb is not None:
            vb.stop()


@pytest.fixture(scope="session")
def stack(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root: Path = tmp_path_factory.mktemp("hil-stack")
    s = LocalStack(
        root / "stack", resend_after_s=2.0,
        village_listen="127.0.0.1" if target.virtual else "0.0.0.0",
        device_broker_host=None if target.virtual else target.broker_host,
    )
    s.setup()
    try:
        s.start()
        s.wait_admin()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def admin(stack: LocalStack) -> GatewayAdmin:
    return GatewayAdmin(stack.admin_url, load_token(stack.admin_token_file))
