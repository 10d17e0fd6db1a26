"""The escalation engine's protocols met by the real parts: the modem's errors become
SendFailed with a reason (gone ones flagged), its events become the engine's, and household
cards give contacts in calling order."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import modem
from centre import households
from centre.escalation import DeliveryReport, IncomingSms, ModemChanged, SendFailed
from centre.escalation_wiring import CardContacts, ModemSender, modem_events
from centre.store import Store


class FakeDevice:
    def __init__(self, exc: Exception | None = None, events: list[Any] | None = None) -> None:
        self.exc = exc
        self.state = "ok"
        self.detail = "registered"
        self._events = events or []

    async def send_sms(self, number: str, text: str) -> modem.SendResult:
        if self.exc is not None:
            raise self.exc
        return modem.SendResult(number, (7, 8), 2)

    async def events(self) -> AsyncIterator[modem.Event]:
        for ev in self._events:
            yield ev


def sender(device: FakeDevice | None) -> ModemSender:
    return ModemSender(device)  # type: ignore[arg-type]


async def test_a_sent_sms_gives_its_references() -> None:
    assert await sender(FakeDevice()).send("13800000001", "x") == [7, 8]
    assert sender(FakeDevice()).status().to_json()["state"] == "ok"


@pytest.mark.parametrize(
    ("exc", "reason", "gone"),
    [
        (modem.ModemGone("port vanished"), "gone", True),
        (modem.NoNetwork("not registered"), "no_network", False),
        (modem.SimMissing("no SIM"), "sim_missing", False),
        (modem.CmsError(38), "cms_error", False),
        (modem.ModemTimeout("slow"), "timeout", False),
        (modem.PduError("bad number"), "bad_number", False),
        (modem.CommandError("AT+CMGS", None), "modem_error", False),
    ],
)
async def test_modem_errors_become_send_failed_with_a_reason(
    exc: Exception, reason: str, gone: bool
) -> None:
    with pytest.raises(SendFailed) as info:
        await sender(FakeDevice(exc)).send("13800000001", "x")
    assert (info.value.reason, info.value.gone) == (reason, gone)


async def test_no_modem_configured_is_absent_and_says_how_to_add_one() -> None:
    s = sender(None)
    assert s.status().state == "absent" and s.status().alert
    with pytest.raises(SendFailed, match=r"\[modem\] section") as info:
        await s.send("13800000001", "x")
    assert info.value.gone


async def test_modem_events_become_the_engine_s_and_only_final_reports_count() -> None:
    now = dt.datetime.now(dt.UTC)
    device = FakeDevice(events=[
        modem.IncomingSms("+8613800000001", "收到", now, 1),
        modem.DeliveryReport(7, "13800000001", 0x30, False, False, (7,), False),  # still trying
        modem.DeliveryReport(7, "13800000001", 0, True, True, (7,), True),
        modem.StateChange("gone", "unplugged"),
    ])
    got = [ev async for ev in modem_events(device)]  # type: ignore[arg-type]
    assert got == [
        IncomingSms("+8613800000001", "收到"),
        DeliveryReport(7, True, "13800000001"),
        ModemChanged(),
    ]


async def test_card_contacts_come_in_calling_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "centre.db")
    await store.open()
    try:
        body = households.HouseholdIn(
            village="v-1", group="二组", name="张秀英", address="东头3号",
            contacts=[
                households.ContactIn(kind="family", name="张伟", relation="儿子", phone="13800000003"),
                households.ContactIn(kind="leader", name="李明", phone="13800000001"),
            ],
        )
        async with store.transaction() as db:
            await households.save_cards(db, [households.card_from("h-001", body, 1)])
            info = await CardContacts().household(db, "h-001")
            missing = await CardContacts().household(db, "h-404")
    finally:
        await store.close()
    assert info is not None and missing is None
    assert (info.name, info.village, info.group, info.address) == ("张秀英", "v-1", "二组", "东头3号")
    assert [(c.kind, c.name, c.relation) for c in info.contacts] == [
        ("leader", "李明", ""), ("family", "张伟", "儿子")
    ]
