"""The broadcast and admin panes' words (centre/static/i18n-forms.js): every key they use has a
zh-CN and an English text, and every state, severity, urgency, certainty, kind and contact kind
the server can send is translated."""

from __future__ import annotations

import json
import re
import typing
from importlib import resources

import pytest

from centre import bcapi, bcstore, households
from protocol import broadcast as wire

STATIC = resources.files("centre").joinpath("static")
# Keys the console's own dictionary (i18n.js) holds.
CONSOLE_KEYS = ("role.",)


def dictionaries() -> dict[str, dict[str, str]]:
    text = STATIC.joinpath("i18n-forms.js").read_text(encoding="utf-8")
    out = {}
    for lang, var in (("zh-CN", "zh"), ("en", "en")):
        m = re.search(r"var " + var + r" = (\{.*?\n  \});", text, re.S)
        assert m, f"no dictionary {var} in i18n-forms.js"
        body = re.sub(r"^\s*//.*$", "", m.group(1), flags=re.M)  # the comments between groups
        out[lang] = json.loads(body)
    return out


def used_keys() -> set[str]:
    keys: set[str] = set()
    for name in ("broadcast.js", "admin.js"):
        text = STATIC.joinpath(name).read_text(encoding="utf-8")
        keys |= set(re.findall(r"\bt\(\"([A-Za-z0-9_.]+)\"\)", text))
    return {k for k in keys if not k.startswith(CONSOLE_KEYS)}


def test_both_languages_have_the_same_keys_and_no_empty_text() -> None:
    d = dictionaries()
    assert set(d["zh-CN"]) == set(d["en"])
    for lang, words in d.items():
        assert all(v.strip() for v in words.values()), lang


def test_every_key_the_panes_use_is_translated() -> None:
    d = dictionaries()
    missing = sorted(used_keys() - set(d["zh-CN"]))
    assert not missing, missing


@pytest.mark.parametrize(
    ("prefix", "values"),
    [
        ("sev.", wire.SEVERITIES),
        ("urg.", wire.URGENCIES),
        ("cert.", wire.CERTAINTIES),
        ("status.", wire.STATUSES),
        ("clip.", (*wire.CLIPS, "none")),
        ("bc.msg.", wire.MSG_TYPES),
        ("bc.state.", bcstore.STATES),
        ("kind.", households.KINDS),
        ("copy.", bcstore.COPY_STATES),
        ("sp.", typing.get_args(bcapi.SpeakerStateName)),
    ],
)
def test_every_value_the_server_sends_is_translated(prefix: str, values: tuple[str, ...]) -> None:
    for lang, words in dictionaries().items():
        missing = [v for v in values if prefix + v not in words]
        assert not missing, (lang, prefix, missing)


def test_zh_cn_texts_are_chinese() -> None:
    zh = dictionaries()["zh-CN"]
    # Every zh-CN text but codes and examples holds a CJK character.
    latin_only = [k for k, v in zh.items() if not re.search(r"[\u4e00-\u9fff]", v)]
    assert not latin_only, latin_only
