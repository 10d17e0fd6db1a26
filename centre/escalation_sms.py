"""What the escalation chain says by SMS and how it reads the answers; no I/O.

- `normalise_phone`: one form for a number however a card, a modem or a network writes it
  (`+86 138-0013-8000`, `008613800138000`, `8613800138000` and `13800138000` are one number).
- `compose`: the text a contact receives (Chinese: the people it goes to are villagers, family
  members and cadres; staff read it on the console, where the English is).
- `is_confirmation`: whether a reply confirms (the set is `CONFIRM_WORDS`, documented in
  docs/centre.md "Escalation").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

# China Standard Time: Asia/Shanghai has been UTC+8 without daylight saving since 1991, so a
# fixed offset is exact and needs no tz database on the centre's machine.
CHINA_TZ = timezone(timedelta(hours=8), "CST")

# A reply that is one of these (after trimming spaces and trailing punctuation, ASCII letters
# case-folded) confirms; anything else is recorded and shown but confirms nothing.
CONFIRM_WORDS = frozenset({"1", "收到", "好", "好的", "确认", "ok"})

_TRAILING = "。.!！,，~～ "
_SEPARATORS = re.compile(r"[\s\-()（）]")


def normalise_phone(number: str) -> str:
    """Digits only, without the +86 / 0086 / 86 country prefix of a Chinese mobile number.

    Numbers that are not Chinese keep their international prefix as digits (`+44 20...` ->
    `4420...`), so two different numbers never become one."""
    s = _SEPARATORS.sub("", unicodedata.normalize("NFKC", number))
    if s.startswith("+"):
        s = s[1:]
        if s.startswith("86"):
            s = s[2:]
        else:
            return "".join(ch for ch in s if ch.isdigit())
    elif s.startswith("0086"):
        s = s[4:]
    elif s.startswith("86") and len(s) == 13 and s[2] == "1":
        s = s[2:]  # 86 + an 11-digit mobile number
    return "".join(ch for ch in s if ch.isdigit())


def reply_word(text: str) -> str:
    """The reply as it is compared with CONFIRM_WORDS."""
    s = unicodedata.normalize("NFKC", text).strip()
    return s.rstrip(_TRAILING).strip().casefold()


def is_confirmation(text: str) -> bool:
    return reply_word(text) in CONFIRM_WORDS


@dataclass(frozen=True)
class AlarmFacts:
    """What the SMS says about the alarm."""

    person: str  # who lives in the household (the card's name), or the household id
    address: str
    village: str
    group: str
    received_at: int  # Unix ms, the centre's receive time


def local_time(at_ms: int) -> str:
    """`11月27日 14:05` in China Standard Time."""
    t = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(CHINA_TZ)
    return f"{t.month}月{t.day}日 {t.hour:02d}:{t.minute:02d}"


def compose(facts: AlarmFacts, contact_name: str) -> str:
    """The SMS to one contact: whom it concerns, where, when, and how to confirm."""
    where = "".join(p for p in (facts.village, facts.group) if p)
    place = "，".join(p for p in (where, facts.address) if p)
    greeting = f"{contact_name}您好：" if contact_name else ""
    return (
        f"【一键报警】{greeting}{facts.person}"
        + (f"（{place}）" if place else "")
        + f"于{local_time(facts.received_at)}按下求助按钮，中心尚无人接警。"
        "请尽快前往查看或联系，并回复1或“收到”确认。"
    )
