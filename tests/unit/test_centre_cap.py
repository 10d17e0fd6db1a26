"""CAP 1.2 XML in and out of the centre (centre/cap.py), without I/O: round trips, the
examples of the CAP 1.2 specification (adapted where they must name a village), and clear
errors for everything else. Every input either reads or raises CapError."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import timedelta, timezone

import pytest

from centre.broadcast import Area, Broadcast, BroadcastError, BroadcastIn, Reference, build
from centre.cap import (
    CAP_NS,
    CapError,
    cap_fields,
    format_time,
    from_cap_xml,
    parse_time,
    to_broadcast,
    to_cap_xml,
)
from device_fw import okproto

NOW = 1_720_000_000_000  # 2024-07-03T09:46:40Z
NS = {"cap": CAP_NS}


def alert(**kw: object) -> Broadcast:
    body: dict[str, object] = {
        "by": "李伟",
        "urgency": "Immediate",
        "severity": "Extreme",
        "certainty": "Observed",
        "valid_for_s": 3600,
        "area": [{"village": "v-1"}, {"village": "v-2", "groups": ["east"], "speakers": ["spk-9"]}],
        "text": "洪水预警：河水上涨，请立即转移到高处。",
        "clip": "siren",
        "repeat": 3,
        "start": NOW + 60_000,
    }
    body.update(kw)
    return build(BroadcastIn.model_validate(body), centre_id="centre", now=NOW)


def roundtrip(bc: Broadcast, **kw: object) -> Broadcast:
    fields = from_cap_xml(to_cap_xml(cap_fields(bc), **kw))  # type: ignore[arg-type]
    assert fields["notes"] == []
    back = to_broadcast(fields, by="Zhao", centre_id="other", now=NOW)
    return mapped_back(back, bc)


def mapped_back(back: Broadcast, bc: Broadcast) -> Broadcast:
    """An import gets the importing centre's own id and keeps the source's identity."""
    assert back.origin is not None and back.id != bc.id
    assert (back.origin.identifier, back.origin.sender, back.origin.sent) == (
        bc.id, bc.sender, bc.sent
    )
    return replace(back, id=bc.id, origin=None)


def test_a_broadcast_survives_a_round_trip_through_cap() -> None:
    bc = alert()
    assert roundtrip(bc) == bc
    # The same instant written in China's time zone reads back the same.
    assert roundtrip(bc, tz=timezone(timedelta(hours=8))) == bc


def test_an_update_keeps_its_references_as_cap_triples() -> None:
    first = alert()
    upd = build(
        BroadcastIn.model_validate({
            "by": "Li", "msgType": "Update", "references": [first.id], "urgency": "Expected",
            "severity": "Severe", "certainty": "Likely", "valid_for_s": 600, "text": "水位回落",
        }),
        centre_id="centre", now=NOW + 1000, known={first.id: first},
    )
    assert upd.area == first.area  # taken from the broadcast it updates
    xml = to_cap_xml(cap_fields(upd))
    root = ET.fromstring(xml)
    refs = root.findtext("cap:references", namespaces=NS)
    assert refs == f"{first.sender},{first.id},{format_time(first.sent)}"
    back = to_broadcast(
        from_cap_xml(xml), by="x", centre_id="centre", now=NOW + 1000,
        known={(first.sender, first.id): first},
    )
    assert mapped_back(back, upd) == upd
    assert back.references == (Reference(first.id, first.sender, first.sent),)
    assert back.origin is not None and back.origin.references == back.references


def test_the_xml_follows_the_cap_schema_order_and_formats() -> None:
    xml = to_cap_xml(cap_fields(alert()))
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="' + CAP_NS)
    root = ET.fromstring(xml)
    assert [c.tag.split("}")[1] for c in root] == [
        "identifier", "sender", "sent", "status", "msgType", "scope", "info",
    ]
    info = root.find("cap:info", NS)
    assert info is not None
    assert [c.tag.split("}")[1] for c in info] == [
        "language", "category", "event", "urgency", "severity", "certainty", "onset", "expires",
        "description", "parameter", "resource", "area", "area",
    ]
    assert root.findtext("cap:sent", namespaces=NS) == "2024-07-03T09:46:40+00:00"
    assert root.findtext("cap:scope", namespaces=NS) == "Public"
    assert info.findtext("cap:onset", namespaces=NS) == "2024-07-03T09:47:40+00:00"
    assert info.findtext("cap:resource/cap:mimeType", namespaces=NS) == "audio/mpeg"
    assert info.findtext("cap:resource/cap:resourceDesc", namespaces=NS) == "siren"
    geo = [
        (g.findtext("cap:valueName", namespaces=NS), g.findtext("cap:value", namespaces=NS))
        for g in info.findall("cap:area[2]/cap:geocode", NS)
    ]
    assert geo == [("onekey:village", "v-2"), ("onekey:group", "east"), ("onekey:speaker", "spk-9")]


def test_times_need_an_offset_and_whole_seconds_are_written() -> None:
    assert parse_time("2003-06-17T14:57:00-07:00", "x") == 1_055_887_020_000
    assert parse_time("2003-06-17T21:57:00Z", "x") == 1_055_887_020_000  # tolerated on input
    assert parse_time("2003-06-17T21:57:00.250+00:00", "x") == 1_055_887_020_250
    assert format_time(1_055_887_020_999) == "2003-06-17T21:57:00+00:00"
    for bad in ("2003-06-17T14:57:00", "2003-06-17 14:57:00-07:00", "yesterday", "2003-13-01T00:00:00+00:00"):
        with pytest.raises(CapError, match="x"):
            parse_time(bad, "x")


# The CAP 1.2 specification's Appendix A.2 (severe thunderstorm warning), as published.
THUNDERSTORM = """<?xml version = "1.0" encoding = "UTF-8"?>
<alert xmlns = "urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>KSTO1055887203</identifier>
  <sender>KSTO@NWS.NOAA.GOV</sender>
  <sent>2003-06-17T14:57:00-07:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Met</category>
    <event>SEVERE THUNDERSTORM</event>
    <responseType>Shelter</responseType>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <eventCode>
      <valueName>SAME</valueName>
      <value>SVR</value>
    </eventCode>
    <expires>2003-06-17T16:00:00-07:00</expires>
    <senderName>NATIONAL WEATHER SERVICE SACRAMENTO CA</senderName>
    <headline>SEVERE THUNDERSTORM WARNING</headline>
    <description> AT 254 PM PDT...NATIONAL WEATHER SERVICE DOPPLER RADAR INDICATED A SEVERE
