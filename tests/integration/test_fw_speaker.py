"""The speaker firmware, end to end: the real firmware on the MicroPython unix port (a 128K
heap; 100K for ordinary broadcasts) behind a village Mosquitto with a password and an
ACL per device, and a gateway stand-in (this test) that sends broadcast copies made with the
shared codec (okproto.encode_bc, the speaker's own key) and checks every report the speaker
sends (okproto.open_up: MAC over topic and body). What was played is read from the simulated
speaker's played log and its TTS frames."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from device_fw import okproto, tts
from harness import port32
from harness.simspeaker import SimSpeaker
from onekey import cli
from transport.brokers import VillageBroker
from transport.procs import free_port

try:
    from tests import fw_support as fw
except ImportError:  # run as `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import fw_support as fw

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
DEV = "spk-0001"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PASSWORDS = {"gateway": "gateway-secret", DEV: "spk-secret"}
NOTICE = "村民们请注意：明天上午九点在村委会开会，请准时参加。"


def make_copy(
    counter: int, bc_id: str, *, key: bytes = KEY, device: str = DEV, **fields: Any
) -> tuple[str, bytes]:
    """A §8.2 copy: a routine Alert valid for a minute, with the gateway's time in `ts`, unless
    `fields` say otherwise (`ts=None`: a copy from an older gateway, which sent no ts)."""
    now = int(time.time() * 1000)
    bc: dict[str, Any] = {
        "id": bc_id, "mt": "Alert", "st": "Actual", "pri": 2, "exp": now + 60_000, "ts": now,
    }  # fmt: skip
    bc.update(fields)
    return okproto.encode_bc(key, device, counter, bc)


@dataclass
class Report:
    c: int
    kind: str
    body: dict[str, Any]


class Gateway:
    """The gateway's part: publishes §8.2 copies (counter strictly increasing, from Unix ms
    unless a test sets `counter_ahead_ms`) and
    records every uplink after checking it with the shared codec; anything that fails the
    check is kept in `rejected`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: list[Report] = []
        self.rejected: list[tuple[str, str]] = []
        self._counter = 0
        self.counter_ahead_ms = 0  # a persisted counter that ran ahead of real time
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-test")
        self._client.username_pw_set("gateway", PASSWORDS["gateway"])
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: self._subscribed.set()

    def start(self) -> None:
        self._client.connect(HOST, self.port)
        self._client.subscribe("ok/v1/dev/+/up/#", qos=1)
        self._client.loop_start()
        if not self._subscribed.wait(5):
            raise TimeoutError("the gateway stand-in did not subscribe")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client.reinitialise()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/up/will"):
            return
        try:
            _, kind, body = okproto.open_up(msg.topic, msg.payload, {DEV: KEY}.get)
        except okproto.ProtocolError as exc:
            with self._cond:
                self.rejected.append((msg.topic, exc.reason))
            return
        with self._cond:
            self.seen.append(Report(body["c"], kind, body))
            self._cond.notify_all()

    def next_counter(self) -> int:
        self._counter = max(self._counter + 1, int(time.time() * 1000) + self.counter_ahead_ms)
        return self._counter

    def copy(self, bc_id: str, *, key: bytes = KEY, device: str = DEV, **fields: Any) -> tuple[str, bytes]:
        """A §8.2 copy for `device` under the gateway's next counter."""
        return make_copy(self.next_counter(), bc_id, key=key, device=device, **fields)

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def send(self, bc_id: str, **fields: Any) -> bytes:
        """Sends a copy to the speaker; returns its payload (to replay it later)."""
        topic, payload = self.copy(bc_id, **fields)
        self.publish(topic, payload)
        return payload

    def states(self, bc_id: str) -> list[str]:
        with self._cond:
            return [r.body["s"] for r in self.seen if r.kind == "bcr" and r.body["id"] == bc_id]

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(r.kind, r.body.get("id"), r.body.get("s")) for r in self.seen]
                    raise TimeoutError(f"gateway stand-in: condition not met in {timeout} s; seen {got}")
                self._cond.wait(left)

    def wait_states(self, bc_id: str, states: list[str], timeout: float = 10.0) -> None:
        """Waits until the speaker's reports for bc_id end with `states`, in that order."""
        self.wait(lambda: self._states_unlocked(bc_id)[-len(states) :] == states, timeout)

    def _states_unlocked(self, bc_id: str) -> list[str]:
        return [r.body["s"] for r in self.seen if r.kind == "bcr" and r.body["id"] == bc_id]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[VillageBroker]:
    b = VillageBroker(tmp_path / "village", free_port(HOST), HOST)
    for user, password in PASSWORDS.items():
        b.add_user(user, password)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def gw(broker: VillageBroker) -> Iterator[Gateway]:
    g = Gateway(broker.port)
    g.start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture
def speaker(tmp_path: Path, broker: VillageBroker) -> Iterator[SimSpeaker]:
    # RUN_DIR/devices/ID is where `onekey sim` finds a village's devices.
    spk = SimSpeaker(
        tmp_path / "run" / "devices" / DEV, DEV, KEY, HOST, broker.port, PASSWORDS[DEV], "v-001",
        hb_interval_s=1, sim_ms_per_char=20, sim_min_speak_ms=100,
    )  # fmt: skip
    spk.write_config()
    spk.start()
    try:
        spk.wait_for(lambda st: st["connected"], 10)
        yield spk
    finally:
        spk.stop(timeout=3)
    assert "MemoryError" not in spk.log_path.read_text(), spk.log_tail()


def synthesised(spk: SimSpeaker) -> list[str]:
    """The text of every synthesis frame the firmware sent to the TTS module, in order."""
    return spk.spoken()


def commands(spk: SimSpeaker) -> list[int]:
    return [f.cmd for f in spk.tts_frames()]


def played(spk: SimSpeaker, n: int = 0, timeout: float = 5.0) -> list[tuple[str, str]]:
    """The played log as (id, result), once it has at least n entries (a play stopped by a
    Cancel is logged a moment after the report goes out)."""
    deadline = time.monotonic() + timeout
    while True:
        log = [(p["id"], p["result"]) for p in spk.played()]
        if len(log) >= n or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def test_broadcast_is_played_and_reported_received_playing_played(speaker: SimSpeaker, gw: Gateway) -> None:
    gw.send("bc-1", text=NOTICE, clip="chime", rep=2, lang="zh-CN", pri=1)
    gw.wait_states("bc-1", ["received", "playing", "played"], 15)
    assert gw.states("bc-1") == ["received", "playing", "played"]
    (entry,) = speaker.played()
    assert (entry["id"], entry["clip"], entry["text"], entry["pri"], entry["result"]) == (
        "bc-1", "chime", NOTICE, 1, "played",
    )  # fmt: skip
    assert abs(entry["at"] - time.time() * 1000) < 60_000  # the clock came from the gateway
    # The text reached the TTS module whole, twice (rep 2), in chunks of at most 100 characters.
    spoken = "".join(synthesised(speaker))
    assert spoken == NOTICE * 2
    st = speaker.status()
    assert st["bcs"] == {"bc-1": "played"} and st["playing"] is None and st["queue"] == []
    assert st["role"] == "speaker" and st["fw"] == "spk-1.0.0" and st["village"] == "v-001"
    # Heartbeats and reports share one counter, never reused, increasing in sending order.
    gw.wait(lambda: any(r.kind == "hb" for r in gw.seen[3:]), 5)
    counters = [r.c for r in gw.seen]
    assert counters == sorted(counters) and len(set(counters)) == len(counters)
    assert gw.rejected == []


def test_a_speaker_set_to_syn6288_sends_frames_a_syn6288_accepts(
    tmp_path: Path, broker: VillageBroker, gw: Gateway
) -> None:
    # The simulated module in SYN6288 mode refuses any frame without a matching XOR checksum
    # (its log shows command -1), so a play reaches "played" only with SYN6288 frames.
    spk = SimSpeaker(
        tmp_path / "syn", DEV, KEY, HOST, broker.port, PASSWORDS[DEV], "v-001",
        tts_module="syn6288", sim_ms_per_char=5, sim_min_speak_ms=50,
    )  # fmt: skip
    spk.write_config()
    spk.start()
    try:
        spk.wait_for(lambda st: st["connected"], 10)
        gw.send("bc-syn", text=NOTICE, clip=None, rep=1, lang="zh-CN", pri=1)
        gw.wait_states("bc-syn", ["received", "playing", "played"], 15)
        frames = spk.tts_frames()
        assert frames and all(f.cmd in (0x01, 0x21) for f in frames), frames
        synth = [f.frame for f in frames if f.cmd == 0x01]
        assert "".join(f[5:-1].decode("utf-16-be") for f in synth) == NOTICE
    finally:
        spk.stop(timeout=3)


