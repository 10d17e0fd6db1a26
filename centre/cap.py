"""OASIS CAP 1.2 XML for broadcasts, without any I/O.

`to_cap_xml(fields)` writes one `<alert>`; `from_cap_xml(xml)` reads one back into the same
field names (those of the broadcast API, docs/centre.md); `to_broadcast(fields, ...)` checks the
result with the same rules as a broadcast posted as JSON. Every failure is a `CapError` that
names the element.

The mapping (docs/centre.md has the table): alert/identifier, sender, sent, status, msgType,
scope (always Public: speakers are heard by everyone), references ("sender,identifier,sent"
triples); one info: language, category, event, urgency, severity, certainty, onset (start),
expires, description (text), parameter `onekey:repeat`, a resource for the clip (resourceDesc
`siren` or `chime`, an audio mimeType), and one area per village with geocodes
`onekey:village`, `onekey:group`, `onekey:speaker`.

Untrusted XML: a document with a DTD or an entity declaration is refused before it is parsed
(CAP needs neither; this is what defusedxml does, without the dependency), and so is one over
256 KiB. ElementTree never fetches external resources.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, NoReturn
from xml.parsers import expat

from pydantic import ValidationError

from centre.broadcast import (
    CATEGORIES,
    CERTAINTIES,
    CLIPS,
    MSG_TYPES,
    SEVERITIES,
    STATUSES,
    URGENCIES,
    Broadcast,
    BroadcastError,
    BroadcastIn,
    CapOrigin,
    Reference,
    build,
    make_id,
    make_sender,
    validation_message,
)
from protocol.broadcast import MAX_REFERENCES, MAX_SENDER, MAX_TEXT

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_11_NS = "urn:oasis:names:tc:emergency:cap:1.1"
MAX_XML = 256 * 1024
VN_VILLAGE = "onekey:village"
VN_GROUP = "onekey:group"
VN_SPEAKER = "onekey:speaker"
VN_REPEAT = "onekey:repeat"
CLIP_MIME = "audio/mpeg"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?([+-]\d\d:\d\d|Z)")


class CapError(ValueError):
    """A CAP document that the centre cannot read or cannot broadcast; says which element."""


def _fail(msg: str) -> NoReturn:
    raise CapError(msg)


# -- times


def format_time(ms: int, tz: tzinfo = UTC) -> str:
    """CAP dateTime: whole seconds with a numeric offset (CAP forbids "Z")."""
    return datetime.fromtimestamp(ms // 1000, tz).isoformat(timespec="seconds")


def parse_time(text: str, where: str) -> int:
    """A CAP dateTime -> Unix ms. A "Z" is accepted, though CAP asks for +00:00."""
    text = text.strip()
    if not _TIME.fullmatch(text):
        _fail(f"{where} {text[:40]!r} is not a CAP time such as 2024-07-01T14:30:00+08:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CapError(f"{where} {text[:40]!r}: {exc}") from None
    return (dt - _EPOCH) // timedelta(milliseconds=1)


# -- writing


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        el.text = text
    return el


def _need(fields: Mapping[str, Any], name: str) -> Any:
    value = fields.get(name)
    if value is None or value == "":
        _fail(f"the broadcast has no {name}")
    return value


def _references(fields: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    refs = fields.get("reference_details")
    if refs is None:
        refs = fields.get("references") or []
    out = []
    for r in refs:
        if not isinstance(r, Mapping) or not r.get("sender") or r.get("sent") is None:
            _fail(f"reference {r!r} has no sender and sent; CAP references need both")
        out.append(r)
    return out


def to_cap_xml(fields: Mapping[str, Any], tz: tzinfo = UTC) -> str:
    """One CAP 1.2 `<alert>` for a broadcast: a `GET /api/broadcasts/{id}` answer, or
    `cap_fields(broadcast)`. Times are written in `tz` (UTC by default)."""
    alert = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(alert, "identifier", str(_need(fields, "id")))
    _sub(alert, "sender", str(_need(fields, "sender")))
    _sub(alert, "sent", format_time(int(_need(fields, "sent")), tz))
    _sub(alert, "status", str(_need(fields, "status")))
    _sub(alert, "msgType", str(_need(fields, "msgType")))
    _sub(alert, "scope", "Public")
    refs = _references(fields)
    if refs:
        _sub(alert, "references", " ".join(
            f"{r['sender']},{r['id']},{format_time(int(r['sent']), tz)}" for r in refs
        ))
    info = _sub(alert, "info")
    _sub(info, "language", str(_need(fields, "language")))
    _sub(info, "category", str(fields.get("category") or "Safety"))
    _sub(info, "event", str(fields.get("event") or "Village broadcast"))
    for name in ("urgency", "severity", "certainty"):
        _sub(info, name, str(_need(fields, name)))
    if fields.get("start") is not None:
        _sub(info, "onset", format_time(int(fields["start"]), tz))
    _sub(info, "expires", format_time(int(_need(fields, "expires")), tz))
    if fields.get("text"):
        _sub(info, "description", str(fields["text"]))
    param = _sub(info, "parameter")
    _sub(param, "valueName", VN_REPEAT)
    _sub(param, "value", str(int(fields.get("repeat") or 1)))
    if fields.get("clip"):
        res = _sub(info, "resource")
        _sub(res, "resourceDesc", str(fields["clip"]))
        _sub(res, "mimeType", CLIP_MIME)
    for a in fields.get("area") or []:
        area = _sub(info, "area")
        _sub(area, "areaDesc", str(a["village"]))
        for name, values in (
            (VN_VILLAGE, [a["village"]]),
            (VN_GROUP, a.get("groups") or []),
            (VN_SPEAKER, a.get("speakers") or []),
        ):
            for v in values:
                geo = _sub(area, "geocode")
                _sub(geo, "valueName", name)
                _sub(geo, "value", str(v))
    ET.indent(alert)
    body = ET.tostring(alert, encoding="unicode", default_namespace=CAP_NS)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def cap_fields(bc: Broadcast) -> dict[str, Any]:
    """A broadcast in the field names that `to_cap_xml` reads and `from_cap_xml` returns."""
    return {
        "id": bc.id,
        "sender": bc.sender,
        "sent": bc.sent,
        "status": bc.status,
        "msgType": bc.msg_type,
        "references": [r.id for r in bc.references],
        "reference_details": [r.as_json() for r in bc.references],
        "language": bc.language,
        "category": bc.category,
        "event": bc.event,
        "urgency": bc.urgency,
        "severity": bc.severity,
        "certainty": bc.certainty,
        "start": bc.start,
        "expires": bc.expires,
        "text": bc.text,
        "clip": bc.clip,
        "repeat": bc.repeat,
        "area": [a.as_json() for a in bc.area],
        "cap_source": None if bc.origin is None else bc.origin.as_json(),
    }


# -- reading


def _refuse_dtd(data: bytes) -> None:
    def refuse(*_args: object) -> NoReturn:
        _fail("the document declares a DTD or entities; CAP needs neither, so it is refused")

    p = expat.ParserCreate()
    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    p.UnparsedEntityDeclHandler = refuse
    p.ExternalEntityRefHandler = refuse
    try:
        p.Parse(data, True)
    except expat.ExpatError as exc:
        raise CapError(f"not well-formed XML: {exc}") from None


def _parse(xml: str | bytes) -> ET.Element:
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    if len(data) > MAX_XML:
        _fail(f"the document is {len(data)} bytes; a CAP alert is at most {MAX_XML}")
    if isinstance(xml, str):
        # A str has been decoded already: drop a declaration that names another encoding.
        data = re.sub(rb"^\s*<\?xml[^>]*\?>", b"", data)
    _refuse_dtd(data)
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise CapError(f"not well-formed XML: {exc}") from None


def _q(tag: str) -> str:
    return f"{{{CAP_NS}}}{tag}"


def _get(el: ET.Element, tag: str, where: str, required: bool = True) -> str | None:
    child = el.find(_q(tag))
    text = None if child is None or child.text is None else child.text.strip()
    if not text:
        if required:
            _fail(f"{where}/{tag} is missing or empty")
        return None
    return text


def _req(el: ET.Element, tag: str, where: str) -> str:
    text = _get(el, tag, where)
    assert text is not None
    return text


def _enum(value: str, allowed: Sequence[str], where: str, why: str = "") -> str:
    if value not in allowed:
        _fail(f"{where} is {value[:40]!r}; the centre takes {', '.join(allowed)}{why}")
    return value


def _pick_infos(alert: ET.Element, language: str | None) -> list[tuple[int, ET.Element]]:
    """The <info> blocks to play, numbered from 1 as in the document: all those in `language`,
    or all of them when they share one language. Several are joined (`_join`)."""
    infos = alert.findall(_q("info"))
    langs = [_get(i, "language", "alert/info", required=False) or "en-US" for i in infos]
    numbered = list(enumerate(infos, start=1))
    if language is not None:
        chosen = [(n, i) for (n, i), lang in zip(numbered, langs, strict=True)
                  if lang.lower() == language.lower()]
        if not chosen:
            _fail(f"no <info> in language {language}; the alert has {', '.join(langs)}")
        return chosen
    distinct = list(dict.fromkeys(lang.lower() for lang in langs))
    if len(distinct) > 1:
        _fail(
            f"the alert has {len(infos)} <info> blocks ({', '.join(langs)}); speakers play one "
            "language: choose it (language=...)"
        )
    return numbered


def _parse_references(text: str | None) -> list[dict[str, Any]]:
    """CAP sets no limit on references: all are kept, in the document's order, once each."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for triple in (text or "").split():
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts):
            _fail(
                f"alert/references {triple[:80]!r} is not sender,identifier,sent (CAP 1.2 "
                "3.2.1: space-separated triples)"
            )
        out.setdefault((parts[0], parts[1]), {
            "id": parts[1], "sender": parts[0], "sent": parse_time(parts[2], "alert/references")
        })
    return list(out.values())


