"""The gateway's broadcast path on real parts: centre broker (TLS), gateway process, village
broker, protocol-level speakers. The centre's sender is played by tests/bc_support.py with the
centre's real key, so each gateway rule is seen on its own; the firmware's queue rules are in
test_fw_speaker.py and the whole chain from the centre's API in test_broadcast_end_to_end.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from harness.protospeaker import ProtoSpeaker
from harness.stack import HOST, LocalStack
from tests.bc_support import CentreStandIn, broadcast, now_ms
from tests.support import wait_for
from transport.keys import generate_private_key

VILLAGE = "v-demo"


async def speaker(
    stack: LocalStack, dev_id: str, *, groups: tuple[str, ...] = (), village: str = VILLAGE,
    connect: bool = True, play_ms: int = 0,
) -> ProtoSpeaker:
    key, password = stack.register_device(
        dev_id, f"h-{dev_id}", role="speaker", groups=groups, village=village
    )
    assert stack.village_broker is not None
    spk = ProtoSpeaker(dev_id, key, HOST, stack.village_broker.port, password, play_ms=play_ms)
    if connect:
        await spk.connect()
    return spk


@pytest.fixture
async def centre(stack: LocalStack) -> AsyncIterator[CentreStandIn]:
    async with CentreStandIn(stack) as c:
        yield c


def rejects(stack: LocalStack, reason: str) -> int:
    return int(stack.gateway_metrics().get("rejected", {}).get(reason, 0))


async def test_a_broadcast_reaches_the_targeted_speakers_and_no_other(
    stack: LocalStack, centre: CentreStandIn
) -> None:
    north = [await speaker(stack, f"spk-n{i}", groups=("north",)) for i in range(2)]
    south = await speaker(stack, "spk-s1", groups=("south", "school"))
    other = await speaker(stack, "spk-x1", village="v-other")
    everyone = [*north, south, other]
    try:
        whole = broadcast(stack.gateway_id, VILLAGE)
        await centre.send(whole)
        await centre.wait_states(whole["id"], {s.id: "played" for s in [*north, south]})

        group = broadcast(
            stack.gateway_id, VILLAGE, area=[{"village": VILLAGE, "groups": ["north"], "speakers": []}]
        )
        await centre.send(group)
        await centre.wait_states(group["id"], {s.id: "played" for s in north})

        picked = broadcast(
            stack.gateway_id,
            VILLAGE,
            area=[
                {"village": VILLAGE, "groups": [], "speakers": ["spk-s1"]},
                {"village": "v-other", "groups": [], "speakers": []},
            ],
        )
        await centre.send(picked)
        await centre.wait_states(picked["id"], {"spk-s1": "played", "spk-x1": "played"})
        await asyncio.sleep(0.5)  # room for anything wrongly sent to arrive

        assert set(other.log.played) == {picked["id"]}
        assert set(south.log.played) == {whole["id"], picked["id"]}
        for s in north:
            assert set(s.log.played) == {whole["id"], group["id"]}
        # The centre heard about targeted speakers only, each ending at played.
        assert {d for (bc, d) in centre.reports if bc == group["id"]} == {s.id for s in north}
        for s in everyone:
            assert s.log.rejected == 0
        assert centre.bad_reports == 0
    finally:
        for s in everyone:
            await s.close()


async def test_an_offline_speaker_gets_a_valid_broadcast_when_it_returns_and_never_an_expired_one(
    stack: LocalStack, centre: CentreStandIn
) -> None:
    online = await speaker(stack, "spk-on")
    away = await speaker(stack, "spk-away")
    late = await speaker(stack, "spk-late", connect=False)  # never seen yet
    try:
        await away.power_cut()  # the broker publishes its will
        await wait_for(lambda: stack.gateway_metrics().get("counts", {}).get("device_offline"), 10)
        long_lived = broadcast(stack.gateway_id, VILLAGE, valid_s=600)
        short_lived = broadcast(stack.gateway_id, VILLAGE, valid_s=2.0)
        await centre.send(long_lived)
        await centre.send(short_lived)
        await centre.wait_states(
            long_lived["id"], {"spk-on": "played", "spk-away": "offline", "spk-late": "offline"}
        )
        await centre.wait_states(short_lived["id"], {"spk-on": "played"})

        # spk-late comes first: both broadcasts are still valid.
        await late.connect()
        await centre.wait_states(long_lived["id"], {"spk-late": "played"})
        await centre.wait_states(short_lived["id"], {"spk-late": "played"})

        # spk-away comes back after the short one has expired: it gets only the long one.
        await asyncio.sleep(max(0.0, (short_lived["expires"] - now_ms()) / 1000) + 0.5)
        await centre.wait_states(short_lived["id"], {"spk-away": "expired"})
        back = ProtoSpeaker(away.id, away.key, HOST, away.client.port, away.client._password or "")
        await back.connect()
        await centre.wait_states(long_lived["id"], {"spk-away": "played"})
        await asyncio.sleep(0.5)
        assert set(back.log.played) == {long_lived["id"]}
        assert back.log.rejected == 0
        await back.close()
    finally:
        for s in (online, away, late):
            await s.close()


async def test_refused_broadcasts_reach_no_speaker_and_are_counted(
    stack: LocalStack, centre: CentreStandIn
) -> None:
    spk = await speaker(stack, "spk-1")
    try:
        good = broadcast(stack.gateway_id, VILLAGE)
        payload = await centre.send(good)
        await centre.wait_states(good["id"], {"spk-1": "played"})

        forger = generate_private_key(stack.root / "forger.key")
        tampered_text = centre.sign(broadcast(stack.gateway_id, VILLAGE)).replace(
            "开会".encode(), "撤离".encode()
        )
        attacks: list[tuple[str, bytes, str]] = [
            (centre.topic(), centre.sign(broadcast(stack.gateway_id, VILLAGE), key=forger),
             "bc_bad_signature"),
            (centre.topic(), tampered_text, "bc_bad_signature"),
            (centre.topic(), payload, "bc_replay"),
            (centre.topic(), centre.sign(broadcast(stack.gateway_id, VILLAGE, valid_s=-1)),
             "bc_expired"),
            (centre.topic(), centre.sign(broadcast("gw-else", VILLAGE)), "bc_wrong_gateway"),
            (centre.topic(), centre.sign(broadcast(stack.gateway_id, VILLAGE, repeat=9)),
             "bc_bad_field"),
            (centre.topic(), b"not a frame", "bc_bad_signature"),
        ]
        for topic, data, _reason in attacks:
            await centre.publish_raw(topic, data)
        want: dict[str, int] = {}
        for _t, _d, reason in attacks:
            want[reason] = want.get(reason, 0) + 1
        await wait_for(lambda: all(rejects(stack, r) >= n for r, n in want.items()), 10)
        await asyncio.sleep(0.5)
        assert set(spk.log.played) == {good["id"]}
        assert spk.log.rejected == 0  # nothing even reached the speaker
        assert stack.gateway_proc is not None and stack.gateway_proc.running
    finally:
        await spk.close()


async def test_a_cancel_stops_copies_still_waiting_for_their_speaker(
    stack: LocalStack, centre: CentreStandIn
) -> None:
    spk = await speaker(stack, "spk-c1", connect=False)
    try:
        alert = broadcast(stack.gateway_id, VILLAGE)
        await centre.send(alert)
        await centre.wait_states(alert["id"], {"spk-c1": "offline"})
        cancel = broadcast(
            stack.gateway_id, VILLAGE, msgType="Cancel", references=[alert["id"]], text=""
        )
        await centre.send(cancel)
        await centre.wait_states(alert["id"], {"spk-c1": "cancelled"})
        await spk.connect()
        # The speaker gets the Cancel (it may hold the alert from an earlier visit) and never
        # the alert itself.
        await centre.wait_states(cancel["id"], {"spk-c1": "received"})
        await asyncio.sleep(1.0)
        assert alert["id"] not in spk.log.played
    finally:
        await spk.close()
