"""The speaker's queue rules (device_fw/playqueue.py, docs/protocol.md §8.2.2) as pure logic
under CPython: priority then arrival, preemption and replay from the start, expiry, Cancel,
Update, copies of known ids, and the bounds on the queue and on the reports it owes."""

from __future__ import annotations

from typing import Any

from device_fw import playqueue as pqm
from device_fw.playqueue import PlayQueue

NOW = 1_700_000_000_000
_counter = [0]


def bc(bc_id: str, pri: int = 2, exp: int = NOW + 60_000, mt: str = "Alert", **extra: Any) -> dict[str, Any]:
    """A checked §8.2 body; `c` grows with every call, as the gateway's counter does."""
    _counter[0] += 1
    body: dict[str, Any] = {
        "t": "bc", "d": "spk-0001", "c": NOW + _counter[0], "id": bc_id, "mt": mt,
        "st": "Actual", "pri": pri, "exp": exp,
    }  # fmt: skip
    body.update(extra)
    return body


def take(pq: PlayQueue) -> list[tuple[str, str]]:
    """The reports owed so far as (id, state), as the link would send them."""
    out = [(r[0], r[1]) for r in pq.out]
    pq.out.clear()
    return out


def play_order(pq: PlayQueue, now: int = NOW) -> list[str]:
    """Plays the whole queue to the end; the ids in the order they played."""
    order = []
    while (b := pq.next(now)) is not None:
        order.append(b.id)
        pq.finish(b, pqm.PLAYED)
    return order


def test_queue_orders_by_priority_then_arrival() -> None:
    pq = PlayQueue()
    for bc_id, pri in (("r1", 2), ("n1", 1), ("r2", 2), ("u1", 0), ("n2", 1)):
        assert pq.offer(bc(bc_id, pri), NOW) is not None
    assert [b.id for b in pq.queue] == ["u1", "n1", "n2", "r1", "r2"]
    assert take(pq) == [(i, "received") for i in ("r1", "n1", "r2", "u1", "n2")]
    assert play_order(pq) == ["u1", "n1", "n2", "r1", "r2"]


def test_reports_follow_received_playing_played() -> None:
    pq = PlayQueue()
    pq.offer(bc("a"), NOW)
    b = pq.next(NOW)
    assert b is not None and b.id == "a" and pq.current is b and b.state == "playing"
    pq.finish(b, pqm.PLAYED)
    assert pq.current is None
    assert take(pq) == [("a", "received"), ("a", "playing"), ("a", "played")]
    assert pq.done == [("a", "played")] and pq.changed
    assert pq.finished == [b]


def test_priority_0_preempts_a_routine_one_which_plays_again_after_it() -> None:
    pq = PlayQueue()
    pq.offer(bc("routine", 2), NOW)
    pq.offer(bc("later", 2), NOW)
    routine = pq.next(NOW)
    assert routine is not None
    take(pq)
    urgent = pq.offer(bc("urgent", 0), NOW)
    assert urgent is not None
    # The player sees that `routine` is no longer current and stops the sound.
    assert pq.current is None and routine.state == "preempted"
    assert take(pq) == [("urgent", "received"), ("routine", "preempted")]
    # Back in the queue with its own arrival: after the urgent one, before the later one.
    assert [b.id for b in pq.queue] == ["urgent", "routine", "later"]
    pq.finish(routine, pqm.PLAYED)  # the interrupted play ending changes nothing
    assert take(pq) == []
    assert play_order(pq) == ["urgent", "routine", "later"]
    assert ("routine", "playing") in take(pq)


def test_priority_1_waits_and_priority_0_does_not_stop_another_priority_0() -> None:
    pq = PlayQueue()
    pq.offer(bc("routine", 2), NOW)
    playing = pq.next(NOW)
    pq.offer(bc("next", 1), NOW)
    assert pq.current is playing  # priority 1 plays next, it does not interrupt
    assert playing is not None
    pq.finish(playing, pqm.PLAYED)
    pq.offer(bc("flood", 0), NOW)
    flood = pq.next(NOW)
    assert flood is not None and flood.id == "flood"
    pq.offer(bc("fire", 0), NOW)
    assert pq.current is flood and [b.id for b in pq.queue] == ["fire", "next"]


def test_a_preempted_broadcast_that_has_expired_is_not_played_again() -> None:
    pq = PlayQueue()
    pq.offer(bc("short-lived", 2, exp=NOW + 1_000), NOW)
    pq.next(NOW)
    take(pq)
    pq.offer(bc("urgent", 0), NOW + 5_000)
    assert take(pq) == [("urgent", "received"), ("short-lived", "preempted"), ("short-lived", "expired")]
    assert [b.id for b in pq.queue] == ["urgent"]


def test_expired_broadcasts_are_dropped_at_receipt_and_while_they_wait() -> None:
    pq = PlayQueue()
    assert pq.offer(bc("stale", exp=NOW - 1), NOW) is None
    assert take(pq) == [("stale", "expired")] and pq.state("stale") == "expired"
    pq.offer(bc("long", exp=NOW + 600_000), NOW)
    pq.offer(bc("brief", exp=NOW + 1_000), NOW)
    playing = pq.next(NOW)
    assert playing is not None and playing.id == "long"
    take(pq)
    pq.expire(NOW + 2_000)
    assert take(pq) == [("brief", "expired")] and pq.queue == []
    # next() drops what expired while nobody looked.
    pq.finish(playing, pqm.PLAYED)
    pq.offer(bc("soon-gone", exp=NOW + 3_000), NOW + 2_000)
    take(pq)
    assert pq.next(NOW + 4_000) is None
    assert take(pq) == [("soon-gone", "expired")]
    # A copy of an expired id says so again and never plays.
    assert pq.offer(bc("stale", exp=NOW + 60_000), NOW) is None
    assert take(pq) == [("stale", "expired")]


