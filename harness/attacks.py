"""An attack campaign over every link of a running LocalStack, bounded in messages and time,
judged from the outside (docs/protocol.md §2-§8).

Who attacks, and from where:
- device -> gateway (village broker): the login of a device (`btn-victim`) whose frames the
  attacker records as they pass (a village broker password travels in plain MQTT) but whose
  key it lacks: bad MACs, tampered bodies, malformed, oversized and fuzzed frames, replays of
  its alarms and heartbeats, and frames withheld early and injected after later ones have been
  stored. The injections go through the victim's own connection: the gateway sees only topic
  and bytes, and the campaign does not want to measure the takeover twice. Another provisioned
  device (`btn-evil`) writes on the victim's topics (the ACL drops it) or names the victim in
  its own frames; a login with no registry entry (`btn-stray`) sends frames as itself; a device
  login (`btn-intruder`) connects with other devices' and the gateway's client ids (takeover).
- gateway -> centre (centre broker, TLS): a second enrolled gateway (`gw-twin`, its TLS login
  and key held by the campaign, which also sends its genuine traffic) forges, tampers, replays,
  publishes as `gw-demo`, and fuzzes bodies signed with its real key; a certificate from the
  CA that the centre never enrolled (`gw-ghost`); a centre service login (`svc-attack`) writes
  gateway topics; a gateway login (`gw-rogue`) connects with the gateway's and the centre's
  client ids.
- centre -> gateway: `svc-attack` sends forged, tampered, replayed, expired and other
  gateways' broadcasts (genuine ones are signed with the centre's key by the campaign, as the
  centre would), forged and replayed acks (§6.4: a forged `acked` would tell the person who
  pressed that help is coming).
- gateway -> speaker (village broker): a login with the gateway's rights (`svc-insider`, a
  stolen service password) sends forged, replayed, other speakers', oversized, malformed and
  fuzzed copies to protocol-level speakers and firmware speakers; `btn-evil` writes on the
  speakers' topics.

Judged from the outside: new events at the centre (its API) that nothing genuine made; the
victim's status at the gateway (admin API) and the twin's at the centre; states shown on the
victim device; broadcasts the gateway accepted (metrics) and played on any speaker (their
logs); refusals counted by the gateway, the centre and the speakers, which must add up to what
was sent; takeovers seen as a dropped connection. The campaign runs in two halves with the same
mix: memory (VmRSS of the gateway, the centre and both Mosquittos) is sampled after each, and
must not grow in the second. At the end, genuine traffic must still get through every link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import urllib.error
from collections import Counter
from collections.abc import Callable
from typing import Any

from centre.enrol import enrol_gateway_async
from device_fw import okproto
from harness.attackjudge import AttackJudge, LogWatch
from harness.attackresult import CATEGORIES, LINKS, AttackResult, Tally
from harness.attackshots import (
    EVIL,
    GENUINE_BASE,
    GHOST,
    INSIDER,
    INTRUDER,
    ROGUE,
    STRAY,
    SVC,
    TWIN,
    TWIN_VILLAGE,
    VICTIM,
    WITHHELD_BASE,
    AttackShots,
    Shot,
    now_ms,
)
from harness.protodevice import ProtoDevice
from harness.protospeaker import ProtoSpeaker
from harness.simdevice import SimButton
from harness.simspeaker import SimSpeaker
from harness.stack import HOST, LocalStack
from protocol.signed import SignatureError, verify_frame
from transport import pki
from transport.brokers import client_tls
from transport.keys import generate_private_key, load_private_key, public_hex
from transport.mqtt import MqttClient, MqttError

log = logging.getLogger("onekey.harness.attacks")

CHUNK = 200  # messages published before waiting for the broker's PUBACKs

# Share of the messages per link and category. Takeovers at the centre broker (each one may
# drop the gateway's or the centre's connection) are a fixed number, not a share.
WEIGHTS: dict[tuple[str, str], int] = {
    ("device", "forged"): 10, ("device", "replayed"): 6, ("device", "withheld"): 4,
    ("device", "cross_device"): 6, ("device", "takeover"): 2, ("device", "oversized"): 3,
    ("device", "malformed"): 8, ("device", "fuzzed"): 10,
    ("uplink", "forged"): 8, ("uplink", "replayed"): 5, ("uplink", "cross_device"): 5,
    ("uplink", "oversized"): 3, ("uplink", "malformed"): 5, ("uplink", "fuzzed"): 8,
    ("downlink", "forged"): 8, ("downlink", "replayed"): 4, ("downlink", "withheld"): 3,
    ("downlink", "cross_device"): 4, ("downlink", "oversized"): 2, ("downlink", "malformed"): 5,
    ("downlink", "fuzzed"): 6,
    ("speaker", "forged"): 6, ("speaker", "replayed"): 5, ("speaker", "cross_device"): 5,
    ("speaker", "oversized"): 2, ("speaker", "malformed"): 3, ("speaker", "fuzzed"): 5,
}


class _OutOfTime(Exception):
    pass


class AttackCampaign(AttackShots, AttackJudge):
    """`run()` once on a started LocalStack. `messages` bounds the attack messages (at least
    that many are sent unless `time_limit_s` runs out first); `seed` makes them repeatable."""

    def __init__(
        self,
        stack: LocalStack,
        *,
        messages: int = 10_000,
        seed: int = 1,
        speakers: int = 3,
        firmware_speakers: int = 1,
        firmware_buttons: int = 1,
        firmware_shots: int = 40,
        service_takeovers: int = 6,
        time_limit_s: float = 900.0,
        progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.n_speakers = speakers
        self.n_fw_speakers = firmware_speakers
        self.n_fw_buttons = firmware_buttons
        self.firmware_shots = firmware_shots
        self.time_limit_s = time_limit_s
        self.progress = progress
        self.result = AttackResult(seed=seed, requested=messages)
        total_w = sum(WEIGHTS.values())
        # (link, category) -> messages in the first and in the second half
        self.plan: dict[tuple[str, str], tuple[int, int]] = {}
        for link in LINKS:
            for cat in CATEGORIES:
                if (link, cat) in WEIGHTS:
                    n = max(2, -(-messages * WEIGHTS[(link, cat)] // total_w))
                    self.plan[(link, cat)] = (n // 2, n - n // 2)
        self.plan[("uplink", "takeover")] = (service_takeovers, 0)
        self.planned = sum(a + b for a, b in self.plan.values())
        self.expected: Counter[str] = Counter()
        self.genuine_events: set[str] = set()
        self.genuine_bcs: set[str] = set()
        self.staff_acked: set[int] = set()
        self.open_alarms: list[int] = []
        self.withheld: list[tuple[str, bytes]] = []
        self.captured_up: list[tuple[str, bytes]] = []  # the victim's events, as sent
        self.captured_hb: list[tuple[str, bytes]] = []  # the victim's heartbeats
        self.captured_gw: list[tuple[str, bytes]] = []  # gw-demo's signed events
        self.captured_twin: list[tuple[str, bytes]] = []  # the twin's events and heartbeats
        self.captured_twin_acks: list[tuple[str, bytes]] = []  # the centre's acks to the twin
        self.captured_bc: list[bytes] = []  # broadcasts the centre signed for gw-demo
        self.twin_received: set[str] = set()
        self.sessions_lost: Counter[str] = Counter()  # persistent sessions gone at reconnect
        self._twin_changed = asyncio.Event()
        self._hb_marker = ""
        self._twin_marker = 0
        self._twin_seq = 0
        self._twin_counter = 0
        self._sent = 0
        self._deadline = 0.0
        self._clients: dict[str, MqttClient] = {}
        self._readers: list[asyncio.Task[None]] = []
        self._fw_budget: dict[str, int] = {}

    # -- the run

    async def run(self) -> AttackResult:
        started = time.monotonic()
        self._deadline = started + self.time_limit_s
        try:
            await self._setup()
            await self._capture()
            self._sample_rss("start")
            self._baseline = await self._refusal_counts()
            self._base_reasons = await asyncio.to_thread(self._reason_counts)
            self._base_counts = await asyncio.to_thread(self._duplicate_counts)
            self._ind, self._seen_events = await self._indicators()
            complete = True
            for half in (0, 1):
                try:
                    for (link, cat), counts in self.plan.items():
                        if counts[half]:
                            await self._phase(link, cat, counts[half], first_half=half == 0)
                except _OutOfTime:
                    complete = False
                    self.result.notes.append(f"time limit of {self.time_limit_s:.0f} s reached")
                    break
                if half == 0:
                    self._sample_rss("warm")
            self.result.complete = complete and self._sent >= self.result.requested
            await self._judge_refusals()
            await self._phase_end_check()
            await self._legit()
            self._sample_rss("end")
            self._check_alive()
        finally:
            await self._teardown()
            self.result.elapsed_s = time.monotonic() - started
        return self.result

    def _late(self) -> bool:
        return time.monotonic() > self._deadline

    async def _phase(self, link: str, cat: str, n: int, *, first_half: bool) -> None:
        if self._late():
            raise _OutOfTime
        log.info("event=attack_phase link=%s category=%s messages=%d", link, cat, n)
        tally = Tally()
        before = self._ind
        low_before = await self._refusal_counts()
        expected_before = Counter(self.expected)
        if cat == "takeover":
            if link == "device":
                tally.sent, tally.accepted, notes = await self._takeover_village(n, first_half)
            else:
                tally.sent, tally.accepted, notes = await self._takeover_centre(n)
            tally.notes += notes
        else:
            shots = getattr(self, f"_{link}_{cat}")(n)
            await self._fire(shots)
            tally.sent = len(shots)
        await self._barrier(link, low_before, self.expected - expected_before)
        after, unexpected = await self._indicators()
        new_events = unexpected - self._seen_events
        self._ind, self._seen_events = after, unexpected
        for name in after:
            grew = after[name] - before[name]
            if grew <= 0:
                continue
            if name in ("played", "fw_played"):
                tally.played += grew
            else:
                tally.accepted += grew
                what = f"{name} +{grew}"
                if name == "events":
                    what += ": " + ", ".join(sorted(new_events)[:3])
                tally.notes.append(what)
        self.result.tally(link, cat).add(tally)

    # -- set-up: logins, keys, devices

    async def _setup(self) -> None:
        s = self.stack
        vb, cb = s.village_broker, s.centre_broker
        assert vb is not None and cb is not None and s.centre_tls is not None
        self.dir = s.root / "attacks"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.gw = s.gateway_id
        self.gw_log = LogWatch(s.root / "gateway.log")
        self.centre_log = LogWatch(s.root / "centre.log")
        # village logins
        victim_key, victim_pw = s.register_device(VICTIM, "h-victim", reload=False)
        evil_key, evil_pw = s.register_device(EVIL, "h-evil", reload=False)
        self.speakers: list[ProtoSpeaker] = []
        spk_pw: list[tuple[str, bytes, str]] = []
        for i in range(self.n_speakers):
            dev = f"spk-atk{i + 1}"
            key, pw = s.register_device(dev, f"h-{dev}", role="speaker", reload=False)
            spk_pw.append((dev, key, pw))
        self.fw_speakers: list[SimSpeaker] = [
            s.add_speaker(f"spk-fw{i + 1}", f"h-spk-fw{i + 1}", reload=False)
            for i in range(self.n_fw_speakers)
        ]
        self.fw_buttons: list[SimButton] = [
            s.add_button(f"btn-fw{i + 1}", f"h-btn-fw{i + 1}") for i in range(self.n_fw_buttons)
        ]
        self.firmware: list[SimButton | SimSpeaker] = [*self.fw_buttons, *self.fw_speakers]
        self._passwords = {name: f"pw-{name}-{self.rng.getrandbits(64):016x}"
                           for name in (STRAY, INTRUDER, INSIDER)}
        for name, pw in self._passwords.items():
            vb.add_user(name, pw)
        vb.write_acl([*vb.service_users, INSIDER])
        await asyncio.to_thread(vb.reload)
        port = vb.port
        self.victim = ProtoDevice(VICTIM, victim_key, HOST, port, victim_pw, clean=False)
        self.evil = ProtoDevice(EVIL, evil_key, HOST, port, evil_pw)
        await self.victim.connect()
        await self.evil.connect()
        for dev, key, pw in spk_pw:
            spk = ProtoSpeaker(dev, key, HOST, port, pw)
            await spk.connect()
            self.speakers.append(spk)
        for name in (STRAY, INSIDER):
            client = MqttClient(name, HOST, port, username=name, password=self._passwords[name])
            await client.connect()
            self._clients[name] = client
        # centre logins: certificates from the CA the broker trusts
        ca = pki.create_ca(s.pki_dir)
        self._tls = {n: client_tls(pki.issue_client(ca, self.dir, n)) for n in (TWIN, GHOST, ROGUE, SVC)}
        cb.write_acl([*cb.centre_users, SVC])
        await asyncio.to_thread(cb.reload)
        keys = self.dir / "signing"
        keys.mkdir(exist_ok=True)
        self.twin_key = generate_private_key(keys / "gw-twin.key")
        self.ghost_key = generate_private_key(keys / "gw-ghost.key")
        self.forger = generate_private_key(keys / "forger.key")
        self.centre_key = load_private_key(s.centre_dir / "centre.key")
        self.centre_pub = self.centre_key.public_key()
        await enrol_gateway_async(s.centre_config, TWIN, public_hex(self.twin_key), name="twin",
                                  villages=[TWIN_VILLAGE])
        for name in (TWIN, GHOST, SVC):
            client = MqttClient(name, HOST, cb.port, tls=self._tls[name])
            await client.connect()
            self._clients[name] = client
        await self._clients[TWIN].subscribe(f"ok/v1/gw/{TWIN}/down/#", qos=1)
        await self._clients[SVC].subscribe(f"ok/v1/gw/{self.gw}/up/event", qos=1)
        self._readers += [
            asyncio.create_task(self._read_twin()),
            asyncio.create_task(self._read_svc()),
        ]
        for fw in self.firmware:
            await asyncio.to_thread(fw.start)
        for fw in self.firmware:
            await asyncio.to_thread(fw.wait_for, lambda st: bool(st["connected"]), 30)
        self._fw_budget = {fw.device_id: self.firmware_shots for fw in self.fw_speakers}
        await asyncio.to_thread(s.wait_admin)
        self._admin_token = s.admin_token_file.read_text().strip()

    async def _teardown(self) -> None:
        for t in self._readers:
            t.cancel()
        for spk in getattr(self, "speakers", []):
            with contextlib.suppress(MqttError):
                await spk.close()
        for dev in (getattr(self, "victim", None), getattr(self, "evil", None)):
            if dev is not None:
                with contextlib.suppress(MqttError):
                    await dev.close()
        for client in self._clients.values():
            with contextlib.suppress(MqttError):
                await client.disconnect()

    def _client(self, via: str) -> MqttClient:
        if via == VICTIM:
            return self.victim.client
        if via == EVIL:
            return self.evil.client
        return self._clients[via]

    async def _read_twin(self) -> None:
        client = self._clients[TWIN]
        with contextlib.suppress(MqttError):
            async for msg in client.messages():
                if not msg.topic.endswith("/down/ack"):
                    continue
                try:
                    body = verify_frame(self.centre_pub, msg.topic, msg.payload)
                except SignatureError:
                    continue
                if len(self.captured_twin_acks) < 50:
                    self.captured_twin_acks.append((msg.topic, msg.payload))
                self.twin_received.add(str(body.get("id")))
                self._twin_changed.set()

    async def _read_svc(self) -> None:
        client = self._clients[SVC]
        with contextlib.suppress(MqttError):
            async for msg in client.messages():
                if len(self.captured_gw) < 50:
                    self.captured_gw.append((msg.topic, msg.payload))

    # -- genuine traffic

    async def _ensure_connected(self, dev: ProtoDevice | ProtoSpeaker) -> None:
        if not dev.client.connected:
            await dev.connect()
            if not dev.client.session_present:
                self.sessions_lost[dev.id] += 1

    async def _victim_event(self, kind: str = "alarm", **fields: Any) -> tuple[int, str, bytes]:
        """A genuine event from the victim; returns once the centre has it (`received`)."""
        await self._ensure_connected(self.victim)
        topic, payload, c = self.victim.frame(kind, **fields)
        self.genuine_events.add(f"{self.gw}:{VICTIM}:{c}")
        await self.victim.publish_raw(topic, payload)
        await self.victim.wait_ack(c, "received", timeout=60)
        return c, topic, payload

    async def _victim_hb(self) -> None:
        await self._ensure_connected(self.victim)
        self._hb_marker = f"g{len(self.captured_hb) + 1}"
        topic, payload, _ = self.victim.frame("hb", fw=self._hb_marker, bat=90)
        await self.victim.publish_raw(topic, payload)
        self.captured_hb.append((topic, payload))

    async def _twin_event(self) -> None:
        """A genuine event from the twin gateway; returns once the centre acked it."""
        self._twin_counter += 1
        body = self._twin_body(self._twin_counter)
        self.genuine_events.add(body["id"])
        topic, payload = self._twin_sign("event", body)
        await self._clients[TWIN].publish(topic, payload, qos=1)
        if len(self.captured_twin) < 50:
            self.captured_twin.append((topic, payload))
        await self._wait(lambda: body["id"] in self.twin_received, 60, self._twin_changed,
                         f"the centre's received ack for {body['id']}")

    async def _twin_hb(self) -> None:
        self._twin_marker += 1
        body = {"gw": TWIN, "ts": now_ms(), "outbox": self._twin_marker, "devices": 1,
                "villages": [TWIN_VILLAGE]}
        topic, payload = self._twin_sign("hb", body)
        await self._clients[TWIN].publish(topic, payload, qos=1)
        self.captured_twin.append((topic, payload))

    async def _capture(self) -> None:
        """Genuine traffic on every link, recorded by the attacker as it passes."""
        v = self.victim
        n_withheld = sum(self.plan[("device", "withheld")])
        for i in range(n_withheld):
            c = WITHHELD_BASE + i
            kind = "hb" if i % 10 == 9 else "test" if i % 5 == 4 else "alarm"
            fields: dict[str, Any] = {"fw": f"w{i}"} if kind == "hb" else {"up": c}
            self.withheld.append(okproto.encode_up(v.key, VICTIM, kind, c, fields))
        v.counter = GENUINE_BASE
        await self._victim_hb()
        for kind in ("alarm", "test", "alarm", "hb", "alarm", "alarm"):
            if kind == "hb":
                await self._victim_hb()
                continue
            c, topic, payload = await self._victim_event(kind, up=self.rng.randrange(10**6))
            self.captured_up.append((topic, payload))
            if kind == "alarm":
                self.open_alarms.append(c)
        cancelled = self.open_alarms.pop(1)
        _, topic, payload = await self._victim_event("cancel", ref=cancelled)
        self.captured_up.append((topic, payload))
        await self._victim_hb()
        await self._victim_event("alarm")  # the last heartbeat is in before the judge looks
        for _ in range(3):
            await self._twin_hb()
            await self._twin_event()
        await self._wait_api(lambda: self._twin_status() == (self._twin_marker, True), 30,
                             "the twin's heartbeat at the centre")
        await self._wait(lambda: len(self.captured_gw) >= 3, 30, None, "gw-demo's events on the wire")
        for k in range(2):
            body = self._bc_body(self.gw, text=f"第{k + 1}次演练通知。")
            payload = self._centre_sign(body, self._bc_topic())
            await self._clients[SVC].publish(self._bc_topic(), payload, qos=1)
            self.captured_bc.append(payload)
            self.genuine_bcs.add(body["id"])
        await self._wait_played(sorted(self.genuine_bcs))

    async def _wait_played(self, bc_ids: list[str], timeout: float = 90) -> None:
        for bc_id in bc_ids:
            for spk in self.speakers:
                await self._ensure_connected(spk)
                await spk.wait_played(bc_id, timeout)
            for fw in self.fw_speakers:
                await asyncio.to_thread(fw.wait_state, bc_id, "played", timeout)

    async def _wait(self, cond: Callable[[], bool], timeout: float, event: asyncio.Event | None,
                    what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"attack campaign: no {what} within {timeout:.0f} s")
            if event is not None:
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, 0.5))
            else:
                await asyncio.sleep(min(left, 0.05))

    # -- sending

    def _count_sent(self, n: int) -> None:
        self._sent += n
        self.progress(min(self._sent, self.planned), self.planned)

    async def _fire(self, shots: list[Shot]) -> None:
        for i in range(0, len(shots), CHUNK):
            if self._late():
                raise _OutOfTime
            chunk = shots[i : i + CHUNK]
            futures = []
            for shot in chunk:
                self.expected[shot.expect] += 1
                if shot.via.endswith("-once"):
                    await self._once(shot)
                    continue
                try:
                    futures.append(self._client(shot.via).publish_nowait(shot.topic, shot.payload, qos=1))
                except MqttError as exc:
                    self.result.notes.append(f"{shot.via} could not publish on {shot.topic}: {exc}")
            done = await asyncio.gather(*futures, return_exceptions=True)
            lost = [d for d in done if isinstance(d, BaseException)]
            if lost:
                self.result.notes.append(f"{len(lost)} publishes failed: {lost[0]!r}")
            self._count_sent(len(chunk))

    async def _once(self, shot: Shot) -> None:
        """A packet the broker must refuse (larger than its max_packet_size), sent on a
        connection of its own, which the broker then closes."""
        if shot.via == "intruder-once":
            vb = self.stack.village_broker
            assert vb is not None
            client = MqttClient(INTRUDER, HOST, vb.port, username=INTRUDER,
                                password=self._passwords[INTRUDER])
        else:
            cb = self.stack.centre_broker
            assert cb is not None
            client = MqttClient(ROGUE, HOST, cb.port, tls=self._tls[ROGUE])
        try:
            await client.connect(timeout=5)
            await client.publish(shot.topic, shot.payload, qos=1, timeout=3)
            self.result.notes.append(f"the broker took a {len(shot.payload)}-byte packet")
        except MqttError:
            pass
        finally:
            with contextlib.suppress(MqttError):
                await client.disconnect()

    # -- takeovers (§2.2: one login, one connection)

    async def _takeover_village(self, n: int, first_half: bool) -> tuple[int, int, list[str]]:
        """A device login connecting with other clients' ids. Returns (attempts, takeovers,
        notes)."""
        targets: list[tuple[str, str, bool]] = []
        if first_half:
            targets += [("gateway", f"onekey-gw-{self.gw}", True), ("gateway", "gateway", True)]
            targets += [("firmware", fw.device_id, True) for fw in self.firmware]
        protos: list[ProtoDevice | ProtoSpeaker] = [self.victim, *self.speakers]
        i = 0
        while len(targets) < n:
            targets.append(("proto", protos[i % len(protos)].id, i % 2 == 0))
            i += 1
        hits, notes, tried = 0, [], 0
        for kind, target, clean in targets[:n]:
            if self._late():
                break
            tried += 1
            hit = await self._try_village(kind, target, clean, protos)
            if hit:
                hits += 1
                notes.append(f"{target} lost its connection to a login with its client id"
                             f" (clean session {clean})")
            self._count_sent(1)
        if self.sessions_lost:
            notes.append("persistent sessions gone at reconnect (acks queued for them lost): "
                          + ", ".join(f"{d} {n}" for d, n in sorted(self.sessions_lost.items())))
            self.sessions_lost.clear()
        return tried, hits, notes

    async def _try_village(self, kind: str, target: str, clean: bool,
                           protos: list[ProtoDevice | ProtoSpeaker]) -> bool:
        vb = self.stack.village_broker
        assert vb is not None
        fw = next((f for f in self.firmware if f.device_id == target), None)
        before = 0
        if fw is not None:
            before = int((await asyncio.to_thread(fw.status))["connects"])
        self.gw_log.count("village_link_down")
        downs = self.gw_log.counts["village_link_down"]
        intruder = MqttClient(target, HOST, vb.port, username=INTRUDER, password=self._passwords[INTRUDER],
                              clean_session=clean)
        try:
            await intruder.connect(timeout=5)
        except MqttError:
            return False  # refused outright
        try:
            if kind == "proto":
                dev = next(d for d in protos if d.id == target)
                try:
                    await dev.client.publish(f"ok/v1/dev/{target}/probe", b"", qos=1, timeout=3)
                    return False
                except MqttError:
                    pass
                await intruder.disconnect()
                if dev.client.connected:
                    await dev.client.abort()
                await self._ensure_connected(dev)
                return True
            if kind == "gateway":
                if not await self._log_grows(self.gw_log, "village_link_down", downs, 1.0):
                    return False
                ups = self.gw_log.counts["village_link_up"]
                await intruder.disconnect()
                if not await self._log_grows(self.gw_log, "village_link_up", ups, 60):
                    self.result.notes.append("the gateway did not reconnect to the village broker")
                return True
            assert fw is not None
            await asyncio.sleep(1.0)  # the firmware notices a closed socket on its next read
            st = await asyncio.to_thread(fw.status)
            if st["connected"] and int(st["connects"]) == before:
                return False
            await intruder.disconnect()
            await asyncio.to_thread(fw.wait_for, lambda s: bool(s["connected"]), 60)
            return True
        finally:
            with contextlib.suppress(MqttError):
                await intruder.disconnect()

    async def _log_grows(self, watch: LogWatch, marker: str, was: int, timeout: float) -> bool:
        """True once `marker` has more lines than `was`; False after `timeout` seconds (the
        absence of a log line cannot be awaited otherwise)."""
        deadline = time.monotonic() + timeout
        while watch.count(marker) <= was:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _takeover_centre(self, n: int) -> tuple[int, int, list[str]]:
        """A gateway login connecting with the gateway's and the centre's client ids."""
        cb = self.stack.centre_broker
        assert cb is not None
        ids = [("gateway", f"onekey-gw-{self.gw}"), ("gateway", self.gw), ("centre", "centre")]
        targets = [(kind, cid, clean) for clean in (True, False) for kind, cid in ids]
        hits, notes, tried = 0, [], 0
        for kind, cid, clean in (targets * (1 + n // len(targets)))[:n]:
            if self._late():
                break
            tried += 1
            self._count_sent(1)
            if kind == "gateway":
                watch, down, up = self.gw_log, "centre_link_down", "centre_link_up"
            else:
                watch, down, up = self.centre_log, "broker_down", "broker_up"
            downs = watch.count(down)
            ups = watch.counts[up]
            rogue = MqttClient(cid, HOST, cb.port, tls=self._tls[ROGUE], clean_session=clean)
            try:
                await rogue.connect(timeout=5)
            except MqttError:
                continue
            try:
                if not await self._log_grows(watch, down, downs, 1.0):
                    continue
                hits += 1
                notes.append(f"the {kind}'s connection to the centre broker dropped for a login"
                             f" with client id {cid} (clean session {clean})")
            finally:
                with contextlib.suppress(MqttError):
                    await rogue.disconnect()
            if not await self._log_grows(watch, up, ups, 60):
                self.result.notes.append(f"the {kind} did not reconnect to the centre broker")
        return tried, hits, notes

    # -- barriers: everything sent before has been dealt with

    async def _barrier(self, link: str, before: dict[str, int], sent: Counter[str]) -> None:
        n = sum(sent.values())
        if link == "device":
            await self._victim_event("alarm")
            return
        if link == "uplink":
            await self._twin_event()
            return
        if link == "downlink":
            low = sum(v for k, v in sent.items() if k.startswith("gw:") and k != "gw:dup")
            await self._wait_api(lambda: self._gateway_refusals() >= before["gateway"] + low,
                                 15 + n / 100, "gateway refusals for the centre -> gateway messages")
            return
        want = sum(v for k, v in sent.items() if k.startswith("spk:"))
        fw_want = sum(v for k, v in sent.items() if k.startswith("fw:"))
        await self._wait_api(
            lambda: self._speaker_refusals() >= before["speakers"] + want
            and self._firmware_refusals() >= before["firmware"] + fw_want,
            20 + n / 50, "speaker refusals",
        )

    # -- the end: genuine traffic on every link, processes, memory

    async def _legit(self) -> None:
        legit = self.result.legit
        try:
            c, _, _ = await self._victim_event("alarm")
            legit["alarm"] = True
            eid = f"{self.gw}:{VICTIM}:{c}"
            self.staff_acked.add(c)
            await asyncio.to_thread(self._api, f"/api/alarms/{eid}/ack", "POST", {"by": "duty"})
            await self.victim.wait_ack(c, "acked", timeout=30)
            legit["staff_ack"] = True
        except (TimeoutError, MqttError, OSError, urllib.error.URLError) as exc:
            legit.setdefault("alarm", False)
            legit["staff_ack"] = False
            self.result.notes.append(f"genuine alarm: {exc}")
        try:
            await self._twin_event()
            legit["uplink"] = True
        except (TimeoutError, MqttError) as exc:
            legit["uplink"] = False
            self.result.notes.append(f"genuine uplink: {exc}")
        legit["broadcast"] = await self._legit_broadcast()
        for button in self.fw_buttons:
            legit[f"{button.device_id} press"] = await self._legit_press(button)

    async def _legit_broadcast(self) -> bool:
        body = {"by": "duty", "urgency": "Expected", "severity": "Minor", "certainty": "Observed",
                "valid_for_s": 600, "area": [{"village": self.stack.village}], "text": "演练结束。"}
        try:
            created = await asyncio.to_thread(self._api, "/api/broadcasts", "POST", body)
            bc_id = str(created["id"])
            self.genuine_bcs.add(bc_id)
            await self._wait_played([bc_id], 60)
        except (TimeoutError, MqttError, OSError, urllib.error.URLError) as exc:
            self.result.notes.append(f"genuine broadcast: {exc}")
            return False
        everyone = {s.id for s in self.speakers} | {f.device_id for f in self.fw_speakers}

        def reported() -> bool:
            detail = self._api(f"/api/broadcasts/{bc_id}")
            got = {s["device"]: s["state"] for s in detail["speakers"]}
            return all(got.get(d) == "played" for d in everyone)

        return await self._wait_api(reported, 30, "played reports at the centre")

    async def _legit_press(self, button: SimButton) -> bool:
        before = {r["id"] for r in await asyncio.to_thread(self._events)}
        await asyncio.to_thread(button.press)

        def arrived() -> bool:
            new = [r for r in self._events() if r["id"] not in before and r["device"] == button.device_id]
            self.genuine_events.update(r["id"] for r in new)
            return bool(new)

        return await self._wait_api(arrived, 30, f"alarm from {button.device_id} at the centre")
