"""Gateway -> centre messages (docs/protocol.md §1.2, §6.2, §6.5, §6.6), pure.

`open_up` checks one message from the centre broker in the order of §3.4 adapted to §6: topic,
then enrolment, then the signature (so an unauthenticated sender never reaches the JSON
parser). The `parse_*` functions then check every field of an authenticated body. Every input
either parses or raises `Rejected` with one reason. The `encode_*` functions give the body
(a dict, signed with `protocol.signed`) that the matching `parse_*` reads back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device_fw.okproto import EVENT_KINDS, MAX_INT, reserved_id, valid_bc_id, valid_id
from protocol import topics
from protocol.errors import BAD_FIELD, TOPIC_MISMATCH, UNKNOWN_GATEWAY, Rejected
from protocol.signed import SIG_HEX_LEN, fit, json_len, verify_frame

MAX_TEXT = 128  # an event's village and household
SUPERVISION = "supervision"  # §6.2.1: the kind of an event the gateway raises about a device
# §6.2.1: a supervision event's id is `{gw}:svc-sup:{n}`: the device place holds a reserved
# name (§1.1), which no device id can ever be, and `n` is the gateway's own supervision
# counter, so these ids never collide with a device's.
SUP_SOURCE = "svc-sup"
# §6.2.1: what happened to the device: a condition raised and the event that clears it.
SUP_WHATS = (
    "seen", "lost", "restored", "low_battery", "battery_ok", "fault", "fault_clear",
    "tamper", "tamper_clear",
)
POWER_PROFILES = ("mains", "battery")
MAX_CODE = 16  # a fault code (§4 `flt`)
MAX_VILLAGES = 64  # §6.5: per gateway heartbeat
MAX_DEVS = 64  # §6.5: supervised devices listed in one gateway heartbeat
MAX_CONFIRMATIONS = 200  # §6.6: acks and broadcast ids in one message
CONFIRMED_STATES = ("received", "acked")  # §6.6: the §6.4 states a gateway confirms


# -- §1.2 event ids


def event_id(gw: str, device: str, counter: int) -> str:
    """§1.2: `{gateway_id}:{device_id}:{counter}`, the counter in decimal."""
    return f"{gw}:{device}:{counter}"


def parse_event_id(text: object) -> tuple[str, str, int]:
    """§1.2 id -> (gw, device, counter). The counter is 1..2^53 in decimal without leading
    zeros, so that one event has one id."""
    parts = text.split(":") if isinstance(text, str) else []
    if (
        len(parts) != 3
        or not valid_id(parts[0])
        or not valid_id(parts[1])
        or not 1 <= len(parts[2]) <= 16
        or parts[2].strip("0123456789")
        or parts[2][0] == "0"
        or int(parts[2]) >= MAX_INT
    ):
        raise Rejected(BAD_FIELD, f"{str(text)[:100]!r} is not an event id gw:device:counter (§1.2)")
    return parts[0], parts[1], int(parts[2])


# -- shared field checks


def _int(body: Mapping[str, Any], name: str, lo: int = 0) -> int:
    v = body.get(name)
    if type(v) is not int or not lo <= v < MAX_INT:
        raise Rejected(BAD_FIELD, f"{name} must be an integer {lo}..2^53")
    return v


def _opt_int(body: Mapping[str, Any], name: str) -> int | None:
    return None if body.get(name) is None else _int(body, name)


def _text(body: Mapping[str, Any], name: str, optional: bool = False) -> str:
    v = body.get(name)
    if v is None and optional:
        return ""
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise Rejected(BAD_FIELD, f"{name} must be a string of at most {MAX_TEXT} characters")
    return v


def check_gw(body: Mapping[str, Any], gw: str) -> None:
    """The body names the gateway of its topic (`topic_mismatch`)."""
    if body.get("gw") != gw:
        raise Rejected(TOPIC_MISMATCH, f"body gw {str(body.get('gw'))[:40]!r} is not {gw!r}")


# -- §6.2 events


@dataclass(frozen=True)
class Supervision:
    """What a §6.2.1 supervision event says about one device."""

    what: str
    subject: str  # the device's id
    role: str  # button or speaker
    power: str  # its profile: mains or battery
    period_s: int  # its heartbeat or check-in period
    lost_after_s: int  # the silence after which the gateway calls it lost
    last_seen: int | None = None  # gateway ms when last heard; None: not since the gateway started
    bat: int | None = None  # battery percent last reported
    fw: str | None = None  # firmware version last reported
    code: str | None = None  # the fault code (`fault`, `fault_clear`)


def encode_supervision(sup: Supervision) -> dict[str, Any]:
    body: dict[str, Any] = {
        "what": sup.what, "subject": sup.subject, "role": sup.role, "power": sup.power,
        "period_s": sup.period_s, "lost_after_s": sup.lost_after_s,
    }
    for name in ("last_seen", "bat", "fw", "code"):
        value = getattr(sup, name)
        if value is not None:
            body[name] = value
    return body


def parse_supervision(body: object) -> Supervision:
    """Check the `sup` object of a §6.2.1 event."""
    if not isinstance(body, dict):
        raise Rejected(BAD_FIELD, "sup must be an object (§6.2.1)")
    what = body.get("what")
    if what not in SUP_WHATS:
        raise Rejected(BAD_FIELD, f"sup.what must be one of {', '.join(SUP_WHATS)}")
    subject = body.get("subject")
    if not isinstance(subject, str) or not valid_id(subject) or reserved_id(subject):
        raise Rejected(BAD_FIELD, "sup.subject must be a device id (§1.1)")
    if body.get("role") not in ("button", "speaker"):
        raise Rejected(BAD_FIELD, "sup.role must be button or speaker")
    if body.get("power") not in POWER_PROFILES:
        raise Rejected(BAD_FIELD, "sup.power must be mains or battery")
    bat = _opt_int(body, "bat")
    if bat is not None and bat > 100:
        raise Rejected(BAD_FIELD, "sup.bat must be a percentage 0..100")
    texts = {}
    for name in ("fw", "code"):
        v = body.get(name)
        if v is not None and (not isinstance(v, str) or len(v) > MAX_CODE):
            raise Rejected(BAD_FIELD, f"sup.{name} must be a string of at most {MAX_CODE} characters")
        texts[name] = v
    return Supervision(
        what=str(what),
        subject=subject,
        role=str(body["role"]),
        power=str(body["power"]),
        period_s=_int(body, "period_s", lo=1),
        lost_after_s=_int(body, "lost_after_s", lo=1),
        last_seen=_opt_int(body, "last_seen"),
        bat=bat,
        fw=texts["fw"],
        code=texts["code"],
    )


@dataclass(frozen=True)
class Event:
    """One alarm, cancel or test as the gateway forwards it (§6.2)."""

    id: str
    gw: str
    seq: int
    kind: str
    device: str
    counter: int
    village: str
    household: str
    gw_ts: int
    ref: str | None = None  # a cancel's: the cancelled alarm's id
    dev_ts: int | None = None
    dev_up: int | None = None
    sup: Supervision | None = None  # a supervision event's (§6.2.1); None for the device kinds


def new_event(
    gw: str,
    seq: int,
    kind: str,
    device: str,
    counter: int,
    *,
    village: str,
    household: str,
    gw_ts: int,
    ref_counter: int | None = None,
    dev_ts: int | None = None,
    dev_up: int | None = None,
    sup: Supervision | None = None,
) -> Event:
    """An event with its §1.2 id, and a cancel's `ref` made from the cancelled alarm's counter."""
    return Event(
        id=event_id(gw, device, counter),
        gw=gw,
        seq=seq,
        kind=kind,
        device=device,
        counter=counter,
        village=village,
        household=household,
        gw_ts=gw_ts,
        ref=None if ref_counter is None else event_id(gw, device, ref_counter),
        dev_ts=dev_ts,
        dev_up=dev_up,
        sup=sup,
    )


def encode_event(ev: Event) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ev.id,
        "gw": ev.gw,
        "seq": ev.seq,
        "kind": ev.kind,
        "device": ev.device,
        "counter": ev.counter,
        "village": ev.village,
        "household": ev.household,
        "gw_ts": ev.gw_ts,
    }
    if ev.ref is not None:
        body["ref"] = ev.ref
    if ev.dev_ts is not None:
        body["dev_ts"] = ev.dev_ts
    if ev.dev_up is not None:
        body["dev_up"] = ev.dev_up
    if ev.sup is not None:
        body["sup"] = encode_supervision(ev.sup)
    return body


def parse_event(body: Mapping[str, Any], gw: str) -> Event:
    """Check an authenticated §6.2 body from gateway `gw`."""
    check_gw(body, gw)
    kind = body.get("kind")
    if kind not in EVENT_KINDS and kind != SUPERVISION:
        raise Rejected(BAD_FIELD, "kind must be alarm, cancel, test or supervision")
    device = body.get("device")
    if not isinstance(device, str) or not valid_id(device):
        raise Rejected(BAD_FIELD, "device must be a device id (§1.1)")
    if (kind == SUPERVISION) != (device == SUP_SOURCE):
        raise Rejected(BAD_FIELD, f"device {SUP_SOURCE} is for a supervision event only (§6.2.1)")
    sup = None
    if kind == SUPERVISION:
        sup = parse_supervision(body.get("sup"))
    elif body.get("sup") is not None:
        raise Rejected(BAD_FIELD, f"sup is only for a supervision event, not for {kind}")
    counter = _int(body, "counter", lo=1)
    eid = body.get("id")
    if eid != event_id(gw, device, counter):
        raise Rejected(BAD_FIELD, "id must be {gw}:{device}:{counter}")
    ref = body.get("ref")
    if kind == "cancel":
        # A device cancels only its own alarms.
        try:
            ref_gw, ref_device, _ = parse_event_id(ref)
        except Rejected:
            ref_gw = ref_device = ""
        if (ref_gw, ref_device) != (gw, device):
            raise Rejected(BAD_FIELD, "ref must be the id of an alarm of the same device")
    elif ref is not None:
        raise Rejected(BAD_FIELD, f"ref is only for a cancel, not for {kind}")
    seq = _int(body, "seq")
    gw_ts = _int(body, "gw_ts")
    village = _text(body, "village")
    if not village:
        raise Rejected(BAD_FIELD, "village must not be empty")
    return Event(
        id=eid,
        gw=gw,
        seq=seq,
        kind=kind,
        device=device,
        counter=counter,
        village=village,
        household=_text(body, "household", optional=True),
        gw_ts=gw_ts,
        ref=ref,
        dev_ts=_opt_int(body, "dev_ts"),
        dev_up=_opt_int(body, "dev_up"),
        sup=sup,
    )


# -- §6.5 heartbeats


@dataclass(frozen=True)
class DeviceSeen:
    """§6.5 `devs`: when the gateway last heard one supervised device, and its last reading."""

    id: str
    last_seen: int  # gateway Unix ms
    bat: int | None = None
    fw: str | None = None


@dataclass(frozen=True)
class StoreState:
    """§6.5 `store`: whether the gateway can write its store. `ok` false from a write that
    failed until one commits again; `full` when that was a full disk; `failed` writes that
    failed since the last that committed; `free_bytes` free on the store's disk (-1: unknown)."""

    ok: bool
    full: bool
    failed: int
    free_bytes: int