def _cap_name(value: str, where: str) -> str:
    """CAP 1.2 3.2.1: identifier and sender hold no spaces, commas, '<' or '&' (references are
    split on them). Nothing else is asked: a source's identifier is kept as given."""
    bad = sorted({c for c in value if c.isspace() or c in ",<&"})
    if bad:
        _fail(
            f"{where} {value[:80]!r} holds {' '.join(repr(c) for c in bad)}; CAP 1.2 forbids "
            "spaces, commas, '<' and '&' in it"
        )
    return value


def _parse_area(area: ET.Element, n: int, notes: list[str]) -> dict[str, Any]:
    where = f"info/area[{n}]"
    desc = _req(area, "areaDesc", where)
    villages: list[str] = []
    groups: list[str] = []
    speakers: list[str] = []
    lists = {VN_VILLAGE: villages, VN_GROUP: groups, VN_SPEAKER: speakers}
    for geo in area.findall(_q("geocode")):
        name = _req(geo, "valueName", f"{where}/geocode")
        value = _req(geo, "value", f"{where}/geocode")
        if name in lists:
            lists[name].append(value)
        else:
            notes.append(f"{where} ({desc}): geocode {name} ignored")
    for tag in ("polygon", "circle", "altitude", "ceiling"):
        if area.find(_q(tag)) is not None:
            notes.append(f"{where} ({desc}): {tag} ignored; speakers are chosen by village")
    if len(villages) != 1:
        _fail(
            f"{where} ({desc}) must have exactly one geocode {VN_VILLAGE} (a village id); "
            f"it has {len(villages)}"
        )
    return {"village": villages[0], "groups": groups, "speakers": speakers}