THUNDERSTORM OVER SOUTH CENTRAL ALPINE COUNTY...OR ABOUT 18 MILES SOUTHEAST OF KIRKWOOD...MOVING
SOUTHWEST AT 5 MPH. HAIL...INTENSE RAIN AND STRONG DAMAGING WINDS ARE LIKELY WITH THIS
STORM.</description>
    <instruction>TAKE COVER IN A SUBSTANTIAL SHELTER UNTIL THE STORM PASSES.</instruction>
    <contact>BARUFFALDI/JUSKIE</contact>
    <area>
      <areaDesc>EXTREME NORTH CENTRAL TUOLUMNE COUNTY IN CALIFORNIA, EXTREME NORTHEASTERN
CALAVERAS COUNTY IN CALIFORNIA, SOUTHWESTERN ALPINE COUNTY IN CALIFORNIA</areaDesc>
      <polygon>38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89 38.47,-120.14</polygon>
      <geocode>
        <valueName>SAME</valueName>
        <value>006109</value>
      </geocode>
      <geocode>
        <valueName>SAME</valueName>
        <value>006009</value>
      </geocode>
    </area>
  </info>
</alert>
"""

# Appendix A.3 (earthquake report, an Update), with the expiry a broadcast needs.
EARTHQUAKE = """<?xml version = "1.0" encoding = "UTF-8"?>
<alert xmlns = "urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>TRI13970876.2</identifier>
  <sender>trinet@caltech.edu</sender>
  <sent>2003-06-11T20:56:00-07:00</sent>
  <status>Actual</status>
  <msgType>Update</msgType>
  <scope>Public</scope>
  <references>trinet@caltech.edu,TRI13970876.1,2003-06-11T20:30:00-07:00</references>
  <info>
    <category>Geo</category>
    <event>Earthquake</event>
    <urgency>Past</urgency>
    <severity>Minor</severity>
    <certainty>Observed</certainty>
    <expires>2003-06-11T22:00:00-07:00</expires>
    <senderName>Southern California Seismic Network (TriNet) operated by Caltech and USGS</senderName>
    <headline>EQ 3.4 Imperial County CA</headline>
    <description>A minor earthquake measuring 3.4 on the Richter scale occurred near Brawley,
