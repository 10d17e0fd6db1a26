"""§10 (an alarm as a text message) and §11 (contact list, SMS reports): the codecs in
protocol/smsalarm.py and protocol/contacts.py."""

from __future__ import annotations

import dataclasses
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modem import pdu
from protocol import contacts, smsalarm, topics, uplink
from protocol.errors import Rejected
from protocol.signed import MAX_SIGNED_PAYLOAD, verify_frame

# RFC 8032 §7.1 test 1's secret key, as in docs/vectors/uplink-v1.json (g1).
G1 = Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
OTHER = Ed25519PrivateKey.generate()


def alarm(**kw: object) -> uplink.Event:
    ev = uplink.new_event("gw-demo", 17, "alarm", "btn-0001", 42, village="v-demo",
                          household="h-001", gw_ts=1_790_000_000_123, dev_ts=1_790_000_000,
                          dev_up=123456)
    return dataclasses.replace(ev, **kw)  # type: ignore[arg-type]


def keys(gw: str) -> object:
    return G1.public_key() if gw == "gw-demo" else None


def test_sms_alarm_round_trips_to_the_same_event_as_the_mqtt_copy() -> None:
    ev = alarm()
    text = smsalarm.encode_sms(G1, ev)
    assert text.startswith("OK1 A gw-demo:btn-0001:42 v-demo h-001 17 1790000000123 1790000000 123456 ")
    assert smsalarm.open_sms(text, keys) == ev  # type: ignore[arg-type]
    # The MQTT copy's body parses to the very same record.
    assert uplink.parse_event(uplink.encode_event(ev), "gw-demo") == ev


def test_sms_alarm_is_gsm7_and_fits_two_parts() -> None:
    ev = alarm(household="h-" + "9" * 40, village="v-" + "x" * 30)
    text = smsalarm.encode_sms(G1, ev)
    septets = pdu.gsm7_septets(text)
    assert septets is not None and len(septets) == len(text)  # basic alphabet: one septet each
    _, chunks = pdu.split_text(text)
    assert len(chunks) <= 2 and len(text) <= smsalarm.MAX_CHARS
    # The usual case: about 170 characters, two parts of GSM 7-bit.
    usual = smsalarm.encode_sms(G1, alarm())
    assert len(usual) < 200


def test_sms_alarm_encodes_odd_households_and_absent_fields() -> None:
    ev = alarm(household="三组 5号", dev_ts=None, dev_up=None)
    text = smsalarm.encode_sms(G1, ev)
    assert text.isascii() and " - - " in text
    assert smsalarm.open_sms(text, keys) == ev  # type: ignore[arg-type]
    for hh in ("", "-", "a b%c"):
        e2 = alarm(household=hh)
        assert smsalarm.open_sms(smsalarm.encode_sms(G1, e2), keys) == e2  # type: ignore[arg-type]


def test_sms_alarm_too_long_is_refused_at_the_sender() -> None:
    with pytest.raises(smsalarm.SmsTooLong):
        smsalarm.encode_sms(G1, alarm(household="户" * 60))


def test_only_alarms_go_by_sms() -> None:
    with pytest.raises(ValueError):
        smsalarm.encode_sms(G1, alarm(kind="test"))


@pytest.mark.parametrize("text", ["收到", "1", "OK", "ok1 A x", "", "OK1"])
def test_a_text_that_is_not_ours_says_so(text: str) -> None:
    with pytest.raises(smsalarm.NotOurs):
        smsalarm.open_sms(text, keys)  # type: ignore[arg-type]


def test_forged_sms_alarm_is_refused_with_bad_signature() -> None:
    good = smsalarm.encode_sms(G1, alarm())
    forged = smsalarm.encode_sms(OTHER, alarm())
    with pytest.raises(Rejected) as exc:
        smsalarm.open_sms(forged, keys)  # type: ignore[arg-type]
    assert exc.value.reason == "bad_signature"
    # A changed field under the gateway's signature: the household moved.
    tampered = good.replace(" h-001 ", " h-002 ")
    with pytest.raises(Rejected) as exc:
        smsalarm.open_sms(tampered, keys)  # type: ignore[arg-type]
    assert exc.value.reason == "bad_signature"


