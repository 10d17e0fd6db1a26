"""Speaker reports on a broadcast (docs/protocol.md §8.3), without any I/O.

A gateway sends `{gw, bc, reports: [{device, s, at}]}` on `ok/v1/gw/{gw}/up/bcr`, signed as
in §6. The centre keeps, per broadcast and speaker, the latest state; `supersedes()` decides
whether a report replaces the one kept. Reports can arrive late or twice (QoS 1, batches that
are re-sent), so a report is judged by its state's stage first and by its `at` second:

| stage | states | how it moves |
| --- | --- | --- |
| 1 at the gateway | `queued`, `offline` | either may follow the other (speakers come and go) |
| 2 at the speaker | `delivered` (the speaker's `received`) | |
| 3 on air | `playing`, `preempted` | either may follow the other (a preempted one is replayed) |
| 4 final | `played`, `failed`, `expired`, `cancelled` | nothing replaces a final state, except `played` |

- A later stage always replaces an earlier one, whatever the `at`: a `queued` that arrives
  after `played` changes nothing.
- Within stage 1 or 3 the report with the later `at` wins: `playing` at 12:00:05 after
  `preempted` at 12:00:03 is the replay; a `preempted` at 12:00:03 that arrives after it is old.
- The same state again changes nothing (its first `at` is kept).
- `played` replaces another final state: people heard it, which is what staff need to know,
  even if an earlier copy failed or a cancel came too late to stop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import reports

MAX_REPORTS = reports.MAX_REPORTS
UNKNOWN_BROADCAST = "unknown_broadcast"

# States as the centre shows them, in stage order.
STATES = (
    "queued", "offline", "delivered", "preempted", "playing",
    "played", "failed", "expired", "cancelled",
)
FINAL = ("played", "failed", "expired", "cancelled")
_STAGE = {
    "queued": 1, "offline": 1,
    "delivered": 2,
    "preempted": 3, "playing": 3,
    "played": 4, "failed": 4, "expired": 4, "cancelled": 4,
}
# On the wire (§8.3): the speaker's states plus the gateway's queued and offline.
_FROM_WIRE = {s: s for s in reports.STATES} | {"received": "delivered"}
assert set(_FROM_WIRE.values()) == set(STATES)


@dataclass(frozen=True)
class Report:
    device: str
    state: str  # one of STATES
    at: int


@dataclass(frozen=True)
class ReportBatch:
    gw: str
    bc: str
    reports: tuple[Report, ...]


def supersedes(new: str, new_at: int, old: str | None, old_at: int | None) -> bool:
    """Whether report (new, new_at) replaces the kept (old, old_at); see the module doc."""
    if old is None or old_at is None:
        return True
    if new == old:
        return False
    if old in FINAL:
        return new == "played"
    if _STAGE[new] != _STAGE[old]:
        return _STAGE[new] > _STAGE[old]
    return new_at > old_at


def parse_reports(body: dict[str, Any], gw: str) -> ReportBatch:
    """Check an authenticated §8.3 body from gateway `gw` (`protocol.reports`), in the
    centre's words (`received` is `delivered`)."""
    batch = reports.parse(body, gw)
    return ReportBatch(
        batch.gw, batch.bc, tuple(Report(r.device, _FROM_WIRE[r.state], r.at) for r in batch.reports)
    )
