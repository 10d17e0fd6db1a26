"""What staff and CAP sources may release, over the centre's API (centre/bcapi.py,
centre/bcstore.py): the Extreme confirmation, a second broadcaster's approval, the broadcast
settings, Test and Exercise, CAP imports that cancel, coverage per village, the audit lines
and the live changes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from centre.access import ACCESS
from centre.auth import Role
from centre.broadcast import DRILL_PREFIX
from centre.cap import from_cap_xml
from harness.fakegateway import signed_reports
from tests.auth_support import act_as, act_as_broadcaster
from tests.unit.test_centre_broadcasting import (
    KEYS,
    NOW,
    Centre,
    FakeBroker,
    body,
    poll,
    running,
    setup_centre,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "cap"


@pytest.fixture
async def centre(tmp_path: Path) -> AsyncIterator[Centre]:
    cfg = await setup_centre(tmp_path)
    async with running(cfg, FakeBroker(), [NOW]) as c:
        yield c


def audit_rows(tmp_path: Path) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The audit log, as an admin reads it (the centre's database under the test's folder)."""
    (path,) = [p for p in (tmp_path / "centre").rglob("*.db")]
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT actor, action, target, detail FROM audit ORDER BY id").fetchall()
    finally:
        db.close()
    return [(a, b, t, json.loads(d)) for a, b, t, d in rows]


async def post(c: Centre, expect: int, **kw: Any) -> dict[str, Any]:
    r = await c.http.post("/api/broadcasts", json=body(**kw))
    assert r.status_code == expect, r.text
    out: dict[str, Any] = r.json()
    return out


async def post_cap(c: Centre, xml: str | bytes, status: int = 201, **params: Any) -> httpx.Response:
    r = await c.http.post("/api/broadcasts/cap", params=params, content=xml,
                          headers={"content-type": "application/cap+xml"})
    assert r.status_code == status, r.text
    return r


def copies_for(c: Centre, bc_id: str) -> list[str]:
    return [gw for gw, b in c.copies() if b["id"] == bc_id]


async def test_extreme_to_a_whole_village_needs_an_explicit_confirmation(centre: Centre) -> None:
    act_as(centre.app, Role.BROADCASTER, "li")
    refused = await post(centre, 409, severity="Extreme")
    assert "confirm_extreme" in refused["detail"] and "village v-1" in refused["detail"]
    assert centre.copies() == []
    ok = await post(centre, 201, severity="Extreme", confirm_extreme=True)
    assert ok["state"] == "sending" and ok["by"] == "li"
    # To named speakers only, or less than Extreme, nothing to confirm.
    await post(centre, 201, severity="Extreme", area=[{"village": "v-1", "speakers": ["s-1"]}])
    await post(centre, 201, severity="Severe")


async def test_settings_are_for_admins_stored_and_audited(centre: Centre, tmp_path: Path) -> None:
    assert ACCESS[("GET", "/api/settings/broadcasts")] is Role.ADMIN
    assert ACCESS[("PUT", "/api/settings/broadcasts")] is Role.ADMIN
    assert ACCESS[("POST", "/api/broadcasts/{bc_id}/approve")] is Role.BROADCASTER
    act_as(centre.app, Role.ADMIN, "admin")
    r = await centre.http.get("/api/settings/broadcasts")
    assert r.json() == {"approval": "none", "drill_villages": []}
    r = await centre.http.put("/api/settings/broadcasts",
                              json={"approval": "extreme", "drill_villages": ["v-1"]})
    assert r.status_code == 200 and r.json()["approval"] == "extreme"
    assert (await centre.http.get("/api/settings/broadcasts")).json()["drill_villages"] == ["v-1"]
    bad = await centre.http.put("/api/settings/broadcasts", json={"approval": "sometimes",
                                                                  "drill_villages": []})
    assert bad.status_code == 422
    (row,) = [r for r in audit_rows(tmp_path) if r[1] == "settings.put"]
    assert row[0] == "admin" and row[3]["new"]["approval"] == "extreme"
    assert row[3]["old"]["approval"] == "none"