def test_onekey_sim_played_prints_the_played_log(
    speaker: SimSpeaker, gw: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gw.send("cli", text=NOTICE)
    gw.wait_states("cli", ["played"], 10)
    run_dir = str(speaker.flash_dir.parent.parent)
    assert cli.main(["sim", "played", DEV, "--run-dir", run_dir]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert (entry["id"], entry["text"], entry["result"]) == ("cli", NOTICE, "played")
    assert cli.main(["sim", "press", DEV, "--run-dir", run_dir]) == 2  # a speaker has no button
    assert "no button" in capsys.readouterr().err


def test_priority_0_preempts_a_routine_broadcast_which_then_plays_again_from_its_start(
    speaker: SimSpeaker, gw: Gateway
) -> None:
    routine = "这是一条例行通知，" * 15  # 135 characters: about 2.7 s at 20 ms each
    gw.send("routine", text=routine, pri=2)
    speaker.wait_for(lambda st: st["playing"] == "routine", 5)
    time.sleep(0.5)
    gw.send("flood", text="洪水警报，请立即转移。", pri=0, clip="siren")
    gw.wait_states("flood", ["played"], 20)
    gw.wait_states("routine", ["played"], 20)
    assert played(speaker, 3) == [("routine", "preempted"), ("flood", "played"), ("routine", "played")]
    assert gw.states("routine") == ["received", "playing", "preempted", "playing", "played"]
    assert gw.states("flood") == ["received", "playing", "played"]
    # The module was told to stop, and the routine text was sent again from its first chunk.
    assert 0x02 in commands(speaker)
    first, rest = (routine[a:b] for a, b in tts.chunks(routine, 100))
    assert synthesised(speaker) == [first, "洪水警报，请立即转移。", first, rest]


def test_expired_broadcasts_are_never_played(speaker: SimSpeaker, gw: Gateway) -> None:
    now = int(time.time() * 1000)
    gw.send("stale", text="过期的通知", exp=now - 1000)
    gw.wait_states("stale", ["expired"], 5)
    # One that expires while it waits behind a long one is dropped too.
    gw.send("long", text="一" * 120)
    speaker.wait_for(lambda st: st["playing"] == "long", 5)
    gw.send("brief", text="很快过期", exp=int(time.time() * 1000) + 800)
    gw.wait_states("brief", ["received", "expired"], 10)
    gw.wait_states("long", ["played"], 10)
    assert played(speaker, 1) == [("long", "played")]
    assert gw.states("stale") == ["expired"]
    assert speaker.status()["bcs"]["brief"] == "expired"


def test_forged_misaddressed_and_replayed_broadcasts_never_play(speaker: SimSpeaker, gw: Gateway) -> None:
    topic = okproto.topic_down(DEV, "bc")
    payload = gw.send("real", text="真的通知")
    gw.wait_states("real", ["played"], 10)
    # Signed with another key; made for another speaker (its topic is under the MAC); for
    # this topic and key but naming another speaker (d); a verbatim replay of the one that played.
    gw.publish(topic, gw.copy("forged", key=OTHER_KEY, text="伪造")[1])
    gw.publish(topic, gw.copy("elsewhere", device="spk-0002", text="别处")[1])
    body = okproto.encode_body(
        [("t", "bc"), ("d", "spk-0002"), ("c", gw.next_counter()), ("id", "misnamed"), ("mt", "Alert"),
         ("st", "Actual"), ("pri", 2), ("exp", int(time.time() * 1000) + 60_000)],
        okproto.MAX_BC_BODY,
    )  # fmt: skip
    gw.publish(topic, okproto.frame(KEY, topic, body))
    gw.publish(topic, payload)
    st = speaker.wait_for(lambda st: sum(st["refused"].values()) >= 4, 5)
    assert st["refused"] == {"bad_mac": 2, "replay": 1, "topic_mismatch": 1}, st["refused"]
    # A replay after a reboot fails too: the highest counter accepted is on flash.
    speaker.kill()
    speaker.start()
    speaker.wait_for(lambda st: st["connected"], 10)
    gw.publish(topic, payload)
    st = speaker.wait_for(lambda st: st["refused"].get("replay") == 1, 5)
    time.sleep(0.5)
    assert played(speaker) == [("real", "played")]
    assert set(speaker.status()["bcs"]) == {"real"}
    assert gw.states("real") == ["received", "playing", "played"]


def test_cancel_stops_a_playing_broadcast_and_update_replaces_a_waiting_one(
    speaker: SimSpeaker, gw: Gateway
) -> None:
    gw.send("long", text="一段很长的通知。" * 20)
    speaker.wait_for(lambda st: st["playing"] == "long", 5)
    gw.send("v1", text="第一版")
    speaker.wait_for(lambda st: st["queue"] == ["v1"], 5)
    gw.send("v2", mt="Update", ref="v1", text="第二版")
    gw.wait_states("v1", ["cancelled"], 5)
    gw.send("stop-long", mt="Cancel", ref="long")
    gw.wait_states("long", ["cancelled"], 5)
    gw.wait_states("v2", ["played"], 10)
    assert played(speaker, 2) == [("long", "cancelled"), ("v2", "played")]
    assert gw.states("stop-long") == ["received"] and gw.states("v1") == ["received", "cancelled"]
    assert 0x02 in commands(speaker)  # the module was told to stop
    assert "第一版" not in synthesised(speaker)


def test_a_copy_of_a_known_broadcast_is_not_played_again_and_its_state_is_reported(
    speaker: SimSpeaker, gw: Gateway
) -> None:
    gw.send("once", text="只播一次")
    gw.wait_states("once", ["played"], 10)
    gw.send("once", text="只播一次")  # the gateway's re-send: a fresh counter, the same id
    gw.wait(lambda: gw.states("once")[-1:] == ["played"] and len(gw.states("once")) == 4, 5)
    time.sleep(0.5)
    assert played(speaker) == [("once", "played")]


def test_reports_lost_with_the_link_are_sent_again_with_fresh_counters(
    speaker: SimSpeaker, gw: Gateway
) -> None:
    gw.send("during-outage", text="断网期间播放的通知" * 10)
    speaker.wait_for(lambda st: st["playing"] == "during-outage", 5)
    speaker.set_network(False)
    speaker.wait_for(lambda st: not st["connected"] and st["bcs"]["during-outage"] == "played", 10)
    mark = max(r.c for r in gw.seen)
    speaker.set_network(True)
    gw.wait_states("during-outage", ["played"], 15)
    late = [r for r in gw.seen if r.kind == "bcr" and r.body["s"] == "played"]
    assert late[-1].c > mark
    # The speaker forgets a report once its PUBACK is in, a moment after the broker has it.
    speaker.wait_for(lambda st: st["reports"] == 0, 5)


OUTAGE_S = 8  # long enough for the 1 s ticker to have rewritten the state file 8 times


def test_an_outage_with_a_report_waiting_writes_the_state_file_only_when_it_changes(
    speaker: SimSpeaker, gw: Gateway
) -> None:
    gw.send("bc-out", text="断网期间播放的通知" * 3)
    speaker.wait_for(lambda st: st["playing"] == "bc-out", 5)
    speaker.set_network(False)
    st = speaker.wait_for(
        lambda st: not st["connected"] and st["bcs"]["bc-out"] == "played" and st["reports"] > 0, 10
    )
    # Two changes so far: the frame's counter (before its PUBACK) and the final state "played".
    assert st["state_writes"] == 2
    t0 = st["up_ms"]
    st = speaker.wait_for(lambda st: st["up_ms"] - t0 >= OUTAGE_S * 1000, OUTAGE_S + 10)
    # The report still waits for the link, and nothing it holds has changed: no write.
    assert st["reports"] > 0 and not st["connected"]
    assert st["state_writes"] == 2
    speaker.set_network(True)
    gw.wait_states("bc-out", ["played"], 15)
    assert speaker.status()["state_writes"] == 2


def test_queued_broadcasts_survive_a_power_cut_and_play_once_the_clock_is_set(
    speaker: SimSpeaker, gw: Gateway
) -> None:
    gw.send("first", text="第一条通知" * 12)
    speaker.wait_for(lambda st: st["playing"] == "first", 5)
    gw.send("second", text="第二条通知")
    speaker.wait_for(lambda st: st["queue"] == ["second"], 5)
    speaker.kill()  # mid-play
    speaker.start()
    st = speaker.wait_for(lambda st: st["connected"], 10)
    assert st["queue"] == ["first", "second"] and st["playing"] is None and st["clock"] is None
    gw.send("third", text="第三条通知")  # any downlink sets the clock
    gw.wait_states("third", ["played"], 20)
    assert played(speaker, 3) == [("first", "played"), ("second", "played"), ("third", "played")]
    # "first" was cut by the power loss and played again whole.
    assert synthesised(speaker) == ["第一条通知" * 12] * 2 + ["第二条通知", "第三条通知"]
    # Reports still in RAM at the power cut are lost (the gateway's re-send of a copy would
    # fetch the state); after the reboot it plays and reports again.
    states = gw.states("first")
    assert states[0] == "received" and states[-2:] == ["playing", "played"]


def longest_copy(counter: int, bc_id: str) -> tuple[str, bytes]:
    """The largest §8.2 copy there is: a 500-character Chinese text (each character a 6-byte
    escape) and every other field at its longest."""
    text = (NOTICE * 20)[:500]
    return make_copy(counter, bc_id, text=text, clip="chime", rep=5, lang="zh-Hans1")


def test_the_largest_broadcast_plays_within_a_128k_heap(speaker: SimSpeaker, gw: Gateway) -> None:
    assert speaker.heapsize == "128K" and "heapsize=128K" in speaker.command()
    for i in range(3):
        bc_id = f"largest-{i:02d}-" + "x" * 29
        topic, payload = longest_copy(gw.next_counter(), bc_id)
        assert len(payload) > 3200
        gw.publish(topic, payload)
        speaker.wait_for(lambda st, bc_id=bc_id: st["playing"] == bc_id, 10)
        gw.send(f"stop-{i}", mt="Cancel", ref=bc_id)  # no need to hear all five repeats
        gw.wait_states(bc_id, ["cancelled"], 10)
    assert len(played(speaker, 3)) == 3
    assert all(e["text"] == (NOTICE * 20)[:500] for e in speaker.played())
    st = speaker.status()
    assert st["errors"] == 0 and st["refused"] == {} and st["heap_free"] > 0


CHECK_RUNNER = r"""
import sys, json, binascii
import okproto
from speaker import open_frame

with open(sys.argv[1]) as f:
    doc = json.load(f)
keys = {}
for name in doc["keys"]:
    keys[name] = binascii.unhexlify(doc["keys"][name])

def outcome(fn, v):
    data = v["payload"].encode() if "payload" in v else binascii.unhexlify(v["payload_hex"])
    try:
        return {"ok": fn(keys[v["key"]], v["device"], v["topic"], memoryview(data))}
    except okproto.ProtocolError as e:
        return {"error": e.reason}

for v in doc["vectors"]:
    if v["op"] == "open_down":
        a = outcome(open_frame, v)
        b = outcome(okproto.open_down, v)
        print(json.dumps({"id": v["id"], "same": a == b, "frame": a, "codec": b}))
"""


def test_the_speakers_frame_check_agrees_with_the_codec_on_every_golden_vector(tmp_path: Path) -> None:
    # speaker.open_frame is okproto.open_down taken apart to save heap: it must decide the same.
    script = fw.write_script(tmp_path, "check.py", CHECK_RUNNER)
    # The vector file is large: this check gets a big heap (the heap is tested above).
    results = fw.micropython_json_lines(script, str(fw.VECTORS), heapsize="1M")
    assert len(results) >= 10
    for r in results:
        assert r["same"], r
    assert any("ok" in r["frame"] for r in results) and any("error" in r["frame"] for r in results)


CONFIG_RUNNER = r"""
import json
import config
try:
    cfg = config.load()
    del cfg["key_bytes"]
    print(json.dumps({"ok": cfg}))
except config.ConfigError as e:
    print(json.dumps({"error": str(e)}))
"""


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ({}, {"fw": "spk-1.0.0", "tts_module": "xfs5152", "tts_baud": 9600, "tts_chunk_bytes": 200,
              "queue_cap": 8}),
        ({"fw": "spk-2.0.0", "pins": {"audio": 26}}, {"fw": "spk-2.0.0"}),
        ({"tts_chunk_bytes": 201}, "tts_chunk_bytes must be even"),
        ({"queue_cap": 0}, "queue_cap must be at least 1"),
        ({"role": "siren"}, "role must be"),
        ({"tts_module": "syn6288"}, {"tts_module": "syn6288", "tts_chunk_bytes": 200}),
        ({"tts_module": "syn6288", "tts_chunk_bytes": 400}, "at most 200 for a SYN6288"),
        ({"tts_module": "xfs"}, "tts_module must be 'xfs5152'"),
    ],
)
def test_speaker_config_defaults_and_refusals(tmp_path: Path, extra: dict[str, Any], expect: Any) -> None:
    script = fw.write_script(tmp_path / "bin", "load.py", CONFIG_RUNNER)
    flash = tmp_path / "flash"
    flash.mkdir()
    cfg = {"id": DEV, "key": KEY.hex(), "role": "speaker", "hal": "sim", "sim_port": 40000, **extra}
    (flash / "config.json").write_text(json.dumps(cfg))
    (out,) = fw.micropython_json_lines(script, cwd=flash)
    if isinstance(expect, str):
        assert expect in out.get("error", ""), out
        return
    got = out["ok"]
    assert {k: got[k] for k in expect} == expect
    # A speaker is on mains: no battery pin, unless its config.json names one.
    pins = got["pins"]
    assert pins["battery"] is None and (pins["tts_tx"], pins["tts_rx"]) == (19, 18)
    assert pins["audio"] == extra.get("pins", {}).get("audio", 25)


