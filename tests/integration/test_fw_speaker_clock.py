"""Fault 12 end to end, the speaker's side: the gateway's downlink counter is persisted and may
run far ahead of real time (its clock once ran ahead, was corrected, and the counter never goes
back). A real firmware speaker behind the real gateway still has the right clock, because it
takes its time from each copy's `ts` (§8.2.1), not from the counter."""

from __future__ import annotations

import sqlite3
import time

import pytest

from gateway.store import DOWNLINK_COUNTER
from harness.stack import LocalStack

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def test_a_gateway_counter_a_day_ahead_of_real_time_still_gives_its_speakers_the_right_clock(
    stack: LocalStack,
) -> None:
    assert stack.gateway_proc is not None
    stack.gateway_proc.stop()
    ahead = int(time.time() * 1000) + DAY_MS
    db = sqlite3.connect(stack.gateway_dir / "gateway.db")
    try:
        with db:
            db.execute(
                "INSERT INTO meta(name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (DOWNLINK_COUNTER, str(ahead)),
            )
    finally:
        db.close()
    stack.start_gateway()
    speaker = stack.add_speaker("spk-0001", "h-001", sim_ms_per_char=5)
    speaker.start()
    try:
        speaker.wait_for(lambda st: st["connected"], 10)
        created = stack.api("POST", "/api/broadcasts", {
            "by": "Li", "urgency": "Expected", "severity": "Minor", "certainty": "Observed",
            "valid_for_s": 3600, "area": [{"village": stack.village}], "text": "一小时内有效的通知",
        })  # fmt: skip
        bc_id = str(created["id"])
        # Valid for an hour: a clock taken from the counter (a day ahead) would drop it as expired.
        st = speaker.wait_state(bc_id, "played", 30)
        assert st["bc_counter"] >= ahead, st
        assert abs(st["clock"] - time.time() * 1000) < 60_000, st
        (entry,) = speaker.played()
        assert entry["result"] == "played" and abs(entry["at"] - time.time() * 1000) < 60_000
    finally:
        speaker.stop()