async def test_a_second_broadcaster_releases_an_extreme_broadcast(
    centre: Centre, tmp_path: Path
) -> None:
    act_as(centre.app, Role.ADMIN, "admin")
    await centre.http.put("/api/settings/broadcasts",
                          json={"approval": "extreme", "drill_villages": []})
    act_as_broadcaster(centre.app, 1, "li")
    held = await post(centre, 201, severity="Extreme", confirm_extreme=True)
    assert held["state"] == "awaiting_approval" and "second broadcaster" in held["hold_reason"]
    assert copies_for(centre, held["id"]) == []  # nothing leaves before approval
    routine = await post(centre, 201, severity="Minor")
    assert routine["state"] == "sending"  # only Extreme to a whole village waits

    same = await centre.http.post(f"/api/broadcasts/{held['id']}/approve")
    assert same.status_code == 403 and "different broadcaster" in same.json()["detail"]
    act_as_broadcaster(centre.app, 2, "wang")
    r = await centre.http.post(f"/api/broadcasts/{held['id']}/approve")
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["state"], out["approved_by"], out["by"]) == ("sending", "wang", "li")
    await centre_wait(centre, held["id"])
    again = await centre.http.post(f"/api/broadcasts/{held['id']}/approve")
    assert again.status_code == 409 and "not awaiting approval" in again.json()["detail"]
    actions = [(a, act, t) for a, act, t, _ in audit_rows(tmp_path) if t == held["id"]]
    assert actions == [("li", "broadcast.create", held["id"]), ("wang", "broadcast.approve", held["id"])]


async def test_a_broadcast_awaiting_approval_can_be_cancelled_and_never_goes(
    centre: Centre, tmp_path: Path
) -> None:
    act_as(centre.app, Role.ADMIN, "admin")
    await centre.http.put("/api/settings/broadcasts", json={"approval": "all", "drill_villages": []})
    act_as_broadcaster(centre.app, 1, "li")
    held = await post(centre, 201)
    assert held["state"] == "awaiting_approval"
    act_as_broadcaster(centre.app, 2, "wang")
    r = await centre.http.post(f"/api/broadcasts/{held['id']}/cancel", json={"note": "不需要"})
    assert r.status_code == 200, r.text
    assert r.json()["broadcast"]["state"] == "cancelled" and r.json()["cancel"] is None
    assert r.json()["broadcast"]["cancelled_by"] == "wang"
    late = await centre.http.post(f"/api/broadcasts/{held['id']}/approve")
    assert late.status_code == 409
    assert copies_for(centre, held["id"]) == []
    (row,) = [r for r in audit_rows(tmp_path) if r[1] == "broadcast.cancel"]
    assert row[:3] == ("wang", "broadcast.cancel", held["id"])
    assert row[3]["was"] == "awaiting_approval"


async def test_a_test_broadcast_is_recorded_and_shown_but_never_sent(centre: Centre) -> None:
    act_as(centre.app, Role.BROADCASTER, "li")
    out = await post(centre, 201, status="Test", severity="Extreme")  # no confirmation needed
    assert out["state"] == "recorded" and out["gateways"] == []
    assert "status Test" in out["hold_reason"]
    listed = (await centre.http.get("/api/broadcasts", params={"state": "recorded"})).json()
    assert [b["id"] for b in listed] == [out["id"]]
    assert copies_for(centre, out["id"]) == []
    # A CAP source's Test alert (IPAWS monthly test): the same.
    xml = (DATA / "status-test.xml").read_bytes()
    centre.now[0] = from_cap_xml(xml)["sent"]
    r = await post_cap(centre, xml)
    assert r.json()["state"] == "recorded" and r.json()["gateways"] == []