def test_sms_alarm_of_an_unknown_gateway_is_refused() -> None:
    text = smsalarm.encode_sms(G1, alarm(id="gw-other:btn-0001:42", gw="gw-other"))
    with pytest.raises(Rejected) as exc:
        smsalarm.open_sms(text, keys)  # type: ignore[arg-type]
    assert exc.value.reason == "unknown_gateway"


def test_sms_alarm_fuzz_parses_or_is_rejected() -> None:
    good = smsalarm.encode_sms(G1, alarm())
    rng = random.Random(7)
    alphabet = "OK1 A-%:0123456789abcxyz_\u4e2d\n"
    for _ in range(3000):
        chars = list(good)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.4:
                chars[i] = rng.choice(alphabet)
            elif op < 0.7:
                del chars[i]
            else:
                chars.insert(i, rng.choice(alphabet))
        try:
            smsalarm.open_sms("".join(chars), keys)  # type: ignore[arg-type]
        except (Rejected, smsalarm.NotOurs):
            pass


# -- §11 contact list


def households(n: int) -> list[contacts.Household]:
    return [
        contacts.Household(
            f"h-{i:03d}", "v-demo", "三组", f"张{i}", f"三组 {i} 号", i % 2 == 0,
            (contacts.Contact("leader", "李联户长", "13800138000"),
             contacts.Contact("grid", "王网格员", "13900139000"),
             contacts.Contact("family", "张儿子", "13700137000")),
        )
        for i in range(n)
    ]


def test_contact_list_splits_into_signed_parts_that_fit() -> None:
    hs = households(300)
    parts = contacts.signed_parts(G1, "gw-demo", 5, hs)
    assert len(parts) > 1
    got = []
    for part, payload in parts:
        assert len(payload) <= MAX_SIGNED_PAYLOAD
        back = contacts.open_part(G1.public_key(), "gw-demo", topics.contacts("gw-demo"), payload)
        assert back == part and back.parts == len(parts) and back.v == 5
        got += back.households
    assert got == hs


def test_empty_contact_list_is_one_part() -> None:
    parts = contacts.signed_parts(G1, "gw-demo", 1, [])
    assert [(p.part, p.parts, p.households) for p, _ in parts] == [(1, 1, ())]


def test_contact_list_for_another_gateway_or_forged_is_refused() -> None:
    (_, payload), = contacts.signed_parts(G1, "gw-demo", 1, households(2))
    with pytest.raises(Rejected) as exc:
        contacts.open_part(OTHER.public_key(), "gw-demo", topics.contacts("gw-demo"), payload)
    assert exc.value.reason == "bad_signature"
    with pytest.raises(Rejected) as exc:
        contacts.open_part(G1.public_key(), "gw-x", topics.contacts("gw-demo"), payload)
    assert exc.value.reason == "bad_topic"


def test_sms_report_round_trips() -> None:
    r = contacts.SmsReport("gw-demo", "gw-demo:btn-0001:42", "leader", "13800138000", 5, 2)
    topic, payload = contacts.signed_sms_report(G1, r)
    assert topic == "ok/v1/gw/gw-demo/up/sms"
    body = verify_frame(G1.public_key(), topic, payload)
    assert contacts.parse_sms_report(body, "gw-demo") == r
    with pytest.raises(Rejected):
        contacts.parse_sms_report({**body, "id": "gw-x:btn-0001:42"}, "gw-demo")


def test_confirmation_carries_contact_versions_only_when_there_are_some() -> None:
    c = uplink.Confirmation("gw-demo", 1, (), (), (7,))
    body = uplink.encode_confirmation(c)
    assert body["cl"] == [7] and uplink.parse_confirmation(body, "gw-demo") == c
    assert "cl" not in uplink.encode_confirmation(uplink.Confirmation("gw-demo", 1))
    with pytest.raises(Rejected):
        uplink.parse_confirmation({**body, "cl": ["x"]}, "gw-demo")


def test_heartbeat_carries_the_modem_state() -> None:
    hb = uplink.Heartbeat("gw-demo", 1, 0, 0, None, modem="no_network")
    assert uplink.parse_heartbeat(uplink.encode_heartbeat(hb), "gw-demo") == hb
    with pytest.raises(Rejected):
        uplink.parse_heartbeat({**uplink.encode_heartbeat(hb), "modem": "bogus"}, "gw-demo")