def from_cap_xml(xml: str | bytes, language: str | None = None) -> dict[str, Any]:
    """Read one CAP 1.2 alert into broadcast fields (the names of `cap_fields`), plus
    `notes` (what the document holds that speakers cannot use and was left out), `joined`
    (the numbers of the <info> blocks joined, when several), `parts` (each text part and its
    length) and `info` (False for a Cancel without <info>). `id` and `sender` are the
    source's, as given.

    Several <info> blocks in one language are joined; in several languages, `language`
    chooses (all the blocks in it are joined)."""
    alert = _parse(xml)
    if alert.tag == f"{{{CAP_11_NS}}}alert":
        _fail("this is CAP 1.1; the centre reads CAP 1.2 (urn:oasis:names:tc:emergency:cap:1.2)")
    if alert.tag != _q("alert"):
        _fail(f"the root element is {alert.tag[:80]}, not a CAP 1.2 <alert>")
    notes: list[str] = []
    fields: dict[str, Any] = {
        "id": _cap_name(_req(alert, "identifier", "alert"), "alert/identifier"),
        "sender": _cap_name(_req(alert, "sender", "alert"), "alert/sender"),
        "sent": parse_time(_req(alert, "sent", "alert"), "alert/sent"),
        "status": _enum(_req(alert, "status", "alert"), STATUSES, "alert/status",
                        " (System and Draft messages are not played)"),
        "msgType": _enum(_req(alert, "msgType", "alert"), MSG_TYPES, "alert/msgType",
                         " (Ack and Error are not broadcasts)"),
    }
    _enum(_req(alert, "scope", "alert"), ("Public",), "alert/scope",
          ": speakers are heard by everyone")
    refs = _parse_references(_get(alert, "references", "alert", required=False))
    fields["references"] = [r["id"] for r in refs]
    fields["reference_details"] = refs

    fields["notes"] = notes
    fields["joined"] = []
    fields["parts"] = []
    if not alert.findall(_q("info")):
        if fields["msgType"] != "Cancel":
            _fail("alert has no <info>: a broadcast needs its urgency, expiry, area and text "
                  "(only a Cancel may leave it out, CAP 1.2 3.2.1)")
        if not refs:
            _fail("alert/references is missing: a Cancel without <info> must say what it stops")
        # As IPAWS and AtHoc send them: it stops what it references, nothing to play.
        fields["info"] = False
        return fields
    fields["info"] = True
    chosen = _pick_infos(alert, language)
    read = [_read_info(info, n, notes) for n, info in chosen]
    fields.update(_join(read, [n for n, _ in chosen], notes))
    fields["joined"] = [n for n, _ in chosen] if len(chosen) > 1 else []
    fields["parts"] = [p for r in read for p in r["parts"]]
    return fields


