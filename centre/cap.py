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
from collections.abc import Mapping, Sequence
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
    Reference,
    build,
    validation_message,
)

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


def _pick_info(alert: ET.Element, language: str | None) -> ET.Element:
    infos = alert.findall(_q("info"))
    if not infos:
        _fail("alert has no <info>: a broadcast needs its urgency, expiry, area and text")
    langs = [_get(i, "language", "alert/info", required=False) or "en-US" for i in infos]
    if language is not None:
        for info, lang in zip(infos, langs, strict=True):
            if lang.lower() == language.lower():
                return info
        _fail(f"no <info> in language {language}; the alert has {', '.join(langs)}")
    if len(infos) > 1:
        _fail(
            f"the alert has {len(infos)} <info> blocks ({', '.join(langs)}); speakers play one "
            "language: choose it (language=...)"
        )
    return infos[0]


def _parse_references(text: str | None) -> list[dict[str, Any]]:
    out = []
    for triple in (text or "").split():
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts):
            _fail(f"alert/references {triple[:80]!r} is not sender,identifier,sent")
        out.append({
            "id": parts[1], "sender": parts[0], "sent": parse_time(parts[2], "alert/references")
        })
    return out


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
    `notes`: what the document holds that speakers cannot use and was left out.

    An alert with several <info> blocks needs `language` to choose one."""
    alert = _parse(xml)
    if alert.tag == f"{{{CAP_11_NS}}}alert":
        _fail("this is CAP 1.1; the centre reads CAP 1.2 (urn:oasis:names:tc:emergency:cap:1.2)")
    if alert.tag != _q("alert"):
        _fail(f"the root element is {alert.tag[:80]}, not a CAP 1.2 <alert>")
    notes: list[str] = []
    fields: dict[str, Any] = {
        "id": _req(alert, "identifier", "alert"),
        "sender": _req(alert, "sender", "alert"),
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

    info = _pick_info(alert, language)
    fields["language"] = _get(info, "language", "info", required=False) or "en-US"
    categories = [(c.text or "").strip() for c in info.findall(_q("category"))]
    if not categories:
        _fail("info/category is missing")
    for c in categories:
        _enum(c, CATEGORIES, "info/category")
    if len(categories) > 1:
        notes.append(f"info/category: only {categories[0]} kept of {', '.join(categories)}")
    fields["category"] = categories[0]
    fields["event"] = _req(info, "event", "info")
    fields["urgency"] = _enum(_req(info, "urgency", "info"), URGENCIES, "info/urgency")
    fields["severity"] = _enum(_req(info, "severity", "info"), SEVERITIES, "info/severity")
    fields["certainty"] = _enum(_req(info, "certainty", "info"), CERTAINTIES, "info/certainty")
    onset = _get(info, "onset", "info", required=False)
    fields["start"] = None if onset is None else parse_time(onset, "info/onset")
    expires = _get(info, "expires", "info", required=False)
    if expires is None:
        _fail("info/expires is missing: a broadcast must say when speakers stop playing it")
    fields["expires"] = parse_time(expires, "info/expires")
    if info.find(_q("effective")) is not None:
        notes.append("info/effective ignored: the broadcast starts at onset, or at once")

    description = _get(info, "description", "info", required=False)
    instruction = _get(info, "instruction", "info", required=False)
    headline = _get(info, "headline", "info", required=False)
    spoken = [t for t in (description, instruction) if t]
    fields["text"] = "\n".join(spoken) if spoken else (headline or "")

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
    fields["notes"] = notes
    return fields


def to_broadcast(
    fields: Mapping[str, Any],
    *,
    by: str,
    centre_id: str,
    now: int,
    known: Mapping[str, Broadcast] | None = None,
) -> Broadcast:
    """Check CAP fields (from `from_cap_xml`) with the rules of a posted broadcast. The
    alert keeps its own identifier, sender and sent; an onset in the past means: now.
    Raises BroadcastError."""
    body = {
        k: fields[k]
        for k in (
            "status", "msgType", "references", "urgency", "severity", "certainty", "start",
            "expires", "area", "language", "text", "clip", "repeat", "category", "event",
        )
        if k in fields
    }
    try:
        req = BroadcastIn.model_validate({**body, "by": by})
    except ValidationError as exc:
        raise BroadcastError(validation_message(exc)) from None
    refs = [
        Reference(str(r["id"]), str(r["sender"]), int(r["sent"]))
        for r in fields.get("reference_details") or []
    ]
    return build(
        req,
        centre_id=centre_id,
        now=now,
        known=known,
        identifier=str(fields["id"]),
        sender=str(fields["sender"]),
        sent=int(fields["sent"]),
        references=refs,
        allow_past_start=True,
    )