def test_ordinary_broadcasts_play_within_a_112k_heap_on_the_64_bit_port(
    tmp_path: Path, broker: VillageBroker, gw: Gateway
) -> None:
    # Compiled from source on the 64-bit port, below the speaker's 128K. At 104K the speaker
    # now runs out of contiguous blocks (its heap fragments while compiling); what a board
    # needs is measured on the 32-bit build instead (56K with the firmware frozen,
    # docs/firmware.md, Heap).
    spk = SimSpeaker(
        tmp_path / "spk112", DEV, KEY, HOST, broker.port, PASSWORDS[DEV], heapsize="112K", hb_interval_s=1
    )
    spk.write_config()
    spk.start()
    try:
        spk.wait_for(lambda st: st["connected"], 10)
        text = (NOTICE * 10)[:200]  # a body of about 1.4 KB
        for i in range(4):
            gw.send(f"notice-{i}", text=text, clip="chime", lang="zh-CN")
            spk.wait_for(lambda st, i=i: st["playing"] == f"notice-{i}", 10)
            gw.send(f"stop-{i}", mt="Cancel", ref=f"notice-{i}")
            gw.wait_states(f"notice-{i}", ["cancelled"], 10)
        assert played(spk, 4) == [(f"notice-{i}", "cancelled") for i in range(4)]
        st = spk.status()
        assert st["errors"] == 0 and st["refused"] == {}
    finally:
        spk.stop(timeout=3)
    assert "heapsize=112K" in spk.command()
    assert "MemoryError" not in spk.log_path.read_text(), spk.log_tail()


