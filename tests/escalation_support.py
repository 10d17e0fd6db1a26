"""Fakes for the escalation chain's unit tests: the modem, the household cards, the live hub
and the timeline (a table of the test's own), and one household card."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from centre import escalation_policy as ep
from centre.escalation import HouseholdInfo, ModemStatus, SendFailed

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC = 11月15日 06:13 in China

TIMELINE_TABLE = (
    "CREATE TABLE t_timeline (id INTEGER PRIMARY KEY, alarm TEXT, at INTEGER, kind TEXT,"
    " actor TEXT, detail TEXT)"
)


@dataclass
class FakeModem:
    sent: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, SendFailed] = field(default_factory=dict)
    state: str = "ok"
    ref: int = 0

    def status(self) -> ModemStatus:
        return ModemStatus(self.state)

    async def send(self, number: str, text: str) -> list[int]:
        if self.state in ("gone", "absent"):
            raise SendFailed("gone", "the modem is gone", gone=True)
        if number in self.fail:
            exc = self.fail[number]
            if exc.gone:
                self.state = "gone"
            raise exc
        self.sent.append((number, text))
        self.ref = (self.ref + 1) % 256
        return [self.ref]

    def to(self) -> list[str]:
        return [n for n, _ in self.sent]


@dataclass
class FakeContacts:
    cards: dict[str, HouseholdInfo] = field(default_factory=dict)

    async def household(self, db: aiosqlite.Connection, household_id: str) -> HouseholdInfo | None:
        return self.cards.get(household_id)


@dataclass
class FakeHub:
    changes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, topic: str, data: dict[str, Any]) -> None:
        self.changes.append((topic, data))


async def fake_timeline(
    db: aiosqlite.Connection, alarm_id: str, at: int, kind: str, actor: str, detail: dict[str, Any]
) -> None:
    await db.execute(
        "INSERT INTO t_timeline (alarm, at, kind, actor, detail) VALUES (?,?,?,?,?)",
        (alarm_id, at, kind, actor, json.dumps(detail, ensure_ascii=False)),
    )


CARD = HouseholdInfo(
    id="h-001",
    name="张秀英",
    address="东头3号",
    village="李家村",
    group="二组",
    contacts=[
        ep.Contact("family", "张伟", "13800000003", "儿子"),
        ep.Contact("doctor", "赵医生", "13800000005"),
        ep.Contact("leader", "李明", "13800000001"),
        ep.Contact("family", "张丽", "+86 138 0000 0004", "女儿"),
        ep.Contact("grid", "王芳", "13800000002"),
    ],
)
LEADER, GRID, SON, DAUGHTER, DOCTOR = (
    "13800000001", "13800000002", "13800000003", "+86 138 0000 0004", "13800000005"
)