@dataclass(frozen=True)
class Heartbeat:
    gw: str
    ts: int
    outbox: int  # -1: the gateway could not read its own store
    devices: int
    villages: tuple[str, ...] | None = None  # absent from older gateways' heartbeats
    devs: tuple[DeviceSeen, ...] | None = None  # absent from older gateways' heartbeats
    store: StoreState | None = None  # absent from older gateways' heartbeats
    modem: str | None = None  # §6.5: the SMS modem's state (§10); absent: no modem configured


MODEM_STATES = ("ok", "no_network", "sim_missing", "gone", "starting")


def encode_heartbeat(hb: Heartbeat) -> dict[str, Any]:
    body: dict[str, Any] = {"gw": hb.gw, "ts": hb.ts, "outbox": hb.outbox, "devices": hb.devices}
    if hb.villages is not None:
        body["villages"] = list(hb.villages)
    if hb.devs is not None:
        body["devs"] = [[d.id, d.last_seen, d.bat, d.fw] for d in hb.devs]
    if hb.store is not None:
        body["store"] = encode_store_state(hb.store)
    if hb.modem is not None:
        body["modem"] = hb.modem
    return body


def encode_store_state(st: StoreState) -> dict[str, Any]:
    return {"ok": st.ok, "full": st.full, "failed": st.failed, "free_bytes": st.free_bytes}


