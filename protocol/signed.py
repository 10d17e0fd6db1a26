"""The signed frame between gateway and centre (docs/protocol.md §6): pure, no I/O.

payload = SIG_HEX SP BODY, an Ed25519 signature over TOPIC 0x00 BODY. Used for every
gateway<->centre message: events, heartbeats, reports, confirmations (gateway's key) and acks,
broadcasts (centre's key).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import BAD_JSON, BAD_SIGNATURE, MALFORMED, OVERSIZED, Rejected

SIG_HEX_LEN = 128
MAX_SIGNED_PAYLOAD = 8192
_HEX_DIGITS = b"0123456789abcdef"


class SignatureError(Rejected):
    """A signed frame is malformed or its signature does not verify (a `Rejected`, so that a
    caller of the link's codecs needs to catch one error only)."""


def encode_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def sign_frame(key: Ed25519PrivateKey, topic: str, body: bytes) -> bytes:
    sig = key.sign(topic.encode() + b"\x00" + body)
    return sig.hex().encode() + b" " + body


def split_signed(payload: bytes, limit: int = MAX_SIGNED_PAYLOAD) -> tuple[bytes, bytes]:
    if len(payload) > limit:
        raise SignatureError(OVERSIZED, f"{len(payload)} bytes > {limit}")
    if len(payload) < SIG_HEX_LEN + 3 or payload[SIG_HEX_LEN] != 0x20:
        raise SignatureError(MALFORMED, "expected 128 hex digits, a space and a body")
    sig_hex = payload[:SIG_HEX_LEN]
    if sig_hex.strip(_HEX_DIGITS):
        raise SignatureError(MALFORMED, "signature is not 128 lowercase hex digits")
    return bytes.fromhex(sig_hex.decode()), payload[SIG_HEX_LEN + 1 :]


def verify_frame(
    pub: Ed25519PublicKey, topic: str, payload: bytes, limit: int = MAX_SIGNED_PAYLOAD
) -> dict[str, Any]:
    """Check the size and the signature, then parse the body; returns the body as a dict."""
    sig, body = split_signed(payload, limit)
    try:
        pub.verify(sig, topic.encode() + b"\x00" + body)
    except InvalidSignature:
        raise SignatureError(BAD_SIGNATURE, f"signature on {topic} does not verify") from None
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: arrays nested a few thousand deep fit in a frame.
        raise SignatureError(BAD_JSON, "signed body is not JSON") from None
    if not isinstance(obj, dict):
        raise SignatureError(BAD_JSON, "signed body is not a JSON object")
    return obj


def json_len(obj: object) -> int:
    """Bytes that `obj` takes inside a body made by `encode_json`."""
    return len(json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode())


def fit(item_sizes: Sequence[int], fixed: int, max_items: int, max_payload: int) -> list[range]:
    """Split items, in order, into runs that each make one signed payload of at most
    `max_payload` bytes and `max_items` items, as few runs as that allows. `fixed` is the
    payload with an empty list (signature included); an item costs its `json_len` and, after
    the first, a comma. An item too large on its own still gets a run of its own (the
    receiver's limit then says what is wrong)."""
    runs: list[range] = []
    start, size = 0, fixed
    for i, n in enumerate(item_sizes):
        if i > start and (i - start >= max_items or size + n + 1 > max_payload):
            runs.append(range(start, i))
            start, size = i, fixed
        size += n if i == start else n + 1
    if len(item_sizes) > start:
        runs.append(range(start, len(item_sizes)))
    return runs
