"""A board on a serial port, end to end: provision it, press it (or hear from it), see the
press at the gateway and at the centre, acknowledge it, revoke the board and see it refused
by the broker and by the gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from harness.simdevice import send_command
from harness.stack import LocalStack
from hil_tests.conftest import Target
from provisioning.board import Board
from provisioning.devconfig import CONFIG, parse_existing
from provisioning.flow import STEPS, Options, Summary, provision
from provisioning.gwadmin import GatewayAdmin
from provisioning.ports import open_port
from provisioning.progress import Progress
from provisioning.rawrepl import RawRepl
from tests.refusal import broker_refuses, gateway_refuses
from tests.support import wait_for

HOUSEHOLD = "h-hil"


def centre(stack: LocalStack, device: str, kind: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = stack.api("GET", f"/api/alarms?kind={kind}&limit=1000")
    return [r for r in rows if r["device"] == device]


def press(target: Target, s: Summary, capsys: pytest.CaptureFixture[str]) -> None:
    if target.virtual:
        assert s.sim_port is not None
        send_command(s.sim_port, "press 150", timeout=10)
        return
    with capsys.disabled():
        print(f"\n>>> press the ALARM button on the board now ({target.press_timeout:g} s)")


def board_config(port: str) -> dict[str, Any]:
    """config.json, read over the raw REPL (the firmware is interrupted for it)."""
    repl = RawRepl(open_port(port), port)
    try:
        repl.enter_raw()
        existing = parse_existing(Board(repl).read_file(CONFIG))
    finally:
        repl.close()
    assert existing is not None, "the board has no config.json"
    return existing.data


def test_board_is_provisioned_pressed_seen_and_revoked(
    target: Target, stack: LocalStack, admin: GatewayAdmin, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1. provision (the self-test press is a test at the gateway and the centre); a person
    # at a real board sees the progress and is asked to press TEST
    with capsys.disabled():
        s = provision(
            Options(
                port=target.port, role=target.role, household=HOUSEHOLD, admin=admin,
                wifi_ssid=target.wifi_ssid, wifi_psk=target.wifi_psk,
                broker_host=target.broker_host, press_timeout=target.press_timeout,
            ),
            Progress(STEPS, quiet=target.virtual),
        )
        if not target.virtual:
            print("\n" + s.render())
    assert s.passed, s.render()
    rec = admin.device(s.device_id)
    assert rec is not None and rec["enabled"] and rec["hw_id"] == s.hw_id and rec["last_seen"]
    if target.role == "button":
        tests = centre(stack, s.device_id, "test")
        assert [(t["state"], t["household"]) for t in tests] == [("test", HOUSEHOLD)]

        # 2. a press: stored at the gateway, at the centre as an open alarm
        stored_before = stack.gateway_metrics().get("counts", {}).get("stored_alarm", 0)
        press(target, s, capsys)
        wait = 15.0 if target.virtual else target.press_timeout
        alarms = asyncio.run(wait_for(lambda: centre(stack, s.device_id, "alarm"), wait))
        assert [(a["household"], a["gw"], a["state"]) for a in alarms] == [
            (HOUSEHOLD, stack.gateway_id, "open")
        ]
        asyncio.run(wait_for(  # metrics.json is rewritten every half second
            lambda: stack.gateway_metrics().get("counts", {}).get("stored_alarm", 0) > stored_before, 5
        ))

        # 3. staff acknowledge it; the acknowledgement reaches the board
        stack.api("POST", f"/api/alarms/{alarms[0]['id']}/ack", {"by": "hil", "note": "test"})
        if target.virtual and s.sim_port is not None:
            port = s.sim_port

            def shows_acked() -> bool:
                import json

                return bool(json.loads(send_command(port, "status"))["led"] == "acked")

            asyncio.run(wait_for(shows_acked, 15))

    # 4. revoke: the broker refuses the board's login, the gateway its messages
    assert admin.revoke(s.device_id)["revoked"]
    cfg = board_config(target.port)
    why = asyncio.run(broker_refuses(stack, cfg["mqtt"]["user"], cfg["mqtt"]["password"]))
    assert "not authorised" in why or "password" in why
    asyncio.run(gateway_refuses(stack, s.device_id, bytes.fromhex(cfg["key"])))
    rec = admin.device(s.device_id)
    assert rec is not None and not rec["enabled"]