def parse_store_state(value: object) -> StoreState:
    """Check a §6.5 `store` object."""
    if not isinstance(value, dict):
        raise Rejected(BAD_FIELD, "store must be an object {ok, full, failed, free_bytes}")
    flags = [value.get("ok"), value.get("full")]
    if not all(type(f) is bool for f in flags):
        raise Rejected(BAD_FIELD, "store.ok and store.full must be true or false")
    failed = _int(value, "failed")
    free = _int(value, "free_bytes", lo=-1)
    return StoreState(bool(flags[0]), bool(flags[1]), failed, free)


def _device_seen(item: object, i: int) -> DeviceSeen:
    if not isinstance(item, list) or len(item) != 4:
        raise Rejected(BAD_FIELD, f"devs[{i}] must be [device id, last_seen, bat, fw]")
    dev, seen, bat, fw = item
    if not isinstance(dev, str) or not valid_id(dev) or reserved_id(dev):
        raise Rejected(BAD_FIELD, f"devs[{i}][0] must be a device id (§1.1)")
    if type(seen) is not int or not 0 <= seen < MAX_INT:
        raise Rejected(BAD_FIELD, f"devs[{i}][1] must be a time in Unix ms")
    if bat is not None and (type(bat) is not int or not 0 <= bat <= 100):
        raise Rejected(BAD_FIELD, f"devs[{i}][2] must be a battery percentage 0..100 or null")
    if fw is not None and (not isinstance(fw, str) or len(fw) > MAX_CODE):
        raise Rejected(BAD_FIELD, f"devs[{i}][3] must be a string of at most {MAX_CODE} or null")
    return DeviceSeen(dev, seen, bat, fw)