async def test_an_exercise_plays_only_where_drills_are_enabled_announced_as_a_drill(
    centre: Centre,
) -> None:
    act_as(centre.app, Role.BROADCASTER, "li")
    nowhere = await post(centre, 201, status="Exercise")
    assert nowhere["state"] == "recorded" and "drill_villages" in nowhere["hold_reason"]
    act_as(centre.app, Role.ADMIN, "admin")
    await centre.http.put("/api/settings/broadcasts",
                          json={"approval": "none", "drill_villages": ["v-3"]})
    act_as(centre.app, Role.BROADCASTER, "li")
    drill = await post(centre, 201, status="Exercise",
                       area=[{"village": "v-1"}, {"village": "v-3"}])
    assert drill["state"] == "sending" and [a["village"] for a in drill["area"]] == ["v-3"]
    assert drill["text"].startswith(DRILL_PREFIX) and "v-1" in drill["hold_reason"]
    await centre_wait(centre, drill["id"])
    (copy,) = [b for gw, b in centre.copies() if b["id"] == drill["id"]]
    assert copy["gw"] == "gw-2" and copy["text"].startswith(DRILL_PREFIX)
    assert copy["status"] == "Exercise"


async def centre_wait(c: Centre, bc_id: str) -> None:
    async def published() -> bool:
        return bool(copies_for(c, bc_id))

    await poll(published)


async def test_a_cap_source_cancels_what_it_sent_with_a_cancel_without_info(
    centre: Centre,
) -> None:
    act_as(centre.app, Role.BROADCASTER, "li")
    centre.now[0] = 1_718_397_720_000  # 2024-06-14T20:42:00Z, when the NWS alert was sent
    xml = (DATA / "nws-thunderstorm-two-info.xml").read_bytes()
    long = await post_cap(centre, xml, status=422)
    assert "import it with text=" in long.json()["detail"]
    short = {"text": "雷暴警报：请立即进入室内。"}
    unconfirmed = await post_cap(centre, xml, status=409, **short)  # Extreme after joining
    assert "confirm_extreme" in unconfirmed.json()["detail"]
    first = (await post_cap(centre, xml, confirm_extreme="true", **short)).json()
    assert first["cap_source"]["identifier"].startswith("urn:oid:2.49.0.1.840.0.")
    assert first["id"] != first["cap_source"]["identifier"]
    again = await post_cap(centre, xml, status=409, confirm_extreme="true", **short)
    assert "imported already, as broadcast " + first["id"] in again.json()["detail"]
    await centre_wait(centre, first["id"])

    centre.now[0] += 23 * 60_000
    cancel = (await post_cap(centre, (DATA / "ipaws-cancel-without-info.xml").read_bytes()))
    out = cancel.json()
    assert out["msgType"] == "Cancel" and out["references"] == [first["id"]]
    assert len(out["cap_source"]["references"]) == 1
    got = await centre.get(first["id"])
    assert got["state"] == "cancelled" and got["replaced_by"] == out["id"]
    await centre_wait(centre, out["id"])
    (copy,) = [b for gw, b in centre.copies() if b["id"] == out["id"]]
    assert copy["references"] == [first["id"]]  # our own id on the wire, not the source's


async def test_coverage_per_village_and_a_live_change_when_reports_move_it(
    centre: Centre,
) -> None:
    act_as(centre.app, Role.BROADCASTER, "li")
    hub = centre.app.state.live
    q = hub.subscribe()
    bc = (await post(centre, 201, area=[{"village": "v-1"}, {"village": "v-3"}]))["id"]
    assert (await q.get()).data == {"id": bc}  # created
    await centre_wait(centre, bc)
    await centre.receive(*signed_reports(KEYS["gw-1"], "gw-1", bc, [
        ("spk-1", "played", NOW + 100), ("spk-2", "queued", NOW + 100),
    ]))
    await centre.receive(*signed_reports(KEYS["gw-2"], "gw-2", bc, [("spk-9", "played", NOW + 200)]))
    changes = []
    while not q.empty():
        change = q.get_nowait()
        assert change is not None
        changes.append((change.topic, change.data))
    assert changes == [("broadcast", {"id": bc}), ("broadcast", {"id": bc})]
    # The same report again changes no count: no change is published.
    await centre.receive(*signed_reports(KEYS["gw-2"], "gw-2", bc, [("spk-9", "played", NOW + 200)]))
    assert q.empty()
    cov = (await centre.get(bc))["coverage"]
    assert cov["overall"] == {"targeted": 3, "played": 2}
    assert [(v["village"], v["gateways"], v["targeted"], v["played"]) for v in cov["villages"]] == [
        ("v-1", ["gw-1"], 2, 1), ("v-3", ["gw-2"], 1, 1)
    ]