def test_oversized_downlinks_are_acknowledged_dropped_counted_and_never_block_a_broadcast(
    speaker: SimSpeaker, gw: Gateway
) -> None:
    # Larger than the speaker's receive buffer (speaker.RX_SIZE, 3.4 KB), within the village
    # broker's packet limit; more of them than the broker keeps in flight for one client (200).
    topic = okproto.topic_down(DEV, "bc")
    junk = b"x" * 3600
    for _ in range(210):
        gw.publish(topic, junk)
    gw.send("after-junk", text="大消息之后的通知")
    gw.wait_states("after-junk", ["played"], 20)
    st = speaker.wait_for(lambda st: st["oversized"] == 210, 10)
    assert st["refused"] == {} and st["errors"] == 0
    gw.wait(lambda: any(r.kind == "hb" and r.body.get("ov") == 210 for r in gw.seen), 5)
    # Every one was PUBACKed: none is delivered again after a reboot.
    speaker.kill()
    speaker.start()
    speaker.wait_for(lambda st: st["connected"], 10)
    gw.send("after-reboot", text="重启之后的通知")
    gw.wait_states("after-reboot", ["played"], 20)
    assert speaker.status()["oversized"] == 0
    assert played(speaker, 2) == [("after-junk", "played"), ("after-reboot", "played")]


