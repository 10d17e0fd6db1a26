"""The alarm button firmware, end to end: the real firmware on the MicroPython unix port (96K
heap), a real Mosquitto on loopback, and a gateway stand-in that checks every message with the
shared codec and answers with acks when told to."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_fw import okproto
from harness import port32
from harness.simdevice import SimButton

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

pytestmark = pytest.mark.integration

DEV = "btn-0001"
KEYS = {DEV: fw.KEY}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[fw.Mosquitto]:
    with fw.mosquitto(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def gw(broker: fw.Mosquitto) -> Iterator[fw.Responder]:
    with fw.responder(broker.port, KEYS) as r:
        yield r


def last_is(state: str) -> Any:
    return lambda st: st["last"] == state


def alarm_of(st: dict[str, Any]) -> dict[str, Any]:
    msg = fw.newest(st, "alarm")
    assert msg is not None, st
    return msg


def flash_outbox(button: SimButton) -> dict[str, bytes]:
    d = button.flash_dir / "ob"
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_press_shows_sending_stored_received_acked_in_turn(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    with fw.sim_button(tmp_path / "dev", broker.port, hb_interval_s=1) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.press(150)
        st = button.wait_for(last_is("sending"), 2)
        assert st["led"] == "sending" and st["outbox"] == 1
        gw.wait(lambda s: any(m.kind == "alarm" for m in s), 5)
        alarm = gw.events("alarm")[0]
        c = alarm.body["c"]
        assert alarm_of(st)["c"] == c and alarm.body["d"] == DEV and "up" in alarm.body
        expected = {"stored": "stored", "received": "received", "acked": "acked"}
        for state, pattern in expected.items():
            gw.ack(DEV, c, state)
            st = button.wait_for(last_is(state), 5)
            assert st["led"] == pattern, st
        assert st["outbox"] == 0
        button.wait_for(lambda st: st["led_on"] == "green", 1)  # steady green
        assert not (button.flash_dir / "ob" / f"{c}.0").exists()
        # Heartbeats: QoS 0, every hb_interval_s, with the status fields the centre watches.
        hbs = gw.wait(lambda s: sum(m.kind == "hb" for m in s) >= 2, 5)
        hb = [m for m in hbs if m.kind == "hb"][-1].body
        assert {"bat", "mv", "rssi", "fw", "ob", "up"} <= set(hb)
        button.set_battery(12)
        gw.wait(lambda s: s[-1].kind == "hb" and s[-1].body["bat"] == 12, 5)
    assert gw.rejected == []


def test_without_stored_ack_the_button_shows_failed_keeps_resending_and_recovers(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    with fw.sim_button(tmp_path / "dev", broker.port, ack_timeout_s=1, resend_s=1) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.press()
        st = button.wait_for(last_is("failed"), 4)
        assert st["led"] == "failed" and st["led_on"] in ("red", None)
        copies = gw.wait(lambda s: sum(m.kind == "alarm" for m in s) >= 3, 5)
        alarms = [m for m in copies if m.kind == "alarm"]
        assert len({m.payload for m in alarms}) == 1, "a re-send is the same bytes"
        gw.ack(DEV, alarms[0].body["c"], "stored")
        st = button.wait_for(last_is("stored"), 5)
        assert st["led"] == "stored"
        # Stored entries are no longer re-sent (resend_s is 1).
        n = len(gw.events("alarm"))
        time.sleep(1.5)
        assert len(gw.events("alarm")) == n


def test_counter_is_never_reused_across_a_power_cut(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    gw.auto = ("stored", "received")
    with fw.sim_button(tmp_path / "dev", broker.port, hb_interval_s=1) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.test_press()
        button.wait_for(lambda st: st["led"] == "test_ok", 5)
        gw.wait(lambda s: sum(m.kind == "hb" for m in s) >= 2, 5)
        before = {m.body["c"] for m in gw.seen}
        button.kill()
        button.start()
        button.wait_for(lambda st: st["connected"], 5)
        button.test_press()
        button.wait_for(lambda st: st["led"] == "test_ok", 5)
        after = {m.body["c"] for m in gw.seen} - before
        assert after and min(after) > max(before)
        # No counter was ever used for two different messages.
        by_counter: dict[int, set[bytes]] = {}
        for m in gw.seen:
            by_counter.setdefault(m.body["c"], set()).add(m.payload)
        assert all(len(p) == 1 for p in by_counter.values())
    # The power cut left the broker to publish the last will.
    assert "offline" in gw.wills


def test_unsent_messages_survive_a_power_cut_and_are_resent_with_the_same_bytes(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    with fw.sim_button(tmp_path / "dev", broker.port) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.press()
        gw.wait(lambda s: any(m.kind == "alarm" for m in s), 5)
        alarm = gw.events("alarm")[0]
        # The Wi-Fi drops; a test press is written to flash but cannot be sent.
        button.set_network(False)
        button.wait_for(lambda st: not st["connected"], 5)
        button.test_press()
        st = button.wait_for(lambda st: fw.newest(st, "test") is not None, 2)
        test_c = fw.newest(st, "test")["c"]  # type: ignore[index]
        assert not gw.events("test")
        on_flash = flash_outbox(button)
        assert set(on_flash) == {f"{alarm.body['c']}.0", f"{test_c}.0"}
        assert on_flash[f"{alarm.body['c']}.0"] == alarm.topic.encode() + b"\n" + alarm.payload
        button.kill()  # power cut
        mark = len(gw.seen)
        button.start()
        st = button.wait_for(lambda st: st["connected"], 5)
        assert st["outbox"] == 2 and st["last"] == "sending"
        # After a reconnect the outbox goes out in counter order, the very same bytes, one
        # message at a time (§5.6): the test press only once the alarm is stored.
        gw.wait(lambda s: any(m.kind != "hb" for m in s[mark:]), 5)
        resent = next(m for m in gw.seen[mark:] if m.kind != "hb")
        assert resent.kind == "alarm"
        assert resent.payload == alarm.payload  # same counter, same MAC
        assert not any(m.kind == "test" for m in gw.seen[mark:])
        gw.ack(DEV, resent.body["c"], "stored")
        gw.wait(lambda s: any(m.kind == "test" for m in s[mark:]), 5)
        test_msg = next(m for m in gw.seen[mark:] if m.kind == "test")
        assert on_flash[f"{test_c}.0"] == test_msg.topic.encode() + b"\n" + test_msg.payload
        gw.ack(DEV, test_msg.body["c"], "stored")
        # Both acks are written to flash one after the other: wait for the second write too.
        want = sorted([f"{alarm.body['c']}.1", f"{test_c}.1"])
        deadline = time.monotonic() + 5
        while sorted(flash_outbox(button)) != want and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(flash_outbox(button)) == want
        gw.ack(DEV, alarm.body["c"], "acked")
        gw.ack(DEV, test_c, "received")
        button.wait_for(lambda st: st["outbox"] == 0, 5)
        assert flash_outbox(button) == {}


def test_acks_sent_while_the_button_is_away_arrive_when_it_returns(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    # Clean session off (§2.2): the broker keeps the subscription and queues QoS 1 acks.
    with fw.sim_button(tmp_path / "dev", broker.port) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.press()
        gw.wait(lambda s: any(m.kind == "alarm" for m in s), 5)
        c = gw.events("alarm")[0].body["c"]
        gw.ack(DEV, c, "stored")
        button.wait_for(last_is("stored"), 5)
        button.set_network(False)
        button.wait_for(lambda st: not st["connected"], 5)
        gw.ack(DEV, c, "received")
        gw.ack(DEV, c, "acked")
        assert button.status()["last"] == "stored"
        button.set_network(True)
        st = button.wait_for(last_is("acked"), 5)
        assert st["outbox"] == 0


def test_oversized_acks_are_acknowledged_dropped_counted_and_never_block_later_acks(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    with fw.sim_button(tmp_path / "dev", broker.port, hb_interval_s=1) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.press()
        gw.wait(lambda s: any(m.kind == "alarm" for m in s), 5)
        c = gw.events("alarm")[0].body["c"]
        # Larger than the button's receive buffer (640 bytes); more of them than Mosquitto
        # keeps in flight for one client (20 by default).
        for _ in range(30):
            gw.publish(okproto.topic_down(DEV), b"x" * 1000)
        gw.ack(DEV, c, "stored")
        button.wait_for(last_is("stored"), 10)
        st = button.wait_for(lambda st: st["oversized"] == 30, 5)
        assert st["bad_acks"] == 0 and st["errors"] == 0
        gw.wait(lambda s: any(m.kind == "hb" and m.body.get("ov") == 30 for m in s), 5)
        # Every one was PUBACKed: none is delivered again after a reboot.
        button.kill()
        button.start()
        button.wait_for(lambda st: st["connected"], 5)
        gw.ack(DEV, c, "received")
        st = button.wait_for(last_is("received"), 5)
        assert st["oversized"] == 0


def heartbeats(seen: list[fw.Seen], since: int = 0) -> list[fw.Seen]:
    return [m for m in seen[since:] if m.kind == "hb"]


def first_after(gw: fw.Responder, mark: int, timeout: float = 10.0) -> fw.Seen:
    """The first message the gateway stand-in saw after its `mark`-th."""
    return gw.wait(lambda s: len(s) > mark, timeout)[mark]


def test_after_a_reconnect_the_button_lists_what_it_waits_for_and_learns_the_acks_it_missed(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    # §4.3 against a gateway stand-in that answers heartbeats' ev as the gateway does.
    gw.sync = True
    with fw.sim_button(tmp_path / "dev", broker.port, hb_interval_s=1) as button:
        button.wait_for(lambda st: st["connected"], 5)
        # The heartbeat sent on connect carries ev even when nothing waits.
        first = gw.wait(lambda s: bool(heartbeats(s)), 5)[0]
        assert first.kind == "hb" and first.body["ev"] == []
        button.press()
        gw.wait(lambda s: any(m.kind == "alarm" for m in s), 5)
        c = gw.events("alarm")[0].body["c"]
        gw.ack(DEV, c, "stored")
        button.wait_for(last_is("stored"), 5)
        button.test_press()
        gw.wait(lambda s: any(m.kind == "test" for m in s), 5)
        t = gw.events("test")[0].body["c"]
        gw.ack(DEV, t, "stored")
        st = button.wait_for(lambda st: st["ev"] == [[c, "stored"], [t, "stored"]], 5)
        # Periodic heartbeats carry ev too while it is not empty.
        mark = len(gw.seen)
        gw.wait(lambda s: any(m.body.get("ev") == st["ev"] for m in heartbeats(s, mark)), 5)
        # Away from the broker; the acks sent meanwhile are lost on their way.
        button.set_network(False)
        button.wait_for(lambda st: not st["connected"], 5)
        gw.drop_acks = True
        gw.ack(DEV, c, "received")
        gw.ack(DEV, c, "acked", by="Wang")
        gw.ack(DEV, t, "received")
        gw.drop_acks = False
        mark = len(gw.seen)
        button.set_network(True)
        # Right after subscribing, before anything else: a heartbeat listing what it lacks.
        hb = first_after(gw, mark)
        assert hb.kind == "hb" and hb.body["ev"] == [[c, "stored"], [t, "stored"]]
        st = button.wait_for(lambda st: st["last"] == "acked" and st["ev"] == [], 5)
        assert fw.newest(st, "test")["state"] == "received"  # type: ignore[index]
        assert st["outbox"] == 0 and st["ev_drops"] == 0
        # Nothing left to ask: later heartbeats carry no ev.
        mark = len(gw.seen)
        seen = gw.wait(lambda s: len(heartbeats(s, mark)) >= 2, 5)
        assert "ev" not in heartbeats(seen, mark)[-1].body
    assert gw.rejected == []


def test_after_a_power_cut_the_button_asks_again_for_what_its_outbox_holds(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    gw.sync = True
    with fw.sim_button(tmp_path / "dev", broker.port) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.press()
        gw.wait(lambda s: any(m.kind == "alarm" for m in s), 5)
        c = gw.events("alarm")[0].body["c"]
        gw.ack(DEV, c, "stored")
        button.wait_for(last_is("stored"), 5)
        button.kill()
        gw.drop_acks = True
        gw.ack(DEV, c, "received")
        gw.ack(DEV, c, "acked")
        gw.drop_acks = False
        mark = len(gw.seen)
        button.start()
        # The list is rebuilt from the flash outbox, with the state the flash holds.
        hb = first_after(gw, mark)
        assert hb.kind == "hb" and hb.body["ev"] == [[c, "stored"]]
        st = button.wait_for(last_is("acked"), 5)
        assert st["ev"] == [] and st["outbox"] == 0


def test_the_list_of_messages_awaiting_their_final_state_keeps_the_newest_eight(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    with fw.sim_button(tmp_path / "dev", broker.port) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.set_network(False)
        button.wait_for(lambda st: not st["connected"], 5)
        for _ in range(9):
            button.test_press()
        st = button.wait_for(lambda st: len([m for m in st["recent"] if m["kind"] == "test"]) == 8, 5)
        newest8 = [m["c"] for m in st["recent"]]
        assert st["ev"] == [[c, "sending"] for c in newest8] and st["ev_drops"] == 1
        assert st["outbox"] == 9  # the outbox still holds and sends all nine
        mark = len(gw.seen)
        button.set_network(True)
        hb = first_after(gw, mark)
        assert hb.kind == "hb" and hb.body["ev"] == st["ev"]
        assert len(hb.payload) - 65 <= okproto.MAX_BODY
        gw.auto = ("stored",)  # one at a time (§5.6): each goes once the one before is stored
        gw.wait(lambda s: len({m.body["c"] for m in s if m.kind == "test"}) >= 9, 10)


def test_long_press_cancels_and_test_press_reaches_test_ok(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    gw.auto = ("stored", "received")
    with fw.sim_button(tmp_path / "dev", broker.port) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.press(150)
        st = button.wait_for(last_is("received"), 5)
        alarm_c = alarm_of(st)["c"]
        button.press(150)  # a second short press only replays the feedback
        st = button.status()
        assert [m["kind"] for m in st["recent"]] == ["alarm"] and st["led"] == "received"
        button.press(2100)  # a long press inside the window cancels
        gw.wait(lambda s: any(m.kind == "cancel" for m in s), 5)
        cancel = gw.events("cancel")[0]
        assert cancel.body["ref"] == alarm_c and cancel.body["c"] > alarm_c
        st = button.wait_for(lambda st: fw.newest(st, "cancel") is not None, 2)
        assert st["led"] == "cancelled"
        assert st["last"] == "received"  # the cancel does not erase the alarm
        button.test_press()
        gw.wait(lambda s: any(m.kind == "test" for m in s), 5)
        st = button.wait_for(lambda st: st["led"] == "test_ok", 5)
        assert fw.newest(st, "test")["state"] == "received"  # type: ignore[index]
        button.wait_for(lambda st: st["outbox"] == 1, 5)  # only the alarm waits for staff


def test_bad_forged_and_replayed_acks_change_nothing(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    with fw.sim_button(tmp_path / "dev", broker.port) as button:
        button.wait_for(lambda st: st["connected"], 5)
        button.press()
        gw.wait(lambda s: any(m.kind == "alarm" for m in s), 5)
        c = gw.events("alarm")[0].body["c"]
        stored = gw.ack(DEV, c, "stored")
        gw.ack(DEV, c, "received")
        button.wait_for(last_is("received"), 5)
        topic = okproto.topic_down(DEV)
        gw.publish(topic, stored)  # a replay: would move the state back
        gw.publish(topic, b"garbage")  # malformed
        _, forged = okproto.encode_ack(b"\x01" * 32, DEV, 1, c, "acked")
        gw.publish(topic, forged)  # wrong key
        gw.ack(DEV, c + 1000, "acked")  # a ref the device never sent
        st = button.wait_for(lambda st: st["bad_acks"] == 2 and st["stale_acks"] == 2, 5)
        assert st["last"] == "received" and st["led"] == "received"


def test_dead_broker_is_detected_and_the_link_comes_back(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    assert broker.proc is not None
    with fw.sim_button(tmp_path / "dev", broker.port, keepalive_s=2) as button:
        button.wait_for(lambda st: st["connected"], 5)
        os.killpg(broker.proc.pid, signal.SIGSTOP)  # the broker hangs: TCP stays open
        try:
            button.wait_for(lambda st: not st["connected"], 6)
        finally:
            os.killpg(broker.proc.pid, signal.SIGCONT)
        st = button.wait_for(lambda st: st["connected"] and st["connects"] >= 2, 10)
        # Wi-Fi loss and return: the link task notices and reconnects.
        button.set_network(False)
        button.wait_for(lambda st: not st["connected"], 5)
        button.set_network(True)
        st = button.wait_for(lambda st: st["connected"], 5)
        assert st["connects"] >= 3 and st["errors"] == 0


def test_a_lost_link_leaves_the_access_point_before_joining_again(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    with fw.sim_button(tmp_path / "dev", broker.port) as button:
        button.wait_for(lambda st: st["connected"], 5)
        assert button.send("net") == "1 0"  # joined the access point once, never left
        broker.stop()  # the link dies; connects fail until the broker is back
        button.wait_for(lambda st: not st["connected"], 5)
        broker.start()
        button.wait_for(lambda st: st["connected"] and st["connects"] >= 2, 20)
        joins, leaves = map(int, button.send("net").split())
        # Every lost link and failed connect left the access point, and the button joined it
        # again before each next connect (it is joined now).
        assert leaves >= 1 and joins == leaves + 1, (joins, leaves)


def test_press_reaches_stored_within_a_96k_heap(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder
) -> None:
    gw.auto = ("stored", "received", "acked")
    with fw.sim_button(tmp_path / "dev", broker.port, heapsize="96K", hb_interval_s=1) as button:
        assert "heapsize=96K" in button.command()
        button.wait_for(lambda st: st["connected"], 5)
        for _ in range(3):
            button.press(150)
            button.wait_for(last_is("acked"), 5)
            button.test_press()
            button.wait_for(lambda st: st["led"] == "test_ok", 5)
            button.press(2100)
            button.wait_for(lambda st: st["led"] == "cancelled", 5)
        st = button.wait_for(lambda st: st["outbox"] == 0, 5)
        assert st["errors"] == 0 and st["heap_free"] > 0
    assert "MemoryError" not in button.log_path.read_text()


# -- on a 32-bit build, as the firmware sits on an ESP32 (harness.port32, docs/firmware.md Heap)

# The modules as .mpy files on flash (docs/firmware.md, Flashing an ESP32) load their bytecode
# and names into the heap: the simulated button then needs 62K (at 56K it boots, but cannot
# build a status reply; at 58K and 60K it runs out within 50 alarms); this leaves a margin.
BUTTON_HEAP_MPY = "64K"


@pytest.fixture(scope="module")
def board_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return port32.board_image(tmp_path_factory.mktemp("board") / "flash")


def fifty_alarms(button: SimButton, gw: fw.Responder) -> tuple[int, int]:
    """Boots, raises 50 alarms (each acked up to acked); returns the free heap after boot and
    after the 50th."""
    booted = button.wait_for(lambda st: st["connected"], 10)
    for n in range(1, 51):
        button.press(150)
        gw.wait(lambda s, n=n: sum(m.kind == "alarm" for m in s) >= n, 5)
        button.wait_for(lambda st: st["last"] == "acked" and st["outbox"] == 0, 5)
    st = button.status()
    assert len(gw.events("alarm")) == 50 and len(st["recent"]) == 8
    assert st["errors"] == 0 and st["heap_free"] > 2048, st
    assert "MemoryError" not in button.log_path.read_text()
    return booted["heap_free"], st["heap_free"]


def test_button_records_50_alarms_on_a_32_bit_build_from_mpy_files(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder, board_image: Path
) -> None:
    mp32 = fw.micropython32_or_fail()
    gw.auto = ("stored", "received", "acked")
    with fw.sim_button(
        tmp_path / "dev", broker.port, heapsize=BUTTON_HEAP_MPY, micropython=mp32, firmware=board_image,
        hb_interval_s=1, cancel_window_s=0,  # every press a new alarm
    ) as button:  # fmt: skip
        assert button.command()[:3] == [mp32, "-X", f"heapsize={BUTTON_HEAP_MPY}"]
        boot, after = fifty_alarms(button, gw)
    print(f"button 32-bit .mpy {BUTTON_HEAP_MPY}: heap_free after boot {boot}, after 50 alarms {after}")


@pytest.fixture(scope="module")
def frozen32(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The 32-bit port with the firmware frozen in, and a flash holding only main.py."""
    return fw.frozen32_or_fail(), port32.main_only(tmp_path_factory.mktemp("frozen") / "flash")


