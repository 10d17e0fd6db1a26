"""The escalation chain's pure rules: phone numbers, reply words, SMS text, policy layers and
the order of contacts."""

from __future__ import annotations

import pytest

from centre import escalation_policy as ep
from centre.escalation_sms import AlarmFacts, compose, is_confirmation, local_time, normalise_phone


@pytest.mark.parametrize(
    "raw",
    ["13800138000", "+8613800138000", "+86 138-0013-8000", "008613800138000", "8613800138000",
     "１３８００１３８０００", "(+86) 138 0013 8000"],
)
def test_one_chinese_mobile_number_in_every_spelling_normalises_alike(raw: str) -> None:
    assert normalise_phone(raw) == "13800138000"


def test_foreign_and_landline_numbers_keep_their_prefix() -> None:
    assert normalise_phone("+44 20 7946 0000") == "442079460000"
    assert normalise_phone("0571-8888 1234") == "057188881234"


@pytest.mark.parametrize("text", ["1", "收到", "好", "好的", "确认", " 收到！", "收到。", "OK", "ok!", "１"])
def test_confirmation_words(text: str) -> None:
    assert is_confirmation(text)


@pytest.mark.parametrize("text", ["", "2", "11", "不", "收不到", "谁啊", "好吗？", "1 2", "no"])
def test_other_replies_do_not_confirm(text: str) -> None:
    assert not is_confirmation(text)


def test_sms_names_the_person_place_time_in_china_time_and_how_to_confirm() -> None:
    facts = AlarmFacts("张秀英", "东头3号", "李家村", "二组", 1_700_000_000_000)
    text = compose(facts, "李明")
    assert text == (
        "【一键报警】李明您好：张秀英（李家村二组，东头3号）于11月15日 06:13按下求助按钮，"
        "中心尚无人接警。请尽快前往查看或联系，并回复1或“收到”确认。"
    )
    assert local_time(1_700_000_000_000) == "11月15日 06:13"  # 22:13 UTC the day before


def test_policy_layers_override_field_by_field() -> None:
    defaults = ep.Policy()
    overrides = {
        "township": {"t2_s": 45.0},
        "village:v-1": {"t1_s": 30.0, "rounds": 2},
        "household:h-1": {"order": ["family", "doctor"]},
    }
    p = ep.effective(defaults, overrides, "v-1", "h-1")
    assert (p.t1_s, p.t2_s, p.rounds, p.order, p.enabled) == (
        30.0, 45.0, 2, ("family", "doctor"), True
    )
    assert ep.effective(defaults, overrides, "v-2", "h-2").t1_s == 60.0


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"t1_s": 0}, "t1_s must be between"),
        ({"t2_s": "60"}, "t2_s must be a number"),
        ({"rounds": 0}, "rounds must be"),
        ({"rounds": 11}, "rounds must be"),
        ({"enabled": "yes"}, "enabled must be"),
        ({"order": []}, "order must be a non-empty list"),
        ({"order": ["leader", "cousin"]}, "unknown contact kind 'cousin'"),
        ({"order": ["leader+grid", "grid"]}, "'grid' appears twice"),
        ({"colour": "red"}, "unknown policy field 'colour'"),
    ],
)
def test_bad_policy_values_are_refused_naming_the_field(override: dict[str, object], words: str) -> None:
    with pytest.raises(ep.PolicyError, match=words):
        ep.check_override(override)


def test_plan_joins_plus_groups_and_splits_single_kinds_in_card_order() -> None:
    contacts = [
        ep.Contact("family", "A", "13800000003"),
        ep.Contact("grid", "G", "13800000002"),
        ep.Contact("leader", "L", "+86 13800000002"),  # the same person as the grid worker
        ep.Contact("family", "B", "13800000004"),
        ep.Contact("family", "nophone", ""),
        ep.Contact("doctor", "D", "13800000005"),
    ]
    steps = ep.plan(ep.DEFAULT_ORDER, contacts)
    assert [[c.name for c in s] for s in steps] == [["G"], ["A"], ["B"], ["D"]]
    assert ep.plan(("doctor", "leader"), contacts[:1]) == []