def test_a_gateway_counter_far_ahead_of_real_time_still_gives_the_speaker_the_right_clock(
    speaker: SimSpeaker, gw: Gateway
) -> None:
    # The gateway's downlink counter is persisted and may run far ahead of real time (after a
    # clock that ran ahead was corrected). The speaker takes its clock from ts, not from c: a
    # broadcast valid for an hour plays, where a clock taken from c (a day ahead) would have
    # dropped it as expired.
    gw.counter_ahead_ms = 86_400_000
    now = int(time.time() * 1000)
    late_topic, late = gw.copy("late", text="迟到的副本", ts=now - 600_000)  # sent, then held up
    gw.send("hour", text="一小时内有效的通知", exp=now + 3_600_000)
    gw.wait_states("hour", ["received", "playing", "played"], 15)
    st = speaker.status()
    assert abs(st["clock"] - time.time() * 1000) < 30_000, st
    assert st["bc_counter"] > now + 86_000_000  # the counter still guards against replays
    # A frame delivered late (a lower counter, an older ts) is refused and does not turn the
    # clock back.
    gw.publish(late_topic, late)
    st = speaker.wait_for(lambda st: st["refused"].get("replay") == 1, 5)
    assert abs(st["clock"] - time.time() * 1000) < 30_000, st
    assert played(speaker) == [("hour", "played")]


