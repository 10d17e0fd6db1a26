"""Speaker reports from a gateway to the centre (docs/protocol.md §8.3), pure.

`{gw, bc, reports: [{device, s, at}]}` on `ok/v1/gw/{gw}/up/bcr`, signed with the gateway's
key. `s` is a speaker's report state or one of the gateway's own (`queued`, `offline`). A
message holds 1-`MAX_REPORTS` reports and its signed payload is at most `MAX_PAYLOAD` bytes:
`batches` splits a longer list. What a report means at the centre (which state replaces which)
is the centre's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from device_fw import okproto
from protocol import topics
from protocol.errors import BAD_FIELD, Rejected
from protocol.signed import SIG_HEX_LEN, fit, json_len
from protocol.uplink import check_gw

MAX_REPORTS = 200
MAX_PAYLOAD = topics.MAX_PAYLOAD[topics.REPORTS]  # 16,000 bytes: see there
GATEWAY_STATES = ("queued", "offline")
STATES = GATEWAY_STATES + okproto.BC_STATES


@dataclass(frozen=True)
class Report:
    device: str
    state: str  # one of STATES, as on the wire
    at: int  # Unix ms


@dataclass(frozen=True)
class ReportBatch:
    gw: str
    bc: str
    reports: tuple[Report, ...]


def encode(batch: ReportBatch) -> dict[str, Any]:
    return {
        "gw": batch.gw,
        "bc": batch.bc,
        "reports": [{"device": r.device, "s": r.state, "at": r.at} for r in batch.reports],
    }


def batches(gw: str, bc: str, reports: Sequence[Report]) -> list[ReportBatch]:
    """`reports` in order, as messages within both limits (200 reports with 32-character
    device ids make a payload larger than `MAX_PAYLOAD`)."""
    fixed = json_len(encode(ReportBatch(gw, bc, ()))) + SIG_HEX_LEN + 1
    sizes = [json_len({"device": r.device, "s": r.state, "at": r.at}) for r in reports]
    return [
        ReportBatch(gw, bc, tuple(reports[run.start : run.stop]))
        for run in fit(sizes, fixed, MAX_REPORTS, MAX_PAYLOAD)
    ]


def parse(body: Mapping[str, Any], gw: str) -> ReportBatch:
    """Check an authenticated §8.3 body from gateway `gw`."""
    check_gw(body, gw)
    bc = body.get("bc")
    if not okproto.valid_bc_id(bc):
        raise Rejected(BAD_FIELD, "bc must be a broadcast id (1-40 of A-Za-z0-9._:-)")
    items = body.get("reports")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_REPORTS:
        raise Rejected(BAD_FIELD, f"reports must be a list of 1-{MAX_REPORTS} reports")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise Rejected(BAD_FIELD, f"reports[{i}] is not an object")
        device, s, at = item.get("device"), item.get("s"), item.get("at")
        if not okproto.valid_id(device):
            raise Rejected(BAD_FIELD, f"reports[{i}].device must be a device id (§1.1)")
        if not isinstance(s, str) or s not in STATES:
            raise Rejected(BAD_FIELD, f"reports[{i}].s must be one of {', '.join(STATES)}")
        if type(at) is not int or not 0 <= at < okproto.MAX_INT:
            raise Rejected(BAD_FIELD, f"reports[{i}].at must be Unix ms")
        out.append(Report(str(device), s, at))
    return ReportBatch(gw, str(bc), tuple(out))