def _rank(value: str, order: Sequence[str]) -> int:
    return order.index(value)


def _join(read: list[dict[str, Any]], numbers: list[int], notes: list[str]) -> dict[str, Any]:
    """Several <info> blocks in the chosen language are one warning told in parts (NWS and
    Environment Canada send them): speakers say all the texts in order; the most severe,
    urgent and certain values, the earliest onset, the latest expiry and every area hold."""
    first = dict(read[0])
    if len(read) == 1:
        return first
    for n, r in zip(numbers[1:], read[1:], strict=True):
        if (r["category"], r["event"]) != (first["category"], first["event"]):
            notes.append(f"info[{n}]: event {r['event']!r} joined to {first['event']!r}")
    first["urgency"] = min((r["urgency"] for r in read), key=lambda v: _rank(v, URGENCIES))
    first["severity"] = min((r["severity"] for r in read), key=lambda v: _rank(v, SEVERITIES))
    first["certainty"] = min((r["certainty"] for r in read), key=lambda v: _rank(v, CERTAINTIES))
    onsets = [r["start"] for r in read if r["start"] is not None]
    first["start"] = min(onsets) if onsets and len(onsets) == len(read) else None
    expiries = [r["expires"] for r in read]
    first["expires"] = None if None in expiries else max(e for e in expiries if e is not None)
    first["text"] = "\n".join(r["text"] for r in read if r["text"])
    first["repeat"] = max(r["repeat"] for r in read)
    first["clip"] = next((r["clip"] for r in read if r["clip"]), None)
    merged: dict[str, dict[str, Any]] = {}
    for r in read:
        for a in r["area"]:
            old = merged.get(a["village"])
            if old is None:
                merged[a["village"]] = dict(a)
            elif not old["groups"] and not old["speakers"]:
                pass
            elif not a["groups"] and not a["speakers"]:
                merged[a["village"]] = dict(a)
            else:
                old["groups"] = list(dict.fromkeys(old["groups"] + a["groups"]))
                old["speakers"] = list(dict.fromkeys(old["speakers"] + a["speakers"]))
    first["area"] = list(merged.values())
    notes.append(
        f"info blocks {', '.join(str(n) for n in numbers)} ({first['language']}) joined into one "
        "broadcast: their texts in order, the most severe values"
    )
    return first


