"""What an attack campaign (harness/attacks.py) found: per link and category the messages
sent, accepted and played; whether the refusals add up; memory and liveness of every service;
and whether genuine traffic still got through at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LINKS = ("device", "uplink", "downlink", "speaker")
LINK_NAMES = {
    "device": "device -> gateway",
    "uplink": "gateway -> centre",
    "downlink": "centre -> gateway",
    "speaker": "gateway -> speaker",
}
CATEGORIES = (
    "forged", "replayed", "withheld", "cross_device", "takeover", "oversized", "malformed", "fuzzed",
)
# Memory is flat when the second half of the campaign grew a process by at most this much
# (the first half warms caches and allocator pools; a leak grows both halves alike).
FLAT_KB = 4096
FLAT_SHARE = 0.05


def rss_kb(pid: int | None) -> int | None:
    """VmRSS of a process in kB, from /proc; None if it is gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class Tally:
    sent: int = 0
    accepted: int = 0
    played: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.accepted += other.accepted
        self.played += other.played
        self.notes += other.notes


@dataclass
class Bounds:
    """Refusals counted by one receiver: at least `low` (every message that must be refused),
    at most `high` (plus those a correct receiver may answer either way, e.g. a replayed alarm
    as a duplicate or as a replay)."""

    low: int = 0
    high: int = 0
    seen: int = 0

    @property
    def adds_up(self) -> bool:
        return self.low <= self.seen <= self.high


@dataclass
class AttackResult:
    seed: int
    requested: int
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    # receiver -> Bounds of all its refusals; receiver -> reason -> Bounds
    refusals: dict[str, Bounds] = field(default_factory=dict)
    reasons: dict[str, dict[str, Bounds]] = field(default_factory=dict)
    # process -> {"start", "warm", "end"} -> VmRSS kB
    rss_kb: dict[str, dict[str, int | None]] = field(default_factory=dict)
    alive: dict[str, bool] = field(default_factory=dict)
    legit: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unattributed: int = 0  # acceptances that showed only in the check after every phase
    complete: bool = False
    elapsed_s: float = 0.0

    def tally(self, link: str, category: str) -> Tally:
        return self.tallies.setdefault((link, category), Tally())

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.tallies.values())

    @property
    def accepted(self) -> int:
        return sum(t.accepted for t in self.tallies.values()) + self.unattributed

    @property
    def played(self) -> int:
        return sum(t.played for t in self.tallies.values())

    def by_category(self) -> dict[str, Tally]:
        out = {c: Tally() for c in CATEGORIES}
        for (_link, cat), t in self.tallies.items():
            out[cat].add(t)
        return out

    def growth_kb(self, proc: str) -> int | None:
        r = self.rss_kb.get(proc, {})
        warm, end = r.get("warm"), r.get("end")
        return None if warm is None or end is None else end - warm

    def memory_flat(self, proc: str) -> bool:
        warm = self.rss_kb.get(proc, {}).get("warm")
        grew = self.growth_kb(proc)
        return warm is not None and grew is not None and grew <= max(FLAT_KB, FLAT_SHARE * warm)

    def failures(self) -> list[str]:
        out = []
        for (link, cat), t in sorted(self.tallies.items()):
            if t.accepted:
                out.append(f"{LINK_NAMES[link]} {cat}: {t.accepted} of {t.sent} accepted")
            if t.played:
                out.append(f"{LINK_NAMES[link]} {cat}: {t.played} played")
        if self.unattributed:
            out.append(f"{self.unattributed} acceptances seen only after the last phase")
        out += [f"{name} is not running" for name, up in self.alive.items() if not up]
        out += [f"genuine {what} did not get through at the end" for what, ok in self.legit.items()
                if not ok]
        out += [f"{proc} memory grew {self.growth_kb(proc)} kB in the second half"
                for proc in self.rss_kb if not self.memory_flat(proc)]
        out += [f"{who} refused {b.seen} messages, expected {b.low}..{b.high}"
                for who, b in self.refusals.items() if not b.adds_up]
        if not self.complete:
            out.append(f"only {self.sent} of {self.requested} messages sent within the time limit")
        return out

    @property
    def ok(self) -> bool:
        return not self.failures()

    def report(self) -> str:
        """The figures as text: per category, per link, refusals, memory."""
        lines = [
            f"attack campaign, seed {self.seed}: {self.sent} messages, {self.accepted} accepted, "
            f"{self.played} played, {self.elapsed_s:.1f} s",
            "",
            f"{'category':<14}{'sent':>8}{'accepted':>10}{'played':>8}",
        ]
        for cat, t in self.by_category().items():
            lines.append(f"{cat:<14}{t.sent:>8}{t.accepted:>10}{t.played:>8}")
        lines += ["", f"{'link':<20}{'category':<14}{'sent':>8}{'accepted':>10}{'played':>8}"]
        for (link, cat), t in sorted(
            self.tallies.items(), key=lambda kv: (LINKS.index(kv[0][0]), CATEGORIES.index(kv[0][1]))
        ):
            lines.append(f"{LINK_NAMES[link]:<20}{cat:<14}{t.sent:>8}{t.accepted:>10}{t.played:>8}")
            lines += [f"    {n}" for n in t.notes[:5]]
        lines += ["", "refusals (expected low..high, counted):"]
        for who, b in self.refusals.items():
            mark = "" if b.adds_up else "  <-- does not add up"
            lines.append(f"  {who}: {b.low}..{b.high}, {b.seen}{mark}")
            for reason, rb in sorted(self.reasons.get(who, {}).items()):
                rmark = "" if rb.adds_up else "  <--"
                lines.append(f"      {reason}: {rb.low}..{rb.high}, {rb.seen}{rmark}")
        lines += ["", "memory (VmRSS kB: start, after the first half, end; growth in the second half):"]
        for proc, r in self.rss_kb.items():
            flat = "flat" if self.memory_flat(proc) else "NOT FLAT"
            lines.append(
                f"  {proc:<16}{r.get('start')!s:>9}{r.get('warm')!s:>9}{r.get('end')!s:>9}"
                f"{self.growth_kb(proc)!s:>8}  {flat}"
            )
        lines.append("alive: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in self.alive.items()))
        lines.append("genuine traffic at the end: "
                     + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in self.legit.items()))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