def test_button_records_50_alarms_in_the_56k_heap_of_a_plain_esp32_with_the_firmware_frozen(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder, frozen32: tuple[str, Path]
) -> None:
    mp32, flash = frozen32
    assert sorted(p.name for p in flash.iterdir()) == ["main.py"]
    gw.auto = ("stored", "received", "acked")
    with fw.sim_button(
        tmp_path / "dev", broker.port, heapsize=port32.ESP32_HEAPSIZE, micropython=mp32, firmware=flash,
        hb_interval_s=1, cancel_window_s=0,  # every press a new alarm
    ) as button:  # fmt: skip
        assert button.command()[:3] == [mp32, "-X", "heapsize=56K"]
        boot, after = fifty_alarms(button, gw)
    print(f"button 32-bit frozen 56K: heap_free after boot {boot}, after 50 alarms {after}")
    assert after > 16 * 1024


def test_battery_button_wakes_by_a_press_and_raises_its_alarm_in_the_56k_heap_of_a_plain_esp32(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder, frozen32: tuple[str, Path]
) -> None:
    mp32, flash = frozen32
    gw.auto = ("stored", "received")
    with fw.sim_button(
        tmp_path / "dev", broker.port, heapsize=port32.ESP32_HEAPSIZE, micropython=mp32, firmware=flash,
        power="battery", checkin_s=600, awake_s=10, awake_after_alarm_s=2, retry_s=5,
        cancel_window_s=2,
    ) as button:  # fmt: skip
        booted = button.wait_for(lambda st: st.get("asleep") or st["connected"], 10)
        boot_free = booted.get("heap_free")
        button.wait_for(lambda st: bool(st.get("asleep")), 15)
        button.press(150)  # wakes it: a new boot, the alarm raised by the wake
        st = button.wait_for(lambda st: st.get("last") == "received", 10)
        assert st["woke"] == "button" and st["errors"] == 0
        assert len(gw.events("alarm")) == 1
        button.wait_for(lambda st: bool(st.get("asleep")), 15)
    assert "MemoryError" not in button.log_path.read_text()
    print(f"battery button 32-bit frozen 56K: heap_free after boot {boot_free}, "
          f"after a wake by a press {st['heap_free']}")
    assert st["heap_free"] > 16 * 1024