California at 8:30 PM Pacific Daylight Time on Wednesday, June 11, 2003.</description>
    <web>http://www.trinet.org/scsn/scsn.html</web>
    <parameter>
      <valueName>EventID</valueName>
      <value>13970876</value>
    </parameter>
    <area>
      <areaDesc>1 mi. WSW of Brawley, CA</areaDesc>
      <circle>32.9525,-115.5527 0</circle>
      <geocode>
        <valueName>onekey:village</valueName>
        <value>brawley</value>
      </geocode>
    </area>
  </info>
</alert>
"""


def with_village(xml: str, village: str) -> str:
    geo = (
        "<geocode><valueName>onekey:village</valueName>"
        f"<value>{village}</value></geocode></area>"
    )
    return xml.replace("</area>", geo, 1)


def test_the_specifications_thunderstorm_warning_is_read_and_told_what_it_lacks() -> None:
    with pytest.raises(CapError, match=r"exactly one geocode onekey:village"):
        from_cap_xml(THUNDERSTORM)
    fields = from_cap_xml(with_village(THUNDERSTORM, "kirkwood"))
    assert (fields["id"], fields["sender"], fields["msgType"], fields["language"]) == (
        "KSTO1055887203", "KSTO@NWS.NOAA.GOV", "Alert", "en-US"  # CAP's default language
    )
    assert fields["sent"] == 1_055_887_020_000
    assert fields["area"] == [{"village": "kirkwood", "groups": [], "speakers": []}]
    assert fields["text"].startswith("AT 254 PM PDT")
    assert fields["text"].endswith("STORM.\nTAKE COVER IN A SUBSTANTIAL SHELTER UNTIL THE STORM PASSES.")
    assert any("polygon ignored" in n for n in fields["notes"])
    assert any("geocode SAME ignored" in n for n in fields["notes"])
    bc = to_broadcast(fields, by="Li", centre_id="centre", now=fields["sent"])
    assert (bc.category, bc.event, bc.priority, bc.expires) == (
        "Met", "SEVERE THUNDERSTORM", 1, 1_055_890_800_000
    )
    # Read again a day later, it has long expired: the centre would refuse to send it.
    with pytest.raises(BroadcastError, match=r"expires .* is not after now"):
        to_broadcast(fields, by="Li", centre_id="centre", now=fields["sent"] + 86_400_000)


def test_the_specifications_earthquake_update_keeps_its_reference() -> None:
    fields = from_cap_xml(EARTHQUAKE)
    assert fields["references"] == ["TRI13970876.1"]
    assert fields["reference_details"] == [
        {"id": "TRI13970876.1", "sender": "trinet@caltech.edu", "sent": 1_055_388_600_000}
    ]
    assert any("EventID" in n for n in fields["notes"]) and any("circle" in n for n in fields["notes"])
    bc = to_broadcast(fields, by="Li", centre_id="centre", now=fields["sent"])
    # The alert it updates was never imported here: speakers get it as a new broadcast, and
    # the centre keeps the source's reference.
    assert bc.msg_type == "Alert" and bc.references == ()
    assert bc.origin is not None and bc.origin.msg_type == "Update"
    assert bc.origin.references[0].sender == "trinet@caltech.edu"
    assert any("goes to speakers as a new broadcast" in n for n in fields["notes"])
    # Without an expiry, as the specification has it, staff choose how long it plays.
    no_expiry = from_cap_xml(
        EARTHQUAKE.replace("<expires>2003-06-11T22:00:00-07:00</expires>", "")
    )
    with pytest.raises(CapError, match=r"info/expires is missing.*valid_for_s=SECONDS"):
        to_broadcast(no_expiry, by="Li", centre_id="centre", now=fields["sent"])
    chosen = to_broadcast(
        no_expiry, by="Li", centre_id="centre", now=fields["sent"], valid_for_s=1800
    )
    assert chosen.expires == fields["sent"] + 1_800_000


def bilingual() -> str:
    xml = to_cap_xml(cap_fields(alert(start=None)))
    root = ET.fromstring(xml)
    info = root.find("cap:info", NS)
    assert info is not None
    english = ET.fromstring(ET.tostring(info))
    lang = english.find("cap:language", NS)
    desc = english.find("cap:description", NS)
    assert lang is not None and desc is not None
    lang.text, desc.text = "en-US", "Flood warning: move to high ground now."
    root.append(english)
    return ET.tostring(root, encoding="unicode")


def test_an_alert_in_two_languages_needs_one_chosen() -> None:
    xml = bilingual()
    with pytest.raises(CapError, match=r"2 <info> blocks \(zh-CN, en-US\)"):
        from_cap_xml(xml)
    assert from_cap_xml(xml, language="en-us")["text"] == "Flood warning: move to high ground now."
    assert from_cap_xml(xml, language="zh-CN")["language"] == "zh-CN"
    with pytest.raises(CapError, match="no <info> in language fr"):
        from_cap_xml(xml, language="fr")


GOOD = to_cap_xml(cap_fields(alert()))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda x: "not xml at all", "not well-formed XML"),
        (lambda x: x[: len(x) // 2], "not well-formed XML"),
        (lambda x: x.replace(CAP_NS, "urn:oasis:names:tc:emergency:cap:1.1"), "CAP 1.1"),
        (lambda x: x.replace(CAP_NS, "urn:example"), "not a CAP 1.2 <alert>"),
        (lambda x: x.replace("<identifier>", "<identifierX>").replace("</identifier>", "</identifierX>"),
         "alert/identifier is missing"),
        (lambda x: x.replace(">Actual<", ">Draft<"), "alert/status is 'Draft'"),
        (lambda x: x.replace(">Alert<", ">Ack<"), "Ack and Error are not broadcasts"),
        (lambda x: x.replace(">Public<", ">Restricted<"), "heard by everyone"),
        (lambda x: x.replace(">Safety<", ">Weather<"), "info/category is 'Weather'"),
        (lambda x: x.replace(">Immediate<", ">Now<"), "info/urgency"),
        (lambda x: x.replace("+00:00</sent>", "</sent>"), "alert/sent"),
        (lambda x: x.replace("<value>3</value>", "<value>9</value>"), "onekey:repeat is '9'"),
        (lambda x: x.replace("<areaDesc>v-1</areaDesc>", ""), r"info/area\[1\]/areaDesc is missing"),
        (lambda x: x.replace("<info>", "<note>no info</note>").replace("</info>", "").replace(
            "<language>", "<x>").replace("</language>", "</x>"), "not well-formed|no <info>"),
    ],
)
def test_bad_documents_are_refused_with_the_element_named(mutate: object, message: str) -> None:
    with pytest.raises(CapError, match=message):
        from_cap_xml(mutate(GOOD))  # type: ignore[operator]


def test_dtds_and_entities_are_refused_before_parsing() -> None:
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n'
        f'<alert xmlns="{CAP_NS}"><identifier>&lol2;</identifier></alert>'
    )
    with pytest.raises(CapError, match="DTD or entities"):
        from_cap_xml(bomb)
    external = (
        '<?xml version="1.0"?><!DOCTYPE a SYSTEM "file:///etc/passwd">'
        f'<alert xmlns="{CAP_NS}"/>'
    )
    with pytest.raises(CapError, match="DTD"):
        from_cap_xml(external.encode())
    with pytest.raises(CapError, match="at most"):
        from_cap_xml(b"<a>" + b" " * 300_000 + b"</a>")


def test_what_speakers_cannot_take_is_refused_by_the_broadcast_rules() -> None:
    def fields(**kw: object) -> dict[str, object]:
        f = from_cap_xml(GOOD)
        f.update(kw)
        return f

    cases = [
        (fields(sender="Li Wei"), "sender .* without spaces"),
        (fields(text="fire 🔥"), "outside the Basic Multilingual Plane"),
        (fields(area=[]), "area is empty"),
    ]
    for f, message in cases:
        with pytest.raises(BroadcastError, match=message):
            to_broadcast(f, by="Li", centre_id="centre", now=NOW)
    with pytest.raises(CapError, match="alert/references is missing: a Cancel needs references"):
        to_broadcast(fields(msgType="Cancel", references=[], reference_details=[]),
                     by="Li", centre_id="centre", now=NOW)
    # Over the speakers' 500 characters: the refusal says how long, from which parts, and
    # what to do; staff may then give the text to speak.
    with pytest.raises(CapError, match=r"501 characters .*at most 500: import it with text="):
        to_broadcast(fields(text="字" * 501), by="Li", centre_id="centre", now=NOW)
    bc = to_broadcast(fields(text="字" * 501), by="Li", centre_id="centre", now=NOW, text="短")
    assert bc.text == "短"


def test_a_text_that_would_not_fit_a_speakers_frame_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = from_cap_xml(GOOD)
    f["text"] = "字" * 400
    to_broadcast(f, by="Li", centre_id="centre", now=NOW)
    monkeypatch.setattr(okproto, "MAX_BC_BODY", 2048)  # a smaller §8.2 limit
    with pytest.raises(BroadcastError, match="too long for a speaker"):
        to_broadcast(f, by="Li", centre_id="centre", now=NOW)


def test_export_needs_the_fields_cap_requires() -> None:
    f = cap_fields(alert())
    with pytest.raises(CapError, match="no expires"):
        to_cap_xml({**f, "expires": None})
    with pytest.raises(CapError, match="need both"):
        to_cap_xml({**f, "msgType": "Cancel", "reference_details": None, "references": ["a-1"]})
    # A plain cap_fields dict of a stored broadcast exports.
    ok = Broadcast(
        id="c-1", sender="centre:li", sent=NOW, status="Test", msg_type="Alert",
        urgency="Unknown", severity="Unknown", certainty="Unknown", expires=NOW + 60_000,
        area=(Area("v-1"),), language="zh-CN", text="测试",
    )
    assert "<status>Test</status>" in to_cap_xml(cap_fields(ok))


def test_any_damaged_document_either_reads_or_raises_cap_error() -> None:
    rng = random.Random(1234)
    data = GOOD.encode()
    for _ in range(400):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(b))
            if op < 0.4:
                b[pos] = rng.randrange(256)
            elif op < 0.7:
                del b[pos : pos + rng.randint(1, 40)]
            else:
                b[pos:pos] = rng.choice([b"<", b">", b"&", b"</info>", b"<area>", b"\x00", "字".encode()])
        try:
            from_cap_xml(bytes(b))
        except CapError:
            pass