def test_a_copy_without_ts_from_an_older_gateway_sets_the_clock_from_its_counter(
    speaker: SimSpeaker, gw: Gateway
) -> None:
    gw.send("old-gateway", text="旧网关的通知", ts=None)
    gw.wait_states("old-gateway", ["played"], 15)
    (entry,) = speaker.played()
    assert abs(entry["at"] - time.time() * 1000) < 30_000


# -- on a 32-bit build, as the firmware sits on an ESP32 (harness.port32, docs/firmware.md Heap)


@pytest.fixture(scope="module")
def board_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return port32.board_image(tmp_path_factory.mktemp("board") / "flash")


def speaker32(
    tmp_path: Path, broker: VillageBroker, micropython: str, flash: Path, heapsize: str
) -> SimSpeaker:
    spk = SimSpeaker(
        tmp_path / f"spk32-{heapsize}", DEV, KEY, HOST, broker.port, PASSWORDS[DEV], heapsize=heapsize,
        micropython=micropython, firmware=flash,
        hb_interval_s=1, sim_ms_per_char=20, sim_min_speak_ms=100,
    )  # fmt: skip
    spk.write_config()
    return spk


# The modules as .mpy files on flash (docs/firmware.md, Flashing an ESP32) load their bytecode
# and names into the heap: the speaker does not boot at 56K and runs out at 60K; at 64K and 72K
# it played some ordinary broadcasts, but the largest needs free blocks of 1.5 and 3.2 KB for
# its body, which it found at 76K once and at 80K in every run.
SPEAKER_HEAP_MPY = "80K"


def ordinary_and_largest(spk: SimSpeaker, gw: Gateway) -> tuple[int, int, int]:
    """Boots, plays three ordinary broadcasts (200 characters) and three of the largest, each
    cancelled once playing; returns the free heap after boot, after the ordinary ones and after
    the largest."""
    spk.start()
    try:
        booted = spk.wait_for(lambda st: st["connected"], 10)
        text = (NOTICE * 10)[:200]
        for i in range(3):
            gw.send(f"notice-{i}", text=text, clip="chime", lang="zh-CN")
            spk.wait_for(lambda st, i=i: st["playing"] == f"notice-{i}", 10)
            gw.send(f"stop-{i}", mt="Cancel", ref=f"notice-{i}")
            gw.wait_states(f"notice-{i}", ["cancelled"], 10)
        ordinary = spk.status()
        for i in range(3):
            bc_id = f"largest-{i:02d}-" + "x" * 29
            topic, payload = longest_copy(gw.next_counter(), bc_id)
            gw.publish(topic, payload)
            spk.wait_for(lambda st, bc_id=bc_id: st["playing"] == bc_id, 10)
            gw.send(f"big-stop-{i}", mt="Cancel", ref=bc_id)
            gw.wait_states(bc_id, ["cancelled"], 10)
        st = spk.status()
        assert len(played(spk, 6)) == 6
        assert st["errors"] == 0 and st["refused"] == {} and st["heap_free"] > 1024, st
    finally:
        spk.stop(timeout=3)
    assert "MemoryError" not in spk.log_path.read_text(), spk.log_tail()
    return booted["heap_free"], ordinary["heap_free"], st["heap_free"]