def test_cancel_removes_a_waiting_broadcast_and_stops_a_playing_one() -> None:
    pq = PlayQueue()
    pq.offer(bc("a"), NOW)
    pq.offer(bc("b"), NOW)
    a = pq.next(NOW)
    take(pq)
    assert pq.offer(bc("c1", mt="Cancel", ref="b"), NOW) is None
    assert take(pq) == [("c1", "received"), ("b", "cancelled")] and pq.queue == []
    pq.offer(bc("c2", mt="Cancel", ref="a"), NOW)
    assert pq.current is None and a is not None and a.state == "cancelled"
    assert take(pq) == [("c2", "received"), ("a", "cancelled")]
    pq.finish(a, pqm.PLAYED)  # the stopped play ending changes nothing
    assert take(pq) == [] and pq.state("a") == "cancelled"
    # A copy of the Cancel is answered with its state and cancels nothing more.
    pq.offer(bc("c1", mt="Cancel", ref="b"), NOW)
    assert take(pq) == [("c1", "received")]


def test_a_cancel_that_arrives_first_keeps_the_late_broadcast_from_playing() -> None:
    pq = PlayQueue()
    pq.offer(bc("c1", mt="Cancel", ref="late"), NOW)
    assert take(pq) == [("c1", "received"), ("late", "cancelled")]
    assert pq.offer(bc("late"), NOW) is None
    assert take(pq) == [("late", "cancelled")] and pq.queue == []


def test_update_cancels_the_referenced_broadcast_then_queues_like_an_alert() -> None:
    pq = PlayQueue()
    pq.offer(bc("v1"), NOW)
    v1 = pq.next(NOW)
    take(pq)
    v2 = pq.offer(bc("v2", pri=1, mt="Update", ref="v1", text="new"), NOW)
    assert v2 is not None and v1 is not None and v1.state == "cancelled" and pq.current is None
    assert take(pq) == [("v2", "received"), ("v1", "cancelled")]
    assert play_order(pq) == ["v2"]


def test_a_copy_of_a_known_id_is_not_queued_again_and_its_state_is_reported() -> None:
    pq = PlayQueue()
    pq.offer(bc("a"), NOW)
    assert pq.offer(bc("a"), NOW) is None
    assert take(pq) == [("a", "received"), ("a", "received")]
    assert pq.out == [] and len(pq.queue) == 1
    b = pq.next(NOW)
    pq.offer(bc("a"), NOW)
    assert pq.out[-1] == ("a", "playing", "duplicate")
    assert b is not None
    pq.finish(b, pqm.PLAYED)
    take(pq)
    assert pq.offer(bc("a"), NOW) is None
    assert take(pq) == [("a", "played")] and play_order(pq) == []


def test_a_full_queue_drops_the_least_urgent_newest_broadcast() -> None:
    pq = PlayQueue(cap=3)
    for bc_id, pri in (("r1", 2), ("r2", 2), ("n1", 1)):
        pq.offer(bc(bc_id, pri), NOW)
    take(pq)
    assert pq.offer(bc("u1", 0), NOW) is not None
    assert take(pq) == [("u1", "received"), ("r2", "failed")]
    assert pq.state("r2") == "failed" and pq.drops == 1
    assert pq.offer(bc("r3", 2), NOW) is None  # itself the least urgent and newest
    assert take(pq) == [("r3", "received"), ("r3", "failed")]
    assert [b.id for b in pq.queue] == ["u1", "n1", "r1"]


def test_reports_owed_stay_bounded_and_keep_the_newest_state_of_each_broadcast() -> None:
    pq = PlayQueue(max_out=4)
    pq.offer(bc("a"), NOW)
    pq.offer(bc("b"), NOW)
    a = pq.next(NOW)
    assert a is not None
    pq.finish(a, pqm.PLAYED)
    # received a, received b, playing a, played a: full. Two more reports arrive.
    pq.offer(bc("c"), NOW)
    pq.offer(bc("d"), NOW)
    ids = [(r[0], r[1]) for r in pq.out]
    assert len(ids) == 4 and pq.out_drops == 2
    # The superseded "a" reports went first; the final "played" stayed.
    assert ids == [("b", "received"), ("a", "played"), ("c", "received"), ("d", "received")]


def test_only_the_most_recent_final_states_are_remembered() -> None:
    pq = PlayQueue(keep=3)
    for i in range(5):
        pq.offer(bc(f"x{i}", exp=NOW - 1), NOW)
    assert [d[0] for d in pq.done] == ["x2", "x3", "x4"]
    assert pq.state("x0") is None and pq.state("x4") == "expired"


def test_a_broadcast_reloaded_after_a_reboot_is_queued_without_a_report() -> None:
    pq = PlayQueue()
    pq.insert(pqm.Bc(bc("from-flash", rep=3, clip="siren")))
    assert take(pq) == []
    b = pq.next(NOW)
    assert b is not None and (b.id, b.rep, b.clip) == ("from-flash", 3, "siren")