def parse_heartbeat(body: Mapping[str, Any], gw: str) -> Heartbeat:
    """Check an authenticated §6.5 body from gateway `gw`."""
    check_gw(body, gw)
    ts = _int(body, "ts")
    outbox = _int(body, "outbox", lo=-1)
    devices = _int(body, "devices")
    villages = body.get("villages")
    if villages is not None and (
        not isinstance(villages, list)
        or len(villages) > MAX_VILLAGES
        or not all(valid_id(v) for v in villages)
    ):
        raise Rejected(BAD_FIELD, f"villages must be a list of at most {MAX_VILLAGES} village ids")
    devs = body.get("devs")
    if devs is not None and (not isinstance(devs, list) or len(devs) > MAX_DEVS):
        raise Rejected(BAD_FIELD, f"devs must be a list of at most {MAX_DEVS} devices")
    store = body.get("store")
    modem = body.get("modem")
    if modem is not None and modem not in MODEM_STATES:
        raise Rejected(BAD_FIELD, f"modem must be one of {', '.join(MODEM_STATES)}")
    return Heartbeat(
        gw, ts, outbox, devices, None if villages is None else tuple(villages),
        None if devs is None else tuple(_device_seen(d, i) for i, d in enumerate(devs)),
        None if store is None else parse_store_state(store),
        modem,
    )


# -- §6.6 confirmations


@dataclass(frozen=True)
class Confirmation:
    """The gateway has committed (or refused for good) what these downlinks carried: centre
    acks as (event id, state) and broadcast copies by id (§6.6)."""

    gw: str
    ts: int
    acks: tuple[tuple[str, str], ...] = ()
    bc: tuple[str, ...] = ()
    cl: tuple[int, ...] = ()  # contact-list versions held complete (§11)

    @property
    def empty(self) -> bool:
        """Names no downlink: what a gateway sends right after it (re)connects (§6.6), with
        at most the contact-list version it holds (§11)."""
        return not self.acks and not self.bc


