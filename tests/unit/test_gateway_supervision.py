"""Device supervision at the gateway: the pure rules (grace, last will, hysteresis, restart
grace; gateway.suprules) and the supervisor over a real store: what it raises goes to the
outbox as a signed-ready §6.2.1 event, with its state, and a restart remembers who is lost."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gateway import suprules
from gateway.config import ConfigError, SupervisionConfig, _supervision
from gateway.forwarder import event_body
from gateway.metrics import Metrics
from gateway.registry import Device, Registry
from gateway.store import Store
from gateway.supervision import Supervisor, profile
from protocol import uplink

MARKS = suprules.Marks(low_pct=20, ok_pct=30, will_grace_s=10.0)
T0 = 1_767_225_600_000


def watch(lost_after_s: int = 60, mains: bool = True) -> suprules.Watch:
    w = suprules.Watch(lost_after_ms=lost_after_s * 1000, mains=mains)
    w.start(T0)
    return w


# -- the pure rules


def test_default_mains_profile_is_lost_after_three_missed_heartbeats_within_t5() -> None:
    cfg = SupervisionConfig()
    dev = Device("spk-1", b"k" * 32, "speaker", "v", "h", True)
    prof = profile(cfg, dev)
    assert (prof.period_s, prof.lost_after_s) == (20, 60)
    # 60 s at the gateway + one deadline check + forwarding stays well inside T5's 90 s.
    assert prof.lost_after_s + cfg.check_s < 90


def test_battery_profile_uses_the_device_check_in_period_and_margin() -> None:
    cfg = SupervisionConfig()
    default = Device("btn-1", b"k" * 32, "button", "v", "h", True, power="battery")
    own = Device("btn-2", b"k" * 32, "button", "v", "h", True, power="battery", period_s=600)
    assert profile(cfg, default).lost_after_s == 2 * 3600 + 300
    assert profile(cfg, own).lost_after_s == 2 * 600 + 300


def test_device_is_lost_only_after_its_grace_and_once() -> None:
    w = watch(60)
    assert suprules.tick(w, T0 + 59_999) == []
    assert suprules.tick(w, T0 + 60_000) == ["lost"]
    assert suprules.tick(w, T0 + 120_000) == []
    assert w.state == suprules.LOST


def test_heard_moves_the_deadline_and_restores_a_lost_device() -> None:
    w = watch(60)
    assert suprules.heard(w, T0 + 50_000, MARKS) == []
    assert suprules.tick(w, T0 + 100_000) == []
    assert suprules.tick(w, T0 + 110_000) == ["lost"]
    assert suprules.heard(w, T0 + 115_000, MARKS) == ["restored"]
    assert w.state == suprules.OK and w.last_seen == T0 + 115_000


def test_last_will_of_a_mains_device_makes_it_lost_sooner() -> None:
    w = watch(60)
    suprules.will(w, T0 + 5_000, MARKS)
    assert suprules.tick(w, T0 + 14_999) == []
    assert suprules.tick(w, T0 + 15_000) == ["lost"]


def test_heard_after_a_last_will_cancels_it() -> None:
    w = watch(60)
    suprules.will(w, T0 + 5_000, MARKS)
    suprules.heard(w, T0 + 8_000, MARKS)  # it reconnected
    assert suprules.tick(w, T0 + 20_000) == []


def test_battery_button_last_will_or_clean_sleep_is_not_a_loss() -> None:
    w = watch(7500, mains=False)
    suprules.will(w, T0 + 5_000, MARKS)
    assert suprules.tick(w, T0 + 3_600_000) == []


def test_low_battery_is_raised_once_and_cleared_only_above_the_ok_mark() -> None:
    w = watch()
    seen = [suprules.heard(w, T0 + i, MARKS, bat=b, status=True)
            for i, b in enumerate([50, 21, 20, 15, 15, 25, 30, 18, 31, 29, 20])]
    assert seen == [
        [], [], ["low_battery"], [], [], [], [], [], ["battery_ok"], [], ["low_battery"],
    ]


def test_fault_and_tamper_raise_and_clear_with_their_heartbeat_fields() -> None:
    w = watch()
    assert suprules.heard(w, T0, MARKS, fault="tts", status=True) == ["fault"]
    assert suprules.heard(w, T0 + 1, MARKS, fault="tts", status=True) == []
    assert suprules.heard(w, T0 + 2, MARKS, fault="tts", tamper=True, status=True) == ["tamper"]
    assert suprules.heard(w, T0 + 3, MARKS, status=True) == ["fault_clear", "tamper_clear"]
    # An event or report is no heartbeat: it says nothing of faults.
    suprules.heard(w, T0 + 4, MARKS, fault="flash", status=True)
    assert suprules.heard(w, T0 + 5, MARKS) == []
    assert w.fault == "flash"


def test_heartbeat_fields_are_read_strictly() -> None:
    assert suprules.battery(15) == 15
    assert [suprules.battery(v) for v in (101, -1, "15", True, 1.5)] == [None] * 5
    assert suprules.fault_code("tts") == "tts"
    assert [suprules.fault_code(v) for v in ("", "x" * 17, "a b", 3)] == [None] * 4
    assert suprules.tamper_flag(1) and not suprules.tamper_flag(True)
    assert not suprules.tamper_flag(0)


def test_start_gives_a_fresh_grace() -> None:
    w = watch(60)
    w.last_seen = T0 - 3_600_000  # last heard an hour before the gateway started again
    w.start(T0)
    assert suprules.tick(w, T0 + 59_000) == []


def test_supervision_settings_are_checked() -> None:
    assert _supervision({"mains_period_s": 10, "will_grace_s": 2}, "w").mains_period_s == 10
    for bad in (
        {"mains_period_s": 0},
        {"battery_margin_s": -1},
        {"will_grace_s": 0.0},
        {"low_battery_pct": 30, "battery_ok_pct": 30},
        {"mains_periods": 3},
    ):
        with pytest.raises(ConfigError):
            _supervision(bad, "w")


# -- the supervisor over a real store


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def registry_with(*devices: Device) -> Registry:
    reg = Registry()
    reg.devices = {d.id: d for d in devices}
    return reg


SPK = Device("spk-1", b"k" * 32, "speaker", "v-1", "h-1", True)
BTN = Device("btn-1", b"k" * 32, "button", "v-1", "h-2", True, power="battery", period_s=60)


async def outbox(store: Store) -> list[dict[str, object]]:
    return [event_body("gw-1", ev) for ev in await store.outbox(0, 100)]


async def settle(sup: Supervisor) -> None:
    """Until every event the supervisor queued is committed."""
    if sup._tasks:
        await asyncio.wait(set(sup._tasks))


async def test_supervisor_stores_lost_and_restored_as_outbox_events(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        sup = Supervisor(SupervisionConfig(), store, registry_with(SPK), Metrics(), clock=clock)
        await sup.init()
        sup.heard(SPK, "hb", {"fw": "spk-1.0.0"})
        clock.now += 61_000
        sup.check()
        clock.now += 5_000
        sup.heard(SPK, "hb", {"fw": "spk-1.0.0"})
        await settle(sup)
        bodies = await outbox(store)
        assert [b["sup"]["what"] for b in bodies] == ["seen", "lost", "restored"]  # type: ignore[index]
        first = bodies[1]
        assert first["id"] == "gw-1:svc-sup:2" and first["device"] == uplink.SUP_SOURCE
        assert (first["village"], first["household"]) == ("v-1", "h-1")
        assert first["sup"] == {
            "what": "lost", "subject": "spk-1", "role": "speaker", "power": "mains",
            "period_s": 20, "lost_after_s": 60, "last_seen": T0, "fw": "spk-1.0.0",
        }
        # What the gateway sends is what the centre accepts.
        assert uplink.parse_event(json.loads(json.dumps(first)), "gw-1").sup is not None
    finally:
        await store.close()


async def test_gateway_restart_remembers_who_is_lost_and_gives_the_rest_a_fresh_grace(
    tmp_path: Path,
) -> None:
    clock = Clock()
    reg = registry_with(SPK, BTN)
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        sup = Supervisor(SupervisionConfig(), store, reg, Metrics(), clock=clock)
        await sup.init()
        sup.heard(SPK, "hb", {})
        sup.heard(BTN, "hb", {"bat": 15})
        clock.now += 61_000
        sup.check()  # the speaker is lost; the button (180 s + 300 s grace) is not
        await settle(sup)
    finally:
        await store.close()
    before = [b["sup"]["what"] for b in supervision_events(tmp_path)]  # type: ignore[index]
    assert before == ["seen", "seen", "low_battery", "lost"]

    clock.now += 3_600_000  # the gateway was down an hour
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        sup = Supervisor(SupervisionConfig(), store, reg, Metrics(), clock=clock)
        await sup.init()
        assert sup.watches["spk-1"].state == suprules.LOST
        assert sup.watches["btn-1"].low_battery
        sup.check()
        clock.now += 400_000  # inside the button's fresh grace of 420 s
        sup.check()
        sup.heard(BTN, "hb", {"bat": 14})  # still low: not raised again
        await settle(sup)
        assert [b["sup"]["what"] for b in await outbox(store)][4:] == []  # type: ignore[index]
        clock.now += 500_000
        sup.check()
        await settle(sup)
        assert [b["sup"]["what"] for b in await outbox(store)][4:] == ["lost"]  # type: ignore[index]
    finally:
        await store.close()


def supervision_events(path: Path) -> list[dict[str, object]]:
    """The supervision events in the file, read apart from any running store."""
    conn = sqlite3.connect(path / "gw.db")
    try:
        rows = conn.execute(
            "SELECT detail FROM events WHERE kind='supervision' ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [{"sup": json.loads(r[0])} for r in rows]


async def test_after_a_restart_last_seen_is_the_newest_heartbeat_not_the_last_event(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        await store.db.execute(
            "INSERT INTO devices(id, key_hex, role, village, household, created_at)"
            " VALUES ('spk-1', ?, 'speaker', 'v-1', 'h-1', 0)", ("00" * 32,)
        )
        sup = Supervisor(SupervisionConfig(), store, registry_with(SPK), Metrics(), clock=clock)
        await sup.init()
        sup.heard(SPK, "hb", {})  # `seen`, saved with last_seen T0
        await settle(sup)
        await store.record_heartbeat("spk-1", 5, "{}", T0 + 40_000)  # a later heartbeat
    finally:
        await store.close()
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        sup = Supervisor(SupervisionConfig(), store, registry_with(SPK), Metrics(), clock=clock)
        await sup.init()
        assert sup.watches["spk-1"].last_seen == T0 + 40_000
    finally:
        await store.close()


async def test_revoked_device_is_no_longer_supervised(tmp_path: Path) -> None:
    clock = Clock()
    reg = registry_with(SPK)
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        sup = Supervisor(SupervisionConfig(), store, reg, Metrics(), clock=clock)
        await sup.init()
        sup.heard(SPK, "hb", {})
        reg.devices = {}
        clock.now += 120_000
        sup.check()
        await settle(sup)
        assert [b["sup"]["what"] for b in await outbox(store)] == ["seen"]  # type: ignore[index]
    finally:
        await store.close()


async def test_heartbeat_lists_devices_last_heard_taking_turns(tmp_path: Path) -> None:
    clock = Clock()
    devs = [Device(f"btn-{i}", b"k" * 32, "button", "v-1", "h", True) for i in range(5)]
    store = Store(tmp_path / "gw.db")
    await store.start()
    try:
        sup = Supervisor(SupervisionConfig(), store, registry_with(*devs), Metrics(), clock=clock)
        await sup.init()
        assert sup.seen_batch(2) == ()
        for i, d in enumerate(devs):
            clock.now = T0 + i
            sup.heard(d, "hb", {"bat": 50 + i, "fw": "btn-1.0.0"})
        first = sup.seen_batch(2)
        assert first[0] == uplink.DeviceSeen("btn-0", T0, 50, "btn-1.0.0")
        rounds = [first, sup.seen_batch(2), sup.seen_batch(2)]
        assert [[s.id for s in r] for r in rounds] == [
            ["btn-0", "btn-1"], ["btn-2", "btn-3"], ["btn-4", "btn-0"],
        ]
        await settle(sup)
    finally:
        await store.close()


def test_device_add_records_the_power_profile_and_its_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.config import render_config
    from onekey.cli import main as onekey_main

    (tmp_path / "village-broker.pass").write_text("pw\n")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(render_config(
        gateway_id="gw-1", village="v-1", state_dir=tmp_path, centre_public_key="00" * 32,
        village_host="127.0.0.1", village_port=1883, centre_host="127.0.0.1", centre_port=8883,
    ) + "\n[supervision]\nbattery_period_s = 1800\n")
    base = ["gateway", "device", "add", "--config", str(cfg), "--household", "h-1"]
    assert onekey_main([*base, "--id", "btn-1", "--power", "battery"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["power"], out["period_s"]) == ("battery", 1800)
    assert onekey_main([*base, "--id", "btn-2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["power"], out["period_s"]) == ("mains", 20)
    conn = sqlite3.connect(tmp_path / "gateway.db")
    try:
        rows = conn.execute("SELECT id, power, period_s FROM devices ORDER BY id").fetchall()
    finally:
        conn.close()
    assert rows == [("btn-1", "battery", 1800), ("btn-2", "mains", 20)]
