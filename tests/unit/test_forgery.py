"""The attack campaign's forgeries are what they claim to be (harness/forgery.py): a malformed
device frame is refused by the shared codec for the reason the campaign expects, a mutation of
a real frame never says the same thing, and a tampered or re-MAC'd frame never verifies. If
they were not, the campaign would count a correct refusal as a surprise, or a valid message as
an attack."""

from __future__ import annotations

import random

from device_fw import okproto
from harness import forgery
from protocol.signed import SIG_HEX_LEN

KEY = bytes(range(32))
DEVICE = "btn-victim"


def refusal(topic: str, payload: bytes) -> str:
    try:
        okproto.open_up(topic, payload, lambda d: KEY if d == DEVICE else None)
    except okproto.ProtocolError as exc:
        return exc.reason
    return "accepted"


def test_a_malformed_device_frame_is_refused_for_the_reason_expected() -> None:
    rng = random.Random(1)
    for _ in range(1000):
        topic, payload, reason = forgery.malformed_up(rng, KEY, DEVICE, 10_000_000)
        assert refusal(topic, payload) == reason, (topic, payload)


def test_forged_and_mutated_device_frames_never_verify() -> None:
    rng = random.Random(2)
    topic, good = okproto.encode_up(KEY, DEVICE, "alarm", 100_001, {"up": 5})
    for i in range(500):
        assert refusal(topic, forgery.replace_head(good, 64, rng)) == okproto.BAD_MAC
        assert refusal(topic, forgery.tamper_up(good, rng, 10_000_000 + i)) == okproto.BAD_MAC
        mutated = forgery.mutate(good, rng, 64, 600)
        assert mutated != good
        assert refusal(topic, mutated) != "accepted", mutated


def test_a_mutation_of_a_signed_frame_never_differs_only_in_the_case_of_its_hex() -> None:
    frame = b"ab" * (SIG_HEX_LEN // 2) + b' {"gw":"gw-1"}'
    rng = random.Random(3)
    for _ in range(2000):
        out = forgery.mutate(frame, rng, SIG_HEX_LEN, 8192)
        assert not forgery.same_frame(frame, out, SIG_HEX_LEN)
