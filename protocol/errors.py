"""The gateway<->centre link's one error (docs/protocol.md §6, §8): `Rejected(reason, detail)`.

Every codec in `protocol/` follows h11's rule: an input either parses or raises `Rejected`,
never anything else. `reason` is a counter's name (one of the constants below); `detail` says
what was wrong, for the log line.
"""

from __future__ import annotations

# The signed frame (§6): checked before the body is parsed.
OVERSIZED = "oversized"
MALFORMED = "malformed"
BAD_SIGNATURE = "bad_signature"
BAD_JSON = "bad_json"
# Topics and enrolment (§6, §6.1).
BAD_TOPIC = "bad_topic"
UNKNOWN_GATEWAY = "unknown_gateway"
# Bodies (§6.2-§6.6, §8.1, §8.3).
BAD_FIELD = "bad_field"
TOPIC_MISMATCH = "topic_mismatch"
WRONG_GATEWAY = "wrong_gateway"  # §8.1.1: a broadcast copy made for another gateway
EXPIRED = "expired"  # §8.1.1
# Raised by the side that keeps state (an id accepted before), never by a codec.
REPLAY = "replay"

# What the pure codecs raise.
REASONS = (
    OVERSIZED, MALFORMED, BAD_SIGNATURE, BAD_JSON, BAD_TOPIC, UNKNOWN_GATEWAY, BAD_FIELD,
    TOPIC_MISMATCH, WRONG_GATEWAY, EXPIRED,
)


class Rejected(Exception):
    """A message refused by the protocol's rules; `reason` names the rule (a counter name)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