def test_speaker_plays_ordinary_and_largest_broadcasts_on_a_32_bit_build_from_mpy_files(
    tmp_path: Path, broker: VillageBroker, gw: Gateway, board_image: Path
) -> None:
    spk = speaker32(tmp_path, broker, fw.micropython32_or_fail(), board_image, SPEAKER_HEAP_MPY)
    assert spk.command()[1:3] == ["-X", f"heapsize={SPEAKER_HEAP_MPY}"]
    boot, ordinary, largest = ordinary_and_largest(spk, gw)
    print(
        f"speaker 32-bit .mpy {SPEAKER_HEAP_MPY}: heap_free after boot {boot}, "
        f"ordinary {ordinary}, largest {largest}"
    )


@pytest.fixture(scope="module")
def frozen32(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The 32-bit port with the firmware frozen in, and a flash holding only main.py."""
    return fw.frozen32_or_fail(), port32.main_only(tmp_path_factory.mktemp("frozen") / "flash")


def test_speaker_plays_the_largest_broadcast_in_the_56k_heap_of_a_plain_esp32_with_the_firmware_frozen(
    tmp_path: Path, broker: VillageBroker, gw: Gateway, frozen32: tuple[str, Path]
) -> None:
    mp32, flash = frozen32
    spk = speaker32(tmp_path, broker, mp32, flash, port32.ESP32_HEAPSIZE)
    assert spk.command()[:3] == [mp32, "-X", "heapsize=56K"]
    boot, ordinary, largest = ordinary_and_largest(spk, gw)
    print(f"speaker 32-bit frozen 56K: heap_free after boot {boot}, ordinary {ordinary}, largest {largest}")
    assert largest > 16 * 1024


def test_speaker_plays_across_the_ticks_wrap_and_counts_uptime_past_2_30_on_a_32_bit_build(
    tmp_path: Path, broker: VillageBroker, gw: Gateway, frozen32: tuple[str, Path]
) -> None:
    mp32, flash = frozen32
    wrap = port32.TICKS_PERIOD
    spk = SimSpeaker(
        tmp_path / "spk-wrap", DEV, KEY, HOST, broker.port, PASSWORDS[DEV], heapsize=port32.ESP32_HEAPSIZE,
        micropython=mp32, firmware=flash, env=port32.ticks_start_env(wrap - 6000),
        hb_interval_s=1, keepalive_s=2, sim_ms_per_char=20, sim_min_speak_ms=100,
    )  # fmt: skip
    spk.write_config()
    spk.start()
    try:
        st = spk.wait_for(lambda st: st["connected"], 10)
        assert wrap - 6000 < st["ticks_ms"] < wrap - 2000, st["ticks_ms"]
        assert spk.send(f"uptime {(1 << 30) - 1000}") == "ok"
        # Speaking from before the wrap to after it (120 characters, 20 ms each: 2.4 s).
        spk.wait_for(lambda st: st["ticks_ms"] > wrap - 1500, 10, interval=0.02)
        across = (NOTICE * 5)[:120]
        gw.send("across", text=across, lang="zh-CN")
        gw.wait_states("across", ["played"], 10)
        # The text goes to the module in chunks (tts_chunk_bytes): the first starts before the wrap.
        chunks = [f for f in spk.tts_frames() if f.text and across.startswith(f.text)]
        assert chunks and wrap - 2400 < chunks[0].ticks_ms < wrap, chunks[:1]
        st = spk.wait_for(lambda st: st["ticks_ms"] < wrap // 2, 5)
        # After it: a broadcast valid for 10 s still plays (the speaker's clock, re-based on
        # the ticks, did not jump), one that expired does not.
        gw.send("after", text="换行之后的通知", exp=int(time.time() * 1000) + 10_000)
        gw.wait_states("after", ["played"], 10)
        gw.send("stale", text="过期的通知", exp=int(time.time() * 1000) - 1000)
        gw.wait_states("stale", ["expired"], 5)
        gw.wait(lambda: any(r.kind == "hb" and r.body["up"] > 1 << 30 for r in gw.seen), 5)
        st = spk.status()
        assert st["connects"] == 1 and st["errors"] == 0 and st["up_ms"] > 1 << 30, st
        assert played(spk, 2) == [("across", "played"), ("after", "played")]
    finally:
        spk.stop(timeout=3)
    assert "MemoryError" not in spk.log_path.read_text(), spk.log_tail()