def _read_info(info: ET.Element, n: int, notes: list[str]) -> dict[str, Any]:
    where = f"info[{n}]"
    fields: dict[str, Any] = {}
    fields["language"] = _get(info, "language", where, required=False) or "en-US"
    categories = [(c.text or "").strip() for c in info.findall(_q("category"))]
    if not categories:
        _fail(f"{where}/category is missing")
    for c in categories:
        _enum(c, CATEGORIES, "info/category")
    if len(categories) > 1:
        notes.append(f"{where}/category: only {categories[0]} kept of {', '.join(categories)}")
    fields["category"] = categories[0]
    fields["event"] = _req(info, "event", where)
    fields["urgency"] = _enum(_req(info, "urgency", where), URGENCIES, "info/urgency")
    fields["severity"] = _enum(_req(info, "severity", where), SEVERITIES, "info/severity")
    fields["certainty"] = _enum(_req(info, "certainty", where), CERTAINTIES, "info/certainty")
    onset = _get(info, "onset", where, required=False)
    fields["start"] = None if onset is None else parse_time(onset, "info/onset")
    expires = _get(info, "expires", where, required=False)
    # CAP makes expires optional (3 of the 4 examples of the specification omit it); the
    # centre needs an end, which staff then choose at import (to_broadcast, valid_for_s).
    fields["expires"] = None if expires is None else parse_time(expires, "info/expires")
    if info.find(_q("effective")) is not None:
        notes.append(f"{where}/effective ignored: the broadcast starts at onset, or at once")

    description = _get(info, "description", where, required=False)
    instruction = _get(info, "instruction", where, required=False)
    headline = _get(info, "headline", where, required=False)
    parts = [(f"{where}/{tag}", t) for tag, t in
             (("description", description), ("instruction", instruction)) if t]
    if not parts and headline:
        parts = [(f"{where}/headline", headline)]
    fields["text"] = "\n".join(t for _, t in parts)
    fields["parts"] = [{"part": name, "length": len(t)} for name, t in parts]

    fields["repeat"] = 1
    for p in info.findall(_q("parameter")):
        name = _req(p, "valueName", "info/parameter")
        value = _get(p, "value", "info/parameter", required=False) or ""
        if name == VN_REPEAT:
            if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 5:
                _fail(f"info/parameter {VN_REPEAT} is {value[:20]!r}; it must be 1 to 5")
            fields["repeat"] = int(value)
        else:
            notes.append(f"info/parameter {name} ignored")

    fields["clip"] = None
    for r in info.findall(_q("resource")):
        desc = _req(r, "resourceDesc", "info/resource")
        mime = _req(r, "mimeType", "info/resource")
        if mime.startswith("audio/") and desc.lower() in CLIPS and fields["clip"] is None:
            fields["clip"] = desc.lower()
        else:
            notes.append(
                f"info/resource {desc[:40]!r} ({mime}) ignored: speakers play only their "
                f"{' or '.join(CLIPS)} clip"
            )

    fields["area"] = [
        _parse_area(a, n, notes) for n, a in enumerate(info.findall(_q("area")), start=1)
    ]
    return fields