async def test_staff_see_what_an_import_would_do_before_sending_it(centre: Centre) -> None:
    assert ACCESS[("POST", "/api/broadcasts/cap/check")] is Role.BROADCASTER
    act_as(centre.app, Role.BROADCASTER, "li")
    xml = (DATA / "nws-thunderstorm-two-info.xml").read_bytes()
    centre.now[0] = from_cap_xml(xml)["sent"]

    async def check(doc: bytes, **params: Any) -> dict[str, Any]:
        r = await centre.http.post("/api/broadcasts/cap/check", params=params, content=doc,
                                   headers={"content-type": "application/cap+xml"})
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    out = await check(xml)
    assert not out["acceptable"] and out["refusal"].startswith("info/description: the text")
    assert out["joined"] == [1, 2] and out["text_length"] == 1011 and out["text_limit"] == 500
    assert out["parts"][0]["part"] == "info[1]/description"
    assert out["villages"] == ["v-1", "v-2"]
    fine = await check(xml, text="雷暴警报：请立即进入室内。")
    assert fine["acceptable"] and fine["text_length"] == 13
    oasis = (DATA / "oasis-homeland-security.xml").read_bytes()
    centre.now[0] = from_cap_xml(oasis)["sent"]
    missing = await check(oasis)
    assert missing["expires_missing"] and "valid_for_s" in missing["refusal"]
    assert (await check(oasis, valid_for_s=3600))["acceptable"]
    assert centre.copies() == [] and (await centre.http.get("/api/broadcasts")).json() == []


async def test_an_update_awaiting_approval_stops_what_it_replaces_only_once_released(
    centre: Centre,
) -> None:
    act_as(centre.app, Role.ADMIN, "admin")
    await centre.http.put("/api/settings/broadcasts",
                          json={"approval": "extreme", "drill_villages": []})
    act_as_broadcaster(centre.app, 1, "li")
    first = await post(centre, 201)
    upd = await post(centre, 201, msgType="Update", references=[first["id"]], area=[],
                     severity="Extreme", confirm_extreme=True)
    assert upd["state"] == "awaiting_approval"
    assert (await centre.get(first["id"]))["state"] in ("sending", "sent")  # still playing
    act_as_broadcaster(centre.app, 2, "wang")
    r = await centre.http.post(f"/api/broadcasts/{upd['id']}/approve")
    assert r.status_code == 200, r.text
    got = await centre.get(first["id"])
    assert (got["state"], got["replaced_by"]) == ("updated", upd["id"])


async def test_an_approved_broadcast_keeps_its_start_and_one_that_expired_waiting_is_refused(
    centre: Centre,
) -> None:
    act_as(centre.app, Role.ADMIN, "admin")
    await centre.http.put("/api/settings/broadcasts", json={"approval": "all", "drill_villages": []})
    act_as_broadcaster(centre.app, 1, "li")
    later = await post(centre, 201, start=NOW + 60_000)
    short = await post(centre, 201, valid_for_s=60)
    act_as_broadcaster(centre.app, 2, "wang")
    r = await centre.http.post(f"/api/broadcasts/{later['id']}/approve")
    assert r.json()["state"] == "scheduled" and copies_for(centre, later["id"]) == []
    centre.now[0] = NOW + 61_000
    await centre_wait(centre, later["id"])  # the scheduler releases it at its start
    expired = await centre.http.post(f"/api/broadcasts/{short['id']}/approve")
    assert expired.status_code == 409 and "expired while it waited" in expired.json()["detail"]
