"""The attack messages of the campaign (harness/attacks.py), per link and category.

`AttackShots` is the half of `AttackCampaign` that builds messages; the campaign supplies what
the attacker holds: logins and keys, and what it recorded of genuine traffic. Each message
says which connection sends it and what a correct system does with it (see `Shot`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_fw import okproto
from harness import forgery
from harness.protodevice import ProtoDevice
from harness.protospeaker import ProtoSpeaker
from harness.simdevice import SimButton
from harness.simspeaker import SimSpeaker
from harness.stack import LocalStack
from protocol.signed import SIG_HEX_LEN, encode_json, sign_frame

# The attacker's logins and the parties it pretends to be.
VICTIM, EVIL, STRAY, INTRUDER, INSIDER = "btn-victim", "btn-evil", "btn-stray", "btn-intruder", "svc-insider"
TWIN, GHOST, ROGUE, SVC, NEIGHBOUR = "gw-twin", "gw-ghost", "gw-rogue", "svc-attack", "gw-neighbour"
TWIN_VILLAGE, TWIN_DEVICE = "v-twin", "btn-t1"
WITHHELD_BASE = 1  # the victim's earliest counters: frames withheld and injected later
GENUINE_BASE = 100_000  # the victim's genuine counters, far above the withheld ones
FORGED_BASE = 10_000_000  # counters in forged frames (a new alarm each, were one accepted)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fw_rx_payload(device_id: str) -> int:
    """The largest broadcast copy the speaker firmware's receive buffer holds (device_fw/
    speaker.py RX_SIZE = MAX_BC_PAYLOAD + 64, for the PUBLISH's topic, packet id and payload)."""
    rx: int = okproto.MAX_BC_PAYLOAD + 64
    return rx - 2 - len(okproto.topic_down(device_id, "bc")) - 2


@dataclass(frozen=True)
class Shot:
    """One attack message: which connection sends it, and what a correct system does with it:
    `gw:<reason>` / `centre:<reason>` (refused and counted under that reason; `*` any reason;
    `dup` answered as a duplicate or refused as a replay), `spk:<id>` / `fw:<id>` / `dev:<id>`
    (refused by that protocol-level speaker, firmware speaker or protocol-level button),
    `fwdrop:<id>` (too large for the firmware's receive buffer: dropped unread), `acl` (dropped
    by the broker's ACL), `drop` (the broker refuses the packet and closes the connection)."""

    via: str
    topic: str
    payload: bytes
    expect: str