def reference_keys(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(sender, identifier) of each alert the document references, for the centre to find
    the broadcasts it made of them."""
    return [(str(r["sender"]), str(r["id"])) for r in fields.get("reference_details") or []]


# The CAP element behind each broadcast field, for refusals of an import (the broadcast rules
# speak of the API's fields).
_ELEMENT = {
    "expires": "info/expires", "valid_for_s": "info/expires", "start": "info/onset",
    "text": "info/description", "area": "info/area", "village": "info/area",
    "sender": "alert/sender", "references": "alert/references", "identifier": "alert/identifier",
    "language": "info/language", "event": "info/event", "repeat": "info/parameter",
    "give": "info/description",
}


def _as_cap(exc: BroadcastError) -> BroadcastError:
    """The same refusal, naming the CAP element first."""
    msg = str(exc)
    word = re.split(r"[\s.:]", msg, maxsplit=1)[0]
    element = _ELEMENT.get(word)
    if element is None and msg.startswith("the copy for gateway"):
        element = "info/area"
    return BroadcastError(f"{element}: {msg}" if element else msg)


def _too_long(fields: Mapping[str, Any], text: str) -> NoReturn:
    parts = ", ".join(f"{p['part']} {p['length']}" for p in fields.get("parts") or [])
    joined = fields.get("joined") or []
    how = f"; <info> blocks {', '.join(str(n) for n in joined)} joined" if joined else ""
    _fail(
        f"info/description: the text to speak is {len(text)} characters ({parts}{how}); "
        f"speakers take at most {MAX_TEXT}: import it with text=... (at most {MAX_TEXT} "
        "characters that staff write from it)"
    )


def to_broadcast(
    fields: Mapping[str, Any],
    *,
    by: str,
    centre_id: str,
    now: int,
    known: Mapping[tuple[str, str], Broadcast] | None = None,
    live: Collection[str] | None = None,
    valid_for_s: int | None = None,
    text: str | None = None,
    bc_id: str | None = None,
) -> Broadcast:
    """Check CAP fields (from `from_cap_xml`) with the rules of a posted broadcast.

    The broadcast gets the centre's own id (`bc_id`, or a new one); the source's identifier,
    sender, sent, msgType and every reference are kept in `origin`. `known` maps a
    reference's (sender, identifier) to the broadcast this centre made of it: those are the
    broadcasts an Update or Cancel stops, and the only references gateways are sent (at most
    `MAX_REFERENCES`; beyond that only those still `live`). An Update that references nothing
    known here goes to speakers as a new Alert; a Cancel that does is refused. Staff choose a
    validity (`valid_for_s`) for an alert without expires, and may give the `text` to speak
    when the alert's is over `MAX_TEXT`. An onset in the past means: now. Notes on what was
    changed are appended to fields["notes"]. Raises CapError or BroadcastError."""
    notes = fields.get("notes")
    note = notes.append if isinstance(notes, list) else (lambda _n: None)
    known = known or {}
    source_refs = tuple(
        Reference(str(r["id"]), str(r["sender"]), int(r["sent"]))
        for r in fields.get("reference_details") or []
    )
    origin = CapOrigin(
        identifier=str(fields["id"]), sender=str(fields["sender"]), sent=int(fields["sent"]),
        msg_type=str(fields["msgType"]), references=source_refs,
    )
    mapped: dict[str, Broadcast] = {}
    for key in reference_keys(fields):
        if key in known:
            mapped.setdefault(known[key].id, known[key])
    msg_type = str(fields["msgType"])
    if msg_type == "Alert" and source_refs:
        note("alert/references kept at the centre: an Alert stops nothing")
    if msg_type != "Alert" and not source_refs:
        _fail(f"alert/references is missing: a {msg_type} needs references (CAP 1.2 3.2.1: "
              "the alerts it replaces or stops)")
    if msg_type != "Alert" and not mapped:
        if msg_type == "Cancel":
            ids = ", ".join(r.id for r in source_refs[:3])
            _fail(
                f"alert/references: none of the {len(source_refs)} alerts this Cancel stops "
                f"({ids}{', ...' if len(source_refs) > 3 else ''}) was imported here; there "
                "is nothing to cancel"
            )
        msg_type = "Alert"
        note("alert/references: none of the referenced alerts was imported here; the Update "
             "goes to speakers as a new broadcast")
    refs = list(mapped.values())
    if len(refs) > MAX_REFERENCES and live is not None:
        refs = [b for b in refs if b.id in live]
        note(f"alert/references: {len(mapped)} known here; gateways are told of the "
             f"{len(refs)} still playing (the others are stopped already)")
    if len(refs) > MAX_REFERENCES:
        _fail(
            f"alert/references: {len(refs)} of the referenced broadcasts still play here; a "
            f"copy to gateways names at most {MAX_REFERENCES}: cancel some of them first"
        )

    if not fields.get("info", True):
        # A Cancel without <info> (IPAWS, AtHoc): it stops what it references, with their
        # values, until the last of them would have expired.
        last = max(refs, key=lambda b: b.expires)
        if last.expires <= now:
            _fail("alert/references: the broadcasts this Cancel stops have expired already")
        body: dict[str, Any] = {
            "status": fields["status"], "msgType": "Cancel", "urgency": last.urgency,
            "severity": last.severity, "certainty": last.certainty, "expires": last.expires,
            "language": last.language, "category": last.category, "event": last.event,
        }
    else:
        body = {
            k: fields[k]
            for k in (
                "status", "urgency", "severity", "certainty", "start", "expires", "area",
                "language", "text", "clip", "repeat", "category", "event",
            )
            if k in fields
        }
        body["msgType"] = msg_type
        if body.get("expires") is None and msg_type == "Cancel" and valid_for_s is None:
            # A Cancel stops sound until what it cancels would have ended.
            body["expires"] = max(b.expires for b in refs)
        if body.get("expires") is None:
            if valid_for_s is None:
                _fail(
                    "info/expires is missing: CAP allows that, but speakers need an end; "
                    "import it with a validity that staff choose (valid_for_s=SECONDS, e.g. "
                    "3600 for one hour)"
                )
            body.pop("expires", None)
            body["valid_for_s"] = valid_for_s
            note(f"info/expires missing: plays for {valid_for_s} s, as staff chose")
        elif valid_for_s is not None:
            note("valid_for_s ignored: the alert gives its own expires")
        if text is not None:
            body["text"] = text
            note("the text to speak was written by staff at import")
        elif len(str(body.get("text", ""))) > MAX_TEXT:
            _too_long(fields, str(body["text"]))
    body["references"] = [b.id for b in refs]
    try:
        req = BroadcastIn.model_validate({**body, "by": by})
    except ValidationError as exc:
        raise _as_cap(BroadcastError(validation_message(exc))) from None
    sender = str(fields["sender"])
    if len(sender) > MAX_SENDER:
        sender = make_sender(centre_id, by)
        note(f"alert/sender is over {MAX_SENDER} characters: kept at the centre, gateways "
             f"are told {sender}")
    try:
        return build(
            req,
            centre_id=centre_id,
            now=now,
            known={b.id: b for b in refs},
            identifier=bc_id or make_id(centre_id, now),
            sender=sender,
            sent=int(fields["sent"]),
            references=[b.as_reference() for b in refs],
            allow_past_start=True,
            origin=origin,
        )
    except BroadcastError as exc:
        raise _as_cap(exc) from None
