"""The signed frame between gateway and centre (docs/protocol.md §6): pure, no I/O.

payload = SIG_HEX SP BODY, an Ed25519 signature over TOPIC 0x00 BODY. Used for every
gateway<->centre message: events, heartbeats, reports, confirmations (gateway's key) and acks,
broadcasts (centre's key).
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIG_HEX_LEN = 128
MAX_SIGNED_PAYLOAD = 8192


class SignatureError(Exception):
    """A signed frame is malformed or its signature does not verify."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def encode_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def sign_frame(key: Ed25519PrivateKey, topic: str, body: bytes) -> bytes:
    sig = key.sign(topic.encode() + b"\x00" + body)
    return sig.hex().encode() + b" " + body


def split_signed(payload: bytes, limit: int = MAX_SIGNED_PAYLOAD) -> tuple[bytes, bytes]:
    if len(payload) > limit:
        raise SignatureError("oversized", f"{len(payload)} bytes > {limit}")
    if len(payload) < SIG_HEX_LEN + 3 or payload[SIG_HEX_LEN] != 0x20:
        raise SignatureError("malformed", "expected 128 hex digits, a space and a body")
    try:
        sig = bytes.fromhex(payload[:SIG_HEX_LEN].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise SignatureError("malformed", "signature is not hex") from None
    return sig, payload[SIG_HEX_LEN + 1 :]


def verify_frame(
    pub: Ed25519PublicKey, topic: str, payload: bytes, limit: int = MAX_SIGNED_PAYLOAD
) -> dict[str, Any]:
    """Check the size and the signature, then parse the body; returns the body as a dict."""
    sig, body = split_signed(payload, limit)
    try:
        pub.verify(sig, topic.encode() + b"\x00" + body)
    except InvalidSignature:
        raise SignatureError("bad_signature", f"signature on {topic} does not verify") from None
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise SignatureError("bad_json", "signed body is not JSON") from None
    if not isinstance(obj, dict):
        raise SignatureError("bad_json", "signed body is not a JSON object")
    return obj