class AttackShots:
    """Builders `_{link}_{category}(n)`, each returning n messages (takeovers are not
    messages: the campaign makes those connections itself)."""

    rng: random.Random
    stack: LocalStack
    gw: str
    victim: ProtoDevice
    evil: ProtoDevice
    speakers: list[ProtoSpeaker]
    fw_speakers: list[SimSpeaker]
    fw_buttons: list[SimButton]
    twin_key: Ed25519PrivateKey
    ghost_key: Ed25519PrivateKey
    forger: Ed25519PrivateKey
    centre_key: Ed25519PrivateKey
    open_alarms: list[int]
    withheld: list[tuple[str, bytes]]
    captured_up: list[tuple[str, bytes]]  # the victim's events, as sent
    captured_hb: list[tuple[str, bytes]]  # the victim's heartbeats
    captured_gw: list[tuple[str, bytes]]  # gw-demo's signed events
    captured_twin: list[tuple[str, bytes]]  # the twin's events and heartbeats
    captured_twin_acks: list[tuple[str, bytes]]  # the centre's acks to the twin
    captured_bc: list[bytes]  # broadcasts the centre signed for gw-demo
    _twin_seq: int
    _fw_budget: dict[str, int]

    # -- genuine bodies, signed as their senders sign them

    def _twin_body(self, counter: int) -> dict[str, Any]:
        self._twin_seq += 1
        return {
            "id": f"{TWIN}:{TWIN_DEVICE}:{counter}", "gw": TWIN, "seq": self._twin_seq,
            "kind": "alarm", "device": TWIN_DEVICE, "counter": counter, "village": TWIN_VILLAGE,
            "household": "h-t1", "gw_ts": now_ms(),
        }

    def _twin_sign(self, kind: str, body: dict[str, Any] | bytes, key: Ed25519PrivateKey | None = None,
                   gw: str = TWIN) -> tuple[str, bytes]:
        topic = f"ok/v1/gw/{gw}/up/{kind}"
        raw = body if isinstance(body, bytes) else encode_json(body)
        return topic, sign_frame(key or self.twin_key, topic, raw)

    def _bc_body(self, gw: str, *, valid_s: float = 600, text: str = "演练通知。",
                 severity: str = "Minor", urgency: str = "Expected") -> dict[str, Any]:
        now = now_ms()
        return {
            "id": f"bc-atk-{self.rng.getrandbits(48):012x}", "gw": gw,
            "sender": "centre/attack-campaign", "sent": now, "status": "Exercise",
            "msgType": "Alert", "references": [], "urgency": urgency, "severity": severity,
            "certainty": "Observed", "expires": now + int(valid_s * 1000),
            "area": [{"village": self.stack.village, "groups": [], "speakers": []}],
            "language": "zh-CN", "text": text, "repeat": 1,
        }

    def _bc_topic(self, gw: str | None = None) -> str:
        return f"ok/v1/gw/{gw or self.gw}/down/bc"

    def _centre_sign(self, body: dict[str, Any] | bytes, topic: str,
                     key: Ed25519PrivateKey | None = None) -> bytes:
        raw = body if isinstance(body, bytes) else encode_json(body)
        return sign_frame(key or self.centre_key, topic, raw)

    # -- device -> gateway

    def _dev_topics(self) -> list[str]:
        return [okproto.topic_up(VICTIM, k) for k in ("alarm", "cancel", "test", "hb", "bcr")]

    def _device_forged(self, n: int) -> list[Shot]:
        out = []
        for i in range(n):
            c = FORGED_BASE + self.rng.randrange(10**6)
            kind = self.rng.randrange(6)
            if kind == 0:  # a new alarm under a random MAC
                t, p = okproto.encode_up(self.victim.key, VICTIM, "alarm", c, {"up": i})
                out.append(Shot(VICTIM, t, forgery.replace_head(p, 64, self.rng), "gw:bad_mac"))
            elif kind == 1:  # a captured alarm with its body changed
                t, p = self.rng.choice(self.captured_up)
                out.append(Shot(VICTIM, t, forgery.tamper_up(p, self.rng, c), "gw:bad_mac"))
            elif kind == 2:  # MAC'd with another device's key
                t, p = okproto.encode_up(self.evil.key, VICTIM, "alarm", c, {"up": i})
                out.append(Shot(VICTIM, t, p, "gw:bad_mac"))
            elif kind == 3:  # a broker login that is no registered device
                key = self.rng.randbytes(32)
                t, p = okproto.encode_up(key, STRAY, "alarm", 1 + i, {"up": i})
                out.append(Shot(STRAY, t, p, "gw:unknown_device"))
            elif kind == 4:  # a heartbeat saying all is well, forged
                t, p = okproto.encode_up(self.rng.randbytes(32), VICTIM, "hb", c, {"fw": f"x{i}", "bat": 100})
                out.append(Shot(VICTIM, t, p, "gw:bad_mac"))
            else:  # a speaker's report that a broadcast played, forged
                bc_id = f"bc-{self.rng.getrandbits(32):08x}"
                fields: dict[str, object] = {"id": bc_id, "s": "played"}
                t, p = okproto.encode_up(self.rng.randbytes(32), VICTIM, "bcr", c, fields)
                out.append(Shot(VICTIM, t, p, "gw:bad_mac"))
        return out

    def _device_replayed(self, n: int) -> list[Shot]:
        out = []
        for i in range(n):
            if i % 4 == 3:
                t, p = self.rng.choice(self.captured_hb)
                out.append(Shot(VICTIM, t, p, "gw:replay"))
            else:
                t, p = self.rng.choice(self.captured_up)
                out.append(Shot(VICTIM, t, p, "gw:dup"))
        return out

    def _device_withheld(self, n: int) -> list[Shot]:
        out = []
        for _ in range(n):
            if not self.withheld:
                break
            t, p = self.withheld.pop(0)
            out.append(Shot(VICTIM, t, p, "gw:replay"))
        return out

    def _device_cross_device(self, n: int) -> list[Shot]:
        out = []
        others = [b.device_id for b in self.fw_buttons]
        for i in range(n):
            c = FORGED_BASE + self.rng.randrange(10**6)
            kind = self.rng.randrange(5)
            if kind == 0:  # on the victim's topic, with its own key
                t, p = okproto.encode_up(self.evil.key, VICTIM, "alarm", c, {"up": i})
                out.append(Shot(EVIL, t, p, "acl"))
            elif kind == 1:  # the victim's captured frames, from another login
                t, p = self.rng.choice(self.captured_up)
                out.append(Shot(EVIL, t, p, "acl"))
            elif kind == 2:  # its own topic, the victim's id in the body
                t = okproto.topic_up(EVIL, "alarm")
                body = okproto.encode_body([("t", "alarm"), ("d", VICTIM), ("c", c)])
                out.append(Shot(EVIL, t, okproto.frame(self.evil.key, t, body), "gw:topic_mismatch"))
            elif kind == 3:  # an ack to the victim: help is coming
                t, p = okproto.encode_ack(self.evil.key, VICTIM, now_ms(), self.open_alarms[0], "acked",
                                          by="duty")
                out.append(Shot(EVIL, t, p, "acl"))
            else:  # a firmware button's topic
                dev = self.rng.choice(others) if others else VICTIM
                t, p = okproto.encode_up(self.evil.key, dev, "alarm", c, {"up": i})
                out.append(Shot(EVIL, t, p, "acl"))
        return out

    def _device_oversized(self, n: int) -> list[Shot]:
        out = []
        over = min(3, n // 20)
        for i in range(n):
            if i < over:  # larger than the broker's max_packet_size
                p = forgery.oversized(self.rng, 64, 4200, 6000, forgery.padded_json)
                out.append(Shot("intruder-once", okproto.topic_up(INTRUDER, "alarm"), p, "drop"))
                continue
            p = forgery.oversized(self.rng, 64, okproto.MAX_PAYLOAD + 1, 3900, forgery.padded_json)
            out.append(Shot(VICTIM, self.rng.choice(self._dev_topics()), p, "gw:oversized"))
        return out

    def _device_malformed(self, n: int) -> list[Shot]:
        out = []
        for _ in range(n):
            t, p, reason = forgery.malformed_up(self.rng, self.victim.key, VICTIM, FORGED_BASE)
            out.append(Shot(VICTIM, t, p, f"gw:{reason}"))
        return out

    def _device_fuzzed(self, n: int) -> list[Shot]:
        out = []
        frames = self.captured_up + self.captured_hb
        for i in range(n):
            if i % 2:
                t, p = self.rng.choice(frames)
                p = forgery.mutate(p, self.rng, 64, 600)
            else:
                t, p = self.rng.choice(self._dev_topics()), forgery.random_bytes(self.rng, 0, 600)
            out.append(Shot(VICTIM, t, p, "gw:*"))
        return out

    # -- gateway -> centre

    def _fresh_counter(self) -> int:
        return FORGED_BASE + self.rng.randrange(10**6)

    def _uplink_forged(self, n: int) -> list[Shot]:
        out = []
        for _ in range(n):
            kind = self.rng.randrange(5)
            if kind == 4:  # speakers' reports, signed by a key the centre never enrolled
                reports: dict[str, Any] = {"gw": TWIN, "bc": "bc-x",
                                           "reports": [{"device": "spk-1", "s": "played", "at": now_ms()}]}
                t, p = self._twin_sign("bcr", reports, key=self.forger)
                out.append(Shot(TWIN, t, p, "centre:bad_signature"))
            elif kind == 0:  # a new event signed by a key the centre never enrolled
                t, p = self._twin_sign("event", self._twin_body(self._fresh_counter()), key=self.forger)
                out.append(Shot(TWIN, t, p, "centre:bad_signature"))
            elif kind == 1:
                body = {"gw": TWIN, "ts": now_ms() + 10**6, "outbox": 999_999, "devices": 9}
                t, p = self._twin_sign("hb", body, key=self.forger)
                out.append(Shot(TWIN, t, p, "centre:bad_signature"))
            elif kind == 2:  # a captured event, changed
                t, p = self.rng.choice([f for f in self.captured_twin if f[0].endswith("/event")])
                c = self._fresh_counter()

                def change(b: dict[str, Any], c: int = c) -> None:
                    b["counter"], b["id"] = c, f"{TWIN}:{TWIN_DEVICE}:{c}"

                out.append(Shot(TWIN, t, forgery.tamper_signed(p, change), "centre:bad_signature"))
            else:  # a gateway the centre never enrolled
                body = self._twin_body(self._fresh_counter()) | {"gw": GHOST}
                body["id"] = f"{GHOST}:{TWIN_DEVICE}:{body['counter']}"
                t, p = self._twin_sign("event", body, key=self.ghost_key, gw=GHOST)
                out.append(Shot(GHOST, t, p, "centre:unknown_gateway"))
        return out

    def _uplink_replayed(self, n: int) -> list[Shot]:
        out = []
        for _ in range(n):
            t, p = self.rng.choice(self.captured_twin)
            out.append(Shot(TWIN, t, p, "centre:dup" if t.endswith("/event") else "centre:replay"))
        return out

    def _uplink_cross_device(self, n: int) -> list[Shot]:
        out = []
        for _ in range(n):
            kind = self.rng.randrange(5)
            body = self._twin_body(self._fresh_counter()) | {"gw": self.gw}
            body["id"] = f"{self.gw}:{VICTIM}:{body['counter']}"
            body["device"] = VICTIM
            if kind == 0:  # on gw-demo's topics
                sub = self.rng.choice(("event", "hb", "bcr"))
                t, p = self._twin_sign(sub, body, gw=self.gw)
                out.append(Shot(TWIN, t, p, "acl"))
            elif kind == 1:  # its own topic, gw-demo in the body
                t, p = self._twin_sign("event", body)
                out.append(Shot(TWIN, t, p, "centre:topic_mismatch"))
            elif kind == 2:  # gw-demo's events captured on the wire, sent as its own
                _, p = self.rng.choice(self.captured_gw)
                out.append(Shot(TWIN, f"ok/v1/gw/{TWIN}/up/event", p, "centre:bad_signature"))
            elif kind == 3:  # a centre service login writing a gateway's uplink
                t, p = self.rng.choice(self.captured_gw)
                out.append(Shot(SVC, t, p, "acl"))
            else:  # a gateway writing another gateway's downlink
                t = self.rng.choice((f"ok/v1/gw/{self.gw}/down/ack", self._bc_topic()))
                ack = {"id": f"{self.gw}:{VICTIM}:{self.open_alarms[0]}", "s": "acked", "at": now_ms(),
                       "by": "duty", "note": ""}
                out.append(Shot(TWIN, t, sign_frame(self.twin_key, t, encode_json(ack)), "acl"))
        return out

    def _uplink_oversized(self, n: int) -> list[Shot]:
        out = []
        over = min(2, n // 20)
        for i in range(n):
            if i < over:
                p = forgery.oversized(self.rng, SIG_HEX_LEN, 17_000, 20_000, forgery.padded_json)
                out.append(Shot("rogue-once", f"ok/v1/gw/{ROGUE}/up/event", p, "drop"))
                continue
            size = self.rng.randint(8300, 16_000)
            body = self._twin_body(self._fresh_counter())
            body["household"] = "h" * (size - len(encode_json(body)) - SIG_HEX_LEN - 1)
            t, p = self._twin_sign(self.rng.choice(("event", "hb")), body)
            out.append(Shot(TWIN, t, p, "centre:oversized"))
        return out

    def _uplink_malformed(self, n: int) -> list[Shot]:
        out = []
        for _ in range(n):
            t, p = self.rng.choice(self.captured_twin)
            if self.rng.random() < 0.7:
                out.append(Shot(TWIN, t, forgery.malformed_signed(self.rng, p), "centre:malformed"))
            else:
                raw = self.rng.choice((b"[]", b'"event"', b'{"a"', b"\xff{}", b"null", b"1e999"))
                t, p = self._twin_sign(t.rsplit("/", 1)[1], raw)
                out.append(Shot(TWIN, t, p, "centre:bad_json"))
        return out

    def _uplink_fuzzed(self, n: int) -> list[Shot]:
        out = []
        for i in range(n):
            kind = i % 4
            if kind == 0:  # signed with the twin's real key, one field broken
                body, reason = forgery.invalid_event(self.rng, self._twin_body(self._fresh_counter()), TWIN)
                t, p = self._twin_sign("event", body)
                out.append(Shot(TWIN, t, p, f"centre:{reason}"))
            elif kind == 1:
                hb, reason = forgery.invalid_heartbeat(self.rng, TWIN)
                t, p = self._twin_sign("hb", hb)
                out.append(Shot(TWIN, t, p, f"centre:{reason}"))
            elif kind == 2:
                t = self.rng.choice((f"ok/v1/gw/{TWIN}/up/event", f"ok/v1/gw/{TWIN}/up/hb"))
                out.append(Shot(TWIN, t, forgery.random_bytes(self.rng, 0, 400), "centre:*"))
            else:
                t, p = self.rng.choice(self.captured_twin)
                out.append(Shot(TWIN, t, forgery.mutate(p, self.rng, SIG_HEX_LEN, 8192), "centre:*"))
        return out

    # -- centre -> gateway

    def _ack_topic(self) -> str:
        return f"ok/v1/gw/{self.gw}/down/ack"

    def _forged_ack(self) -> dict[str, Any]:
        c = self.rng.choice(self.open_alarms)
        return {"id": f"{self.gw}:{VICTIM}:{c}", "s": "acked", "at": now_ms(), "by": "duty",
                "note": "help is coming"}

    def _downlink_forged(self, n: int) -> list[Shot]:
        out = []
        for i in range(n):
            kind = i % 4
            if kind == 0:
                p = self._centre_sign(self._forged_ack(), self._ack_topic(), key=self.forger)
                out.append(Shot(SVC, self._ack_topic(), p, "gw:centre_bad_signature"))
            elif kind == 1 and self.captured_twin_acks:  # the centre's ack to the twin, changed
                _, p = self.rng.choice(self.captured_twin_acks)
                forged = self._forged_ack()

                def change(b: dict[str, Any], forged: dict[str, Any] = forged) -> None:
                    b.update(forged)

                out.append(Shot(SVC, self._ack_topic(), forgery.tamper_signed(p, change),
                                "gw:centre_bad_signature"))
            elif kind == 2:
                body = self._bc_body(self.gw, severity="Extreme", urgency="Immediate", text=f"伪造警报{i}")
                p = self._centre_sign(body, self._bc_topic(), key=self.forger)
                out.append(Shot(SVC, self._bc_topic(), p, "gw:bc_bad_signature"))
            else:
                p = self.rng.choice(self.captured_bc)
                p = forgery.tamper_signed(p, self._tamper_bc)
                out.append(Shot(SVC, self._bc_topic(), p, "gw:bc_bad_signature"))
        return out

    def _tamper_bc(self, body: dict[str, Any]) -> None:
        change = self.rng.randrange(5)
        if change == 0:
            body["text"] = "紧急通知：水库决堤，立即撤离！"
        elif change == 1:
            body["expires"] += 3_600_000
        elif change == 2:
            body["severity"], body["urgency"] = "Extreme", "Immediate"
        elif change == 3:
            body["id"] += "x"
        else:
            body["area"] = [{"village": self.stack.village, "groups": [], "speakers": [self.speakers[0].id]}]

    def _downlink_replayed(self, n: int) -> list[Shot]:
        return [Shot(SVC, self._bc_topic(), self.rng.choice(self.captured_bc), "gw:bc_replay")
                for _ in range(n)]

    def _downlink_withheld(self, n: int) -> list[Shot]:
        """Broadcasts the centre signed, held back until they expired, then injected."""
        out = []
        for i in range(n):
            body = self._bc_body(self.gw, valid_s=-(1 + i % 3600))
            p = self._centre_sign(body, self._bc_topic())
            out.append(Shot(SVC, self._bc_topic(), p, "gw:bc_expired"))
        return out

    def _downlink_cross_device(self, n: int) -> list[Shot]:
        out = []
        for i in range(n):
            kind = i % 3
            other = self._bc_body(NEIGHBOUR)
            if kind == 0:  # a copy signed for the neighbour's topic
                p = self._centre_sign(other, self._bc_topic(NEIGHBOUR))
                out.append(Shot(SVC, self._bc_topic(), p, "gw:bc_bad_signature"))
            elif kind == 1:  # signed for this topic, but made for the neighbour
                p = self._centre_sign(other, self._bc_topic())
                out.append(Shot(SVC, self._bc_topic(), p, "gw:bc_wrong_gateway"))
            elif self.captured_twin_acks:  # the centre's genuine ack to the twin
                _, p = self.rng.choice(self.captured_twin_acks)
                out.append(Shot(SVC, self._ack_topic(), p, "gw:centre_bad_signature"))
            else:
                p = self._centre_sign(other, self._bc_topic(NEIGHBOUR))
                out.append(Shot(SVC, self._bc_topic(), p, "gw:bc_bad_signature"))
        return out

    def _downlink_oversized(self, n: int) -> list[Shot]:
        out = []
        over = min(2, n // 20)
        for i in range(n):
            if i < over:  # a broadcast larger than the centre broker's packet limit
                p = forgery.oversized(self.rng, SIG_HEX_LEN, 17_000, 20_000, forgery.padded_json)
                out.append(Shot("rogue-once", f"ok/v1/gw/{ROGUE}/up/bcr", p, "drop"))
                continue
            ack = self._forged_ack()
            ack["note"] = "n" * self.rng.randint(8200, 15_800)
            out.append(Shot(SVC, self._ack_topic(), self._centre_sign(ack, self._ack_topic()),
                            "gw:centre_oversized"))
        return out

    def _downlink_malformed(self, n: int) -> list[Shot]:
        out = []
        bad_acks = (
            {"id": f"gw-other:{VICTIM}:1", "s": "acked"},
            {"id": 5, "s": "acked"},
            {"id": f"{self.gw}:{VICTIM}:x", "s": "acked"},
            {"id": f"{self.gw}:{VICTIM}:{self.open_alarms[0]}", "s": "done"},
            {"id": f"{self.gw}:a:b:1", "s": "acked"},
            {"s": "acked"},
        )
        for i in range(n):
            kind = i % 5
            if kind == 0:
                p = forgery.malformed_signed(self.rng, self.rng.choice(self.captured_bc))
                out.append(Shot(SVC, self._bc_topic(), p, "gw:bc_bad_signature"))
            elif kind == 1:
                good = self._centre_sign(self._forged_ack(), self._ack_topic())
                p = forgery.malformed_signed(self.rng, good)
                out.append(Shot(SVC, self._ack_topic(), p, "gw:centre_malformed"))
            elif kind == 2:  # signed by the centre, one field out of the contract
                body = forgery.invalid_broadcast(self.rng, self._bc_body(self.gw))
                out.append(Shot(SVC, self._bc_topic(), self._centre_sign(body, self._bc_topic()),
                                "gw:bc_bad_field"))
            elif kind == 3:
                body = self.rng.choice(bad_acks)
                out.append(Shot(SVC, self._ack_topic(), self._centre_sign(body, self._ack_topic()),
                                "gw:centre_bad_field"))
            else:
                raw = self.rng.choice((b"[]", b'{"a"', b"\xff{}", b"null"))
                topic = self.rng.choice((self._ack_topic(), self._bc_topic()))
                reason = "centre_bad_json" if topic.endswith("/ack") else "bc_bad_signature"
                out.append(Shot(SVC, topic, self._centre_sign(raw, topic), f"gw:{reason}"))
        return out

    def _downlink_fuzzed(self, n: int) -> list[Shot]:
        out = []
        for i in range(n):
            kind = i % 4
            if kind == 0:
                out.append(Shot(SVC, self._bc_topic(), forgery.random_bytes(self.rng, 0, 600), "gw:*"))
            elif kind == 1:
                out.append(Shot(SVC, self._ack_topic(), forgery.random_bytes(self.rng, 0, 600), "gw:*"))
            elif kind == 2:
                p = forgery.mutate(self.rng.choice(self.captured_bc), self.rng, SIG_HEX_LEN, 16_000)
                out.append(Shot(SVC, self._bc_topic(), p, "gw:*"))
            else:
                p = self._centre_sign(self._forged_ack(), self._ack_topic())
                p = forgery.mutate(p, self.rng, SIG_HEX_LEN, 8000)
                out.append(Shot(SVC, self._ack_topic(), p, "gw:*"))
        return out

    # -- gateway -> speaker

    def _target(self, i: int) -> tuple[str, bytes, str]:
        """(speaker id, its key, expect): every tenth message goes to a firmware speaker while
        its share lasts, the rest to the protocol-level speakers in turn."""
        if i % 10 == 0:
            for fw in self.fw_speakers:
                if self._fw_budget[fw.device_id] > 0:
                    self._fw_budget[fw.device_id] -= 1
                    return fw.device_id, bytes.fromhex(fw.config["key"]), f"fw:{fw.device_id}"
        spk = self.speakers[i % len(self.speakers)]
        return spk.id, spk.key, f"spk:{spk.id}"

    def _attack_fields(self, i: int) -> dict[str, object]:
        return {"id": f"atk-{self.rng.getrandbits(32):08x}", "mt": "Alert", "st": "Actual", "pri": 0,
                "exp": now_ms() + 600_000, "text": f"假警报{i}"}

    def _speaker_forged(self, n: int) -> list[Shot]:
        """Forged copies to the speakers, and forged acks to the victim button (the same link:
        gateway to device): `acked`, help is coming."""
        out = []
        for i in range(n):
            if i % 5 == 4:
                t, p = okproto.encode_ack(self.rng.randbytes(32), VICTIM, now_ms() + 10**6,
                                          self.rng.choice(self.open_alarms), "acked", by="duty")
                out.append(Shot(INSIDER, t, p, f"dev:{VICTIM}"))
                continue
            dev, _, expect = self._target(i)
            t, p = okproto.encode_bc(self.rng.randbytes(32), dev, now_ms() + 10**6, self._attack_fields(i))
            out.append(Shot(INSIDER, t, p, expect))
        return out

    def _speaker_replayed(self, n: int) -> list[Shot]:
        """Copies under the speaker's own key with a counter it has already passed: what a
        recorded genuine copy is, sent again (withheld or not)."""
        out = []
        for i in range(n):
            dev, key, expect = self._target(i)
            fields = self._attack_fields(i)
            if i % 3 == 0:
                fields["exp"] = now_ms() - 1000  # held back until it expired, too
            t, p = okproto.encode_bc(key, dev, 1000 + i, fields)
            out.append(Shot(INSIDER, t, p, expect))
        return out

    def _speaker_cross_device(self, n: int) -> list[Shot]:
        out = []
        for i in range(n):
            dev, _, expect = self._target(i)
            if i % 2:  # a device login writing a speaker's downlink: the ACL drops it
                t, p = okproto.encode_bc(self.evil.key, dev, now_ms() + 10**6, self._attack_fields(i))
                out.append(Shot(EVIL, t, p, "acl"))
                continue
            other = next((s for s in self.speakers if s.id != dev), self.speakers[0])
            _, p = okproto.encode_bc(other.key, other.id, 1000 + i, self._attack_fields(i))
            out.append(Shot(INSIDER, okproto.topic_down(dev, "bc"), p, expect))
        return out

    def _speaker_oversized(self, n: int) -> list[Shot]:
        """Copies longer than §8.2 allows. A firmware speaker gets two: one its receive buffer
        holds (it must refuse it as oversized) and one it does not (its MQTT client reads and
        drops that one before any check: `fwdrop`, not counted as a refusal)."""
        out = []
        fw = [(f.device_id, fits) for f in self.fw_speakers[:1] for fits in (False, True)]
        for i in range(n):
            spk = self.speakers[i % len(self.speakers)]
            dev, expect = spk.id, f"spk:{spk.id}"
            lo, hi = okproto.MAX_BC_PAYLOAD + 1, 3950
            if i % 10 == 5 and fw:
                dev, fits = fw.pop()
                if fits:
                    expect, hi = f"fw:{dev}", fw_rx_payload(dev)
                else:
                    expect, lo = f"fwdrop:{dev}", fw_rx_payload(dev) + 1
            p = forgery.oversized(self.rng, 64, lo, hi, forgery.padded_json)
            out.append(Shot(INSIDER, okproto.topic_down(dev, "bc"), p, expect))
        return out

    def _speaker_malformed(self, n: int) -> list[Shot]:
        out = []
        for i in range(n):
            dev, _, expect = self._target(i)
            _, good = okproto.encode_bc(self.rng.randbytes(32), dev, 1000 + i, self._attack_fields(i))
            mac, body = good[:64], good[65:]
            p = self.rng.choice((mac + body, mac.upper() + b" " + body, b"z" * 64 + b" " + body, b"",
                                 mac + b" {", mac[:63] + b" " + body))
            out.append(Shot(INSIDER, okproto.topic_down(dev, "bc"), p, expect))
        return out

    def _speaker_fuzzed(self, n: int) -> list[Shot]:
        out = []
        for i in range(n):
            dev, _, expect = self._target(i)
            if i % 2:
                p = forgery.random_bytes(self.rng, 0, 600)
            else:
                _, good = okproto.encode_bc(self.rng.randbytes(32), dev, 1000 + i, self._attack_fields(i))
                p = forgery.mutate(good, self.rng, 64, 3000)
            out.append(Shot(INSIDER, okproto.topic_down(dev, "bc"), p, expect))
        return out
