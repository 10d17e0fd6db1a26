"""CAP 1.2 documents as real warning systems send them (tests/data/cap/, sources in its
README): identifiers as given, any number of references, several <info> blocks, a Cancel
without <info>, Test and Exercise, no expires, long texts. Pure: centre/cap.py and
centre/broadcast.py, no I/O but reading the fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from centre.broadcast import DRILL_PREFIX, Area, Broadcast, BroadcastError, BroadcastIn, build
from centre.cap import CapError, from_cap_xml, reference_keys, to_broadcast
from device_fw import okproto

DATA = Path(__file__).resolve().parents[1] / "data" / "cap"
FIXTURES = sorted(p.name for p in DATA.glob("*.xml"))
LANGUAGE = {"ec-update-nine-references.xml": "en-CA"}


def read(name: str, language: str | None = None) -> dict[str, Any]:
    return from_cap_xml((DATA / name).read_bytes(), language=language or LANGUAGE.get(name))


def ours(n: int, sent: int, **kw: Any) -> Broadcast:
    """A broadcast this centre made earlier (of an imported alert, say)."""
    body: dict[str, Any] = {
        "by": "li", "urgency": "Expected", "severity": "Moderate", "certainty": "Likely",
        "valid_for_s": 86_400, "area": [{"village": "v-1"}], "text": f"第{n}次", **kw,
    }
    return build(BroadcastIn.model_validate(body), centre_id="centre", now=sent)


def test_the_fixtures_are_there_and_every_one_reads() -> None:
    assert len(FIXTURES) >= 9 and (DATA / "README.md").exists()
    for name in FIXTURES:
        fields = read(name)
        assert fields["id"] and fields["sender"], name


@pytest.mark.parametrize(
    ("name", "length"),
    [
        ("iceland-43-char-identifier.xml", 43),
        ("usgs-58-char-identifier.xml", 58),
        ("nws-thunderstorm-two-info.xml", 69),
        ("bom-identifier-with-plus.xml", None),
    ],
)
def test_a_sources_identifier_is_kept_as_given_and_mapped_to_a_broadcast_id(
    name: str, length: int | None
) -> None:
    fields = read(name)
    identifier = fields["id"]
    if length is not None:
        assert len(identifier) == length
    else:
        assert "+" in identifier
    assert not okproto.valid_bc_id(identifier)  # the wire could not carry it
    bc = to_broadcast(fields, by="li", centre_id="centre", now=fields["sent"],
                      valid_for_s=3600, text="请注意收听。")
    assert okproto.valid_bc_id(bc.id) and bc.id.startswith("centre-")
    assert bc.origin is not None
    assert (bc.origin.identifier, bc.origin.sender, bc.origin.sent) == (
        identifier, fields["sender"], fields["sent"]
    )


@pytest.mark.parametrize("bad", ["a b", "a,b", "a&amp;b", "a&lt;b", "a\tb"])
def test_an_identifier_cap_forbids_is_refused_naming_the_element_and_the_rule(bad: str) -> None:
    xml = (DATA / "iceland-43-char-identifier.xml").read_text(encoding="utf-8")
    xml = xml.replace("2.49.0.1.352.0.IS.241104123812.0014.0002.12", bad)
    with pytest.raises(CapError, match=r"alert/identifier .* CAP 1.2 forbids spaces, commas"):
        from_cap_xml(xml)


def test_nine_references_are_all_kept_and_gateways_hear_of_those_still_playing() -> None:
    fields = read("ec-update-nine-references.xml")
    keys = reference_keys(fields)
    assert len(keys) == 9 and len(fields["reference_details"]) == 9
    sent = fields["sent"]
    made = {key: ours(n, sent - 3_600_000) for n, key in enumerate(keys)}
    # All nine imported here earlier, only the last still playing: gateways get that one.
    last = made[keys[-1]]
    bc = to_broadcast(fields, by="li", centre_id="centre", now=sent, known=made, live={last.id})
    assert bc.msg_type == "Update" and [r.id for r in bc.references] == [last.id]
    assert bc.origin is not None and len(bc.origin.references) == 9
    assert bc.origin.references[0].id == keys[0][1]
    # Nine still playing: more than a copy can name; the refusal says what to do.
    with pytest.raises(CapError, match=r"alert/references: 9 .* at most 8: cancel some"):
        to_broadcast(fields, by="li", centre_id="centre", now=sent, known=made,
                     live={b.id for b in made.values()})
    # None of them imported here: speakers get it as a new broadcast; the centre keeps all 9.
    fresh = to_broadcast(fields, by="li", centre_id="centre", now=sent)
    assert fresh.msg_type == "Alert" and fresh.references == ()
    assert fresh.origin is not None and fresh.origin.msg_type == "Update"


def test_several_info_blocks_in_one_language_are_joined_and_say_so() -> None:
    fields = read("nws-thunderstorm-two-info.xml")
    assert fields["joined"] == [1, 2]
    assert fields["severity"] == "Extreme"  # the most severe of the two
    assert [a["village"] for a in fields["area"]] == ["v-1", "v-2"]
    assert fields["text"].endswith("DESTRUCTIVE near Ankeny.")
    assert any("info blocks 1, 2 (en-US) joined" in n for n in fields["notes"])
    assert [p["part"] for p in fields["parts"]] == [
        "info[1]/description", "info[1]/instruction", "info[2]/description"
    ]


def test_a_text_over_the_speakers_limit_is_refused_with_its_length_and_parts() -> None:
    fields = read("nws-thunderstorm-two-info.xml")
    n = len(fields["text"])
    assert n > okproto.MAX_TEXT
    with pytest.raises(CapError) as err:
        to_broadcast(fields, by="li", centre_id="centre", now=fields["sent"])
    message = str(err.value)
    assert message.startswith(f"info/description: the text to speak is {n} characters")
    assert "info[1]/description" in message and "<info> blocks 1, 2 joined" in message
    assert "import it with text=" in message
    bc = to_broadcast(fields, by="li", centre_id="centre", now=fields["sent"],
                      text="雷暴警报：请立即进入室内。")
    assert bc.text == "雷暴警报：请立即进入室内。" and bc.severity == "Extreme"


def test_an_alert_without_expires_is_imported_with_a_validity_staff_choose() -> None:
    fields = read("oasis-homeland-security.xml")
    assert fields["expires"] is None
    with pytest.raises(CapError, match=r"^info/expires is missing: .*valid_for_s=SECONDS"):
        to_broadcast(fields, by="li", centre_id="centre", now=fields["sent"])
    bc = to_broadcast(fields, by="li", centre_id="centre", now=fields["sent"], valid_for_s=7200)
    assert bc.expires == fields["sent"] + 7_200_000
    assert any("plays for 7200 s, as staff chose" in n for n in fields["notes"])


def test_a_cancel_without_info_cancels_what_it_references() -> None:
    alert = read("nws-thunderstorm-two-info.xml")
    cancel = read("ipaws-cancel-without-info.xml")
    assert cancel["info"] is False and cancel["msgType"] == "Cancel"
    sent = alert["sent"]
    made = to_broadcast(alert, by="li", centre_id="centre", now=sent, text="雷暴警报。")
    known = {(alert["sender"], alert["id"]): made}
    bc = to_broadcast(cancel, by="li", centre_id="centre", now=cancel["sent"], known=known)
    assert bc.msg_type == "Cancel" and [r.id for r in bc.references] == [made.id]
    assert bc.area == made.area and bc.expires == made.expires and bc.text == ""
    # Referencing nothing imported here: refused, naming the element.
    with pytest.raises(CapError, match=r"alert/references: none of the 1 alerts this Cancel"):
        to_broadcast(cancel, by="li", centre_id="centre", now=cancel["sent"])
    # An alert that is not a Cancel still needs its <info>.
    xml = (DATA / "ipaws-cancel-without-info.xml").read_text(encoding="utf-8")
    with pytest.raises(CapError, match="alert has no <info>"):
        from_cap_xml(xml.replace("<msgType>Cancel<", "<msgType>Update<"))


def test_an_exercise_is_announced_as_a_drill() -> None:
    fields = read("status-exercise.xml")
    bc = to_broadcast(fields, by="li", centre_id="centre", now=fields["sent"])
    assert bc.status == "Exercise" and bc.text.startswith(DRILL_PREFIX)
    assert bc.text == DRILL_PREFIX + "河水上涨，请沿东侧道路转移到村委会。\n请老人和儿童先行。"
    assert bc.area == (Area("v-1"), Area("v-2"))
    # Already announced as a drill: not twice.
    again = ours(1, fields["sent"], status="Exercise", text=DRILL_PREFIX + "演练")
    assert again.text == DRILL_PREFIX + "演练"
    with pytest.raises(Exception, match="announced as a drill"):
        ours(1, fields["sent"], status="Exercise", text="字" * 500)


def test_a_test_alert_reads_with_its_status() -> None:
    fields = read("status-test.xml")
    bc = to_broadcast(fields, by="li", centre_id="centre", now=fields["sent"])
    assert bc.status == "Test" and not bc.needs_extreme_confirmation()


def test_a_refusal_by_the_broadcast_rules_names_the_cap_element() -> None:
    fields = read("iceland-43-char-identifier.xml")
    late = fields["sent"] + 86_400_000  # read a day later: it has expired
    with pytest.raises(BroadcastError, match=r"^info/expires: expires .* is not after now"):
        to_broadcast(fields, by="li", centre_id="centre", now=late)
    with pytest.raises(BroadcastError, match=r"^info/area: area is empty"):
        to_broadcast({**fields, "area": []}, by="li", centre_id="centre", now=fields["sent"])
    with pytest.raises(BroadcastError, match=r"^info/description: .*outside the Basic"):
        to_broadcast({**fields, "text": "🔥"}, by="li", centre_id="centre", now=fields["sent"])


def test_cap_check_prints_joined_blocks_parts_and_takes_a_chosen_validity_and_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from onekey.cli import main

    # Old documents have expired by now: the refusals are what staff would read.
    nws = str(DATA / "nws-thunderstorm-two-info.xml")
    assert main(["cap", "check", nws]) == 1
    err = capsys.readouterr().err
    assert "the text to speak is 1011 characters" in err
    oasis = str(DATA / "oasis-homeland-security.xml")
    assert main(["cap", "check", oasis]) == 1
    assert "valid_for_s=SECONDS" in capsys.readouterr().err
    exercise = str(DATA / "status-exercise.xml")
    assert main(["cap", "check", exercise, "--valid-for", "600"]) == 1  # expires given, old
    assert "info/expires: expires" in capsys.readouterr().err


def test_cap_check_lists_what_was_joined(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from centre.cap import format_time
    from centre.store import now_ms
    from onekey.cli import main

    xml = (DATA / "nws-thunderstorm-two-info.xml").read_text(encoding="utf-8")
    # The same alert sent now, so that it is taken today.
    now = now_ms()
    current = xml
    for old, shift in (("2024-06-14T15:42:00-05:00", 0), ("2024-06-14T16:30:00-05:00", 3_600_000),
                       ("2024-06-14T16:45:00-05:00", 4_500_000)):
        current = current.replace(old, format_time(now + shift))
    path = tmp_path / "current.xml"
    path.write_text(current, encoding="utf-8")
    assert main(["cap", "check", str(path), "--text", "雷暴警报。"]) == 0
    out = capsys.readouterr().out
    assert "joined: <info> blocks 1, 2" in out
    assert "part: info[1]/description 620 characters" in out
    assert "part: info[2]/description 53 characters" in out


def test_a_cancel_with_info_but_no_expires_lasts_as_long_as_what_it_cancels() -> None:
    alert = read("usgs-58-char-identifier.xml")
    made = to_broadcast(alert, by="li", centre_id="centre", now=alert["sent"])
    xml = (DATA / "usgs-58-char-identifier.xml").read_text(encoding="utf-8")
    cancel_xml = (
        xml.replace("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>\n  <references>"
                    f"{alert['sender']},{alert['id']},2024-08-10T08:29:51-00:00</references>")
        .replace(alert["id"], "us7000n7n8-cancel", 1)
        .replace("<expires>2024-08-10T08:59:51-00:00</expires>", "")
    )
    cancel = from_cap_xml(cancel_xml)
    assert cancel["expires"] is None and cancel["info"] is True
    bc = to_broadcast(cancel, by="li", centre_id="centre", now=alert["sent"] + 60_000,
                      known={(alert["sender"], alert["id"]): made})
    assert bc.msg_type == "Cancel" and bc.expires == made.expires