def encode_confirmation(c: Confirmation) -> dict[str, Any]:
    body: dict[str, Any] = {"gw": c.gw, "ts": c.ts, "acks": [list(a) for a in c.acks], "bc": list(c.bc)}
    if c.cl:
        body["cl"] = list(c.cl)  # absent when empty: a centre older than §11 reads the rest
    return body


def confirmations(
    gw: str,
    ts: int,
    acks: Sequence[tuple[str, str]] = (),
    bc: Sequence[str] = (),
    max_payload: int = topics.MAX_PAYLOAD[topics.CONFIRMATIONS],
) -> list[Confirmation]:
    """Everything to confirm, in order, as messages of at most `MAX_CONFIRMATIONS` items whose
    signed payload fits `max_payload` (200 acks of the longest ids would not fit 8 KiB)."""
    fixed = json_len(encode_confirmation(Confirmation(gw, ts))) + SIG_HEX_LEN + 1
    sizes = [json_len(list(a)) for a in acks] + [json_len(b) for b in bc]
    n = len(acks)
    return [
        Confirmation(
            gw,
            ts,
            tuple((a[0], a[1]) for a in acks[run.start : min(run.stop, n)]),
            tuple(bc[max(run.start - n, 0) : max(run.stop - n, 0)]),
        )
        for run in fit(sizes, fixed, MAX_CONFIRMATIONS, max_payload)
    ]


def parse_confirmation(body: Mapping[str, Any], gw: str) -> Confirmation:
    """Check an authenticated §6.6 body from gateway `gw`: every event id is one of its own."""
    check_gw(body, gw)
    ts = _int(body, "ts")
    acks, bcs = body.get("acks"), body.get("bc")
    if not isinstance(acks, list) or not isinstance(bcs, list):
        raise Rejected(BAD_FIELD, "acks and bc must both be lists (either may be empty)")
    if len(acks) + len(bcs) > MAX_CONFIRMATIONS:
        raise Rejected(BAD_FIELD, f"at most {MAX_CONFIRMATIONS} acks and broadcast ids in all")
    pairs = []
    for i, a in enumerate(acks):
        if not isinstance(a, list) or len(a) != 2 or a[1] not in CONFIRMED_STATES:
            raise Rejected(BAD_FIELD, f"acks[{i}] must be [event id, received|acked]")
        if parse_event_id(a[0])[0] != gw:
            raise Rejected(BAD_FIELD, f"acks[{i}] names an event of another gateway")
        pairs.append((str(a[0]), str(a[1])))
    for i, b in enumerate(bcs):
        if not valid_bc_id(b):
            raise Rejected(BAD_FIELD, f"bc[{i}] must be a broadcast id (1-40 of A-Za-z0-9._:-)")
    cl = body.get("cl", [])
    if (
        not isinstance(cl, list)
        or len(acks) + len(bcs) + len(cl) > MAX_CONFIRMATIONS
        or not all(type(v) is int and 0 < v < MAX_INT for v in cl)
    ):
        raise Rejected(BAD_FIELD, "cl must be a list of contact-list versions (integers)")
    return Confirmation(gw, ts, tuple(pairs), tuple(str(b) for b in bcs), tuple(cl))


# -- the frame


def open_up(
    topic: str, payload: bytes, key_for: Callable[[str], Ed25519PublicKey | None]
) -> tuple[str, str, dict[str, Any]]:
    """Topic, enrolment and signature checks -> (gw, kind, body). `key_for(gw)` is the public
    key enrolled for the gateway, or None. The body's fields are checked by the `parse_*`
    function of its kind."""
    gw, kind = topics.parse_up(topic)
    pub = key_for(gw)
    if pub is None:
        raise Rejected(UNKNOWN_GATEWAY, gw)
    return gw, kind, verify_frame(pub, topic, payload, topics.MAX_PAYLOAD[kind])