TICKS_PERIOD = port32.TICKS_PERIOD
SMALL_INT_LIMIT = 1 << 30  # from here on an int is an object on the heap of a 32-bit build


def test_button_keeps_its_timers_across_the_ticks_wrap_and_counts_uptime_past_2_30_on_a_32_bit_build(
    tmp_path: Path, broker: fw.Mosquitto, gw: fw.Responder, frozen32: tuple[str, Path]
) -> None:
    mp32, flash = frozen32
    with fw.sim_button(
        tmp_path / "dev", broker.port, heapsize=port32.ESP32_HEAPSIZE, micropython=mp32, firmware=flash,
        env=port32.ticks_start_env(TICKS_PERIOD - 8000), hb_interval_s=1, keepalive_s=2, ack_timeout_s=4,
        cancel_window_s=0,
    ) as button:  # fmt: skip
        st = button.wait_for(lambda st: st["connected"], 10)
        assert TICKS_PERIOD - 8000 < st["ticks_ms"] < TICKS_PERIOD - 2000, st["ticks_ms"]
        assert button.send(f"uptime {SMALL_INT_LIMIT - 1000}") == "ok"
        # An alarm raised 2 s or less before the wrap, never acked: its ack timeout (4 s) runs
        # across the wrap and fires on time, neither at once nor never.
        button.wait_for(lambda st: st["ticks_ms"] > TICKS_PERIOD - 2000, 10, interval=0.02)
        button.press(150)
        raised = time.monotonic()
        button.wait_for(lambda st: st["last"] == "sending", 2)
        st = button.wait_for(lambda st: st["last"] == "failed", 10)
        waited = time.monotonic() - raised
        assert st["ticks_ms"] < TICKS_PERIOD // 2, "the ticks did not wrap"
        assert 3.5 < waited < 7.0, waited
        # After the wrap: keepalive pings went on (the broker would have dropped a silent
        # client after 3 s), heartbeats too; the failed alarm is stored when the gateway answers
        # its re-send, and a new alarm goes the whole way.
        first = gw.events("alarm")[0].body["c"]
        for state in ("stored", "received", "acked"):
            gw.ack(DEV, first, state)
        gw.auto = ("stored", "received", "acked")
        button.wait_for(lambda st: st["outbox"] == 0, 5)
        button.press(150)
        gw.wait(lambda s: any(m.kind == "alarm" and m.body["c"] > first for m in s), 5)
        st = button.wait_for(lambda st: st["last"] == "acked", 5)
        assert st["connects"] == 1 and st["errors"] == 0, st
        # The uptime went past 2**30 ms on the way (a heap object on a 32-bit build): it is
        # still counted and sent exactly.
        up = gw.events("alarm")[-1].body["up"]
        assert SMALL_INT_LIMIT < up < SMALL_INT_LIMIT + 60_000, up
        assert st["up_ms"] >= up
        hb = gw.wait(lambda s: any(m.kind == "hb" and m.body["up"] > up for m in s), 5)
        ups = [m.body["up"] for m in hb if m.kind == "hb"]
        assert ups == sorted(ups) and ups[-1] > up, ups
    assert "MemoryError" not in button.log_path.read_text()
