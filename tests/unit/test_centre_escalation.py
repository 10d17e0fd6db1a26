"""The escalation engine on a real SQLite store with a fake clock, a fake modem, fake contacts
and a fake timeline: every step is driven by `tick()`, no sleeps."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from centre import escalation_policy as ep
from centre.escalation import DeliveryReport, Escalation, HouseholdInfo, IncomingSms, SendFailed
from centre.escalation_view import view as escalation_view
from centre.store import Store, now_ms
from harness.fakegateway import wait_until
from protocol.uplink import Event
from tests.escalation_support import (
    CARD,
    DAUGHTER,
    DOCTOR,
    GRID,
    LEADER,
    SON,
    T0,
    TIMELINE_TABLE,
    FakeContacts,
    FakeHub,
    FakeModem,
    fake_timeline,
)


class Killed(Exception):
    pass


@dataclass
class Rig:
    store: Store
    modem: FakeModem
    hub: FakeHub
    contacts: FakeContacts
    now: list[int]
    engine: Escalation

    def at(self, seconds: float) -> None:
        self.now[0] = T0 + int(seconds * 1000)

    async def alarm(self, counter: int, kind: str = "alarm", household: str = "h-001") -> str:
        ev = Event(f"gw-1:btn-1:{counter}", "gw-1", counter, kind, "btn-1", counter, "v-1",
                   household, T0)
        await self.store.insert_event(ev, self.now[0])
        return ev.id

    async def timeline(self, alarm: str) -> list[tuple[str, str, dict[str, Any]]]:
        async with self.store.transaction(write=False) as db:
            async with db.execute(
                "SELECT kind, actor, detail FROM t_timeline WHERE alarm = ? ORDER BY id", (alarm,)
            ) as cur:
                return [(r[0], r[1], json.loads(r[2])) for r in await cur.fetchall()]

    async def kinds(self, alarm: str) -> list[str]:
        return [k for k, _, _ in await self.timeline(alarm)]

    async def chain_state(self, alarm: str) -> str | None:
        async with self.store.transaction(write=False) as db:
            async with db.execute("SELECT state FROM escalations WHERE alarm = ?", (alarm,)) as cur:
                row = await cur.fetchone()
        return None if row is None else str(row[0])

    def restart(self) -> Escalation:
        self.engine = make_engine(self.store, self.contacts, self.modem, self.hub, self.now)
        return self.engine


def make_engine(
    store: Store, contacts: FakeContacts, modem: FakeModem, hub: FakeHub, now: list[int],
    **policy: Any,
) -> Escalation:
    defaults = ep.Policy(t1_s=60, t2_s=60, rounds=2, **policy)
    return Escalation(store, contacts, modem, fake_timeline, hub, defaults, lambda: now[0])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = Store(tmp_path / "centre.db")
    await store.open()
    async with store.transaction() as db:
        await db.execute(TIMELINE_TABLE)
    now = [T0]
    contacts = FakeContacts({"h-001": CARD})
    modem, hub = FakeModem(), FakeHub()
    try:
        yield Rig(store, modem, hub, contacts, now, make_engine(store, contacts, modem, hub, now))
    finally:
        await store.close()


async def test_chain_starts_only_after_t1_without_acknowledgement(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(59.9)
    await rig.engine.tick()
    assert rig.modem.sent == [] and await rig.chain_state(alarm) is None
    rig.at(60)
    await rig.engine.tick()
    assert await rig.chain_state(alarm) == "running"
    assert (await rig.kinds(alarm))[:1] == ["escalation_started"]


async def test_leader_and_grid_worker_get_the_first_sms_together(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    assert rig.modem.to() == [LEADER, GRID]
    assert await rig.kinds(alarm) == ["escalation_started", "sms_sent", "sms_sent"]
    text = rig.modem.sent[0][1]
    for part in ("李明", "张秀英", "李家村二组", "东头3号", "11月15日 06:13", "回复1或“收到”"):
        assert part in text


async def test_after_t2_the_chain_goes_to_family_in_order_then_doctor_and_loops(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    rig.at(119.9)
    await rig.engine.tick()
    assert rig.modem.to() == [LEADER, GRID]  # T2 has not passed
    rig.at(120)
    await rig.engine.tick()
    assert rig.modem.to()[2:] == [SON]
    rig.at(180)
    await rig.engine.tick()
    assert rig.modem.to()[3:] == [DAUGHTER]
    rig.at(240)
    await rig.engine.tick()
    assert rig.modem.to()[4:] == [DOCTOR]
    rig.at(300)  # round 2 starts again from the nearest people
    await rig.engine.tick()
    assert rig.modem.to()[5:] == [LEADER, GRID]
    for t in (360, 420, 480):
        rig.at(t)
        await rig.engine.tick()
    assert len(rig.modem.sent) == 10 and await rig.chain_state(alarm) == "running"
    rig.at(540)  # rounds=2: nobody confirmed, staff are told
    await rig.engine.tick()
    assert len(rig.modem.sent) == 10 and await rig.chain_state(alarm) == "exhausted"
    kinds = await rig.kinds(alarm)
    assert kinds.count("sms_timeout") == 8 and kinds[-1] == "escalation_exhausted"


async def test_confirmation_reply_stops_the_chain_and_names_who_confirmed(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    rig.at(120)
    await rig.engine.tick()  # the son is asked
    rig.at(130)
    result = await rig.engine.on_reply("+8613800000003", " 收到！")
    assert result["confirms"] is True and result["alarm"] == alarm
    assert await rig.chain_state(alarm) == "confirmed"
    kind, actor, detail = (await rig.timeline(alarm))[-1]
    assert (kind, actor, detail["name"], detail["relation"]) == ("sms_confirmed", "张伟", "张伟", "儿子")
    rig.at(500)
    await rig.engine.tick()
    assert rig.modem.to() == [LEADER, GRID, SON]
    assert (alarm, "sms_confirmed") in [
        (d["alarm"], d["event"]) for t, d in rig.hub.changes if t == "escalation"
    ]


async def test_a_late_reply_still_confirms_while_the_chain_runs(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    rig.at(120)
    await rig.engine.tick()  # the leader's T2 is over; the son is asked
    result = await rig.engine.on_reply("0086 13800000001", "1")
    assert result["confirms"] is True and await rig.chain_state(alarm) == "confirmed"


async def test_other_replies_are_recorded_but_do_not_confirm(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    result = await rig.engine.on_reply("13800000002", "谁啊？")
    assert result["confirms"] is False and await rig.chain_state(alarm) == "running"
    kind, _, detail = (await rig.timeline(alarm))[-1]
    assert kind == "sms_reply" and detail["text"] == "谁啊？"
    stranger = await rig.engine.on_reply("13999999999", "1")
    assert stranger == {"alarm": None, "confirms": False}


async def test_staff_acknowledgement_stops_the_chain(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    await rig.store.ack_event(alarm, "Wang", "", rig.now[0], lambda ev: ("t", b"p"))
    rig.at(200)
    await rig.engine.tick()
    assert rig.modem.to() == [LEADER, GRID]
    assert await rig.chain_state(alarm) == "stopped"
    kind, _, detail = (await rig.timeline(alarm))[-1]
    assert kind == "escalation_stopped" and detail["reason"] == "acked"


async def test_tests_cancelled_and_acknowledged_alarms_never_escalate(rig: Rig) -> None:
    test = await rig.alarm(1, "test")
    acked = await rig.alarm(2)
    await rig.store.ack_event(acked, "Wang", "", rig.now[0], lambda ev: ("t", b"p"))
    cancelled = await rig.alarm(3)
    await rig.store.insert_event(
        Event("gw-1:btn-1:4", "gw-1", 4, "cancel", "btn-1", 4, "v-1", "h-001", T0,
              ref=cancelled), rig.now[0]
    )
    rig.at(3600)
    await rig.engine.tick()
    assert rig.modem.sent == []
    for alarm in (test, acked, cancelled):
        assert await rig.chain_state(alarm) is None


async def test_a_failed_send_moves_to_the_next_contact_at_once(rig: Rig) -> None:
    rig.modem.fail[SON] = SendFailed("cms_error", "+CMS ERROR: 38 (network out of order)")
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    rig.at(120)
    await rig.engine.tick()
    assert rig.modem.to() == [LEADER, GRID, DAUGHTER]  # no T2 wait after the son's failure
    _, _, detail = next(r for r in await rig.timeline(alarm) if r[0] == "sms_failed")
    assert detail["name"] == "张伟" and "CMS ERROR: 38" in detail["error"]


async def test_a_gone_modem_raises_the_alert_and_the_chain_waits_for_it(rig: Rig) -> None:
    rig.modem.fail[LEADER] = SendFailed("gone", "the modem disappeared", gone=True)
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    assert rig.modem.sent == []  # the grid worker's SMS waits for the modem
    kinds = await rig.kinds(alarm)
    assert kinds == ["escalation_started", "sms_failed", "modem_gone"]
    gone = {"state": "gone", "detail": "", "can_send": False, "alert": True}
    assert ("modem", gone) in rig.hub.changes
    rig.at(500)
    await rig.engine.tick()
    assert rig.modem.sent == [] and await rig.chain_state(alarm) == "running"
    rig.modem.state = "ok"
    await rig.engine.tick()
    assert rig.modem.to() == [GRID]  # the rest of the step, once the modem is back
    assert "modem_back" in await rig.kinds(alarm)


async def test_a_restart_mid_send_resumes_without_sending_twice(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    # The centre dies after committing the grid worker's SMS as `sending`, before the modem
    # returned: simulated by a send that never completes, then a new engine on the same file.
    sent_before_kill: list[str] = []

    async def dies(number: str, text: str) -> list[int]:
        sent_before_kill.append(number)
        if number == GRID:
            raise Killed  # stands for the process dying mid-call
        return [1]

    rig.modem.send = dies  # type: ignore[method-assign]
    with pytest.raises(Killed):
        await rig.engine.tick()
    assert sent_before_kill == [LEADER, GRID]
    del rig.modem.send
    engine = rig.restart()
    await engine.recover()
    await engine.tick()
    assert rig.modem.sent == []  # neither the leader's nor the grid worker's again
    kinds = await rig.kinds(alarm)
    assert kinds == ["escalation_started", "sms_sent", "sms_unknown"]
    rig.at(120)  # the timer came from the database
    await engine.tick()
    assert rig.modem.to() == [SON]
    assert (await engine.on_reply(GRID, "收到"))["confirms"] is True  # may have got it: counts


async def test_a_restart_after_t2_passed_moves_on_at_once(rig: Rig) -> None:
    await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    rig.at(400)  # the centre was down for over five minutes
    engine = rig.restart()
    await engine.recover()
    await engine.tick()
    assert rig.modem.to() == [LEADER, GRID, SON]


async def test_delivery_reports_are_shown(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    await rig.engine.on_report(1, True)
    await rig.engine.on_report(2, False)
    rows = [(k, d["name"]) for k, _, d in await rig.timeline(alarm) if k.startswith("sms_")]
    assert rows[-2:] == [("sms_delivered", "李明"), ("sms_undelivered", "王芳")]


async def test_consume_routes_replies_and_reports(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()

    async def incoming() -> AsyncIterator[IncomingSms | DeliveryReport]:
        yield DeliveryReport(1, True, LEADER)
        yield IncomingSms("+8613800000001", "好的")

    await rig.engine.consume(incoming())
    assert await rig.chain_state(alarm) == "confirmed"
    assert "sms_delivered" in await rig.kinds(alarm)


async def test_household_override_and_no_contacts(rig: Rig) -> None:
    rig.contacts.cards["h-002"] = HouseholdInfo("h-002", "", "", "", "", [])
    async with rig.store.transaction() as db:
        await ep.put_override(db, "household:h-001", {"t1_s": 10.0, "order": ["doctor"]}, T0, "a")
        await ep.put_override(db, "village:v-1", {"t1_s": 30.0}, T0, "a")
    first = await rig.alarm(1)
    other = await rig.alarm(2, household="h-002")
    rig.at(10)
    await rig.engine.tick()
    assert rig.modem.to() == [DOCTOR] and await rig.chain_state(other) is None
    rig.at(30)
    await rig.engine.tick()
    assert await rig.chain_state(other) == "no_contacts"
    assert await rig.kinds(other) == ["escalation_not_started"]
    assert await rig.chain_state(first) == "running"


async def test_a_disabled_policy_never_sends(rig: Rig) -> None:
    async with rig.store.transaction() as db:
        await ep.put_override(db, "township", {"enabled": False}, T0, "a")
    alarm = await rig.alarm(1)
    rig.at(600)
    await rig.engine.tick()
    assert rig.modem.sent == [] and await rig.chain_state(alarm) == "disabled"


async def test_a_starting_modem_holds_the_chain_without_an_alert(rig: Rig) -> None:
    rig.modem.state = "starting"
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    assert rig.modem.sent == [] and await rig.kinds(alarm) == ["escalation_started"]
    rig.modem.state = "ok"
    await rig.engine.tick()
    assert rig.modem.to() == [LEADER, GRID]


async def test_an_absent_modem_is_an_alert_on_the_chain(rig: Rig) -> None:
    rig.modem.state = "absent"
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    assert rig.modem.sent == [] and await rig.kinds(alarm) == ["escalation_started", "modem_gone"]


async def test_a_second_press_of_the_household_waits_while_its_chain_runs(rig: Rig) -> None:
    first = await rig.alarm(1)
    second = await rig.alarm(2)
    rig.at(60)
    await rig.engine.tick()
    assert rig.modem.to() == [LEADER, GRID]  # once, not once per alarm
    assert await rig.chain_state(second) is None
    await rig.engine.on_reply(LEADER, "1")
    await rig.engine.tick()
    assert await rig.chain_state(first) == "confirmed"
    assert await rig.chain_state(second) == "running"


async def test_each_sms_keeps_when_its_step_t2_ends(rig: Rig) -> None:
    alarm = await rig.alarm(1)
    rig.at(60)
    await rig.engine.tick()
    async with rig.store.transaction(write=False) as db:
        view = await escalation_view(db, alarm, ep.Policy())
    assert view is not None
    assert [m["due_at"] for m in view["messages"]] == [T0 + 120_000] * 2
    assert view["step_due"] == T0 + 120_000


async def test_the_task_stops_when_cancelled_even_as_it_is_kicked(rig: Rig) -> None:
    rig.engine.period_s = 30
    task = asyncio.create_task(rig.engine.run())
    await wait_until(lambda: bool(rig.hub.changes))  # its first look publishes the modem state
    await asyncio.sleep(0.2)  # the rest of that look: it now waits for a kick or the period
    rig.engine.kick()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done and task.cancelled()


async def test_the_task_wakes_when_a_step_t2_ends_not_only_at_its_period(rig: Rig) -> None:
    engine = Escalation(rig.store, rig.contacts, rig.modem, fake_timeline, rig.hub,
                        ep.Policy(t1_s=60, t2_s=1), now_ms, period_s=30)
    rig.now[0] = now_ms() - 60_000  # received a minute ago: T1 is over
    await rig.alarm(1)
    task = asyncio.create_task(engine.run())
    try:
        await wait_until(lambda: len(rig.modem.sent) == 2)
        started = time.monotonic()
        await wait_until(lambda: len(rig.modem.sent) == 3, within=5)
        assert 0.5 < time.monotonic() - started < 2.5  # T2 (1 s), far from the 30 s period
    finally:
        task.cancel()
        await asyncio.wait([task])
