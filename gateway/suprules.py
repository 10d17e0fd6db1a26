"""Device supervision rules, pure (docs/gateway.md, "Supervision"; protocol §6.2.1).

No I/O and no clock of its own: every function takes the time (gateway Unix ms) and returns
the supervision events (`what`, §6.2.1) that a change raises. `gateway.supervision` feeds it
what the village side hears and stores what it returns.

- Grace: a device is lost after `lost_after_s` of silence: `period_s * missed + margin_s` of
  its power profile (mains: 20 s * 3 = 60 s; battery: 3600 s * 2 + 300 s).
- Last will (mains only): the broker's will says the device's connection ended without a
  DISCONNECT; with nothing heard for `will_grace_s` after it, the device is lost then, sooner
  than its grace. A battery button's clean DISCONNECT before it sleeps sends no will, and a
  will for a battery button changes nothing: it is judged by its check-ins alone.
- Restart: a gateway that starts gives every device a fresh grace from that moment, so it never
  calls everyone lost at once after its own downtime; a device that was lost stays lost (no
  second `lost`) until it is heard (`restored`).
- Battery hysteresis: `low_battery` once at or below `low_pct`, `battery_ok` only above
  `ok_pct`; readings in between change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

OK = "ok"
LOST = "lost"


@dataclass(frozen=True)
class Profile:
    """How often a device of a power profile speaks and how long its silence may last."""

    period_s: int
    missed: int
    margin_s: int

    @property
    def lost_after_s(self) -> int:
        return self.period_s * self.missed + self.margin_s


@dataclass(frozen=True)
class Marks:
    low_pct: int = 20
    ok_pct: int = 30
    will_grace_s: float = 10.0


@dataclass
class Watch:
    """One device's supervision state. `state`, `low_battery`, `fault` and `tamper` are kept
    in the gateway's database; `deadline` and `will_at` are not: a start gives a fresh grace."""

    lost_after_ms: int
    state: str = OK
    low_battery: bool = False
    fault: str | None = None
    tamper: bool = False
    last_seen: int | None = None
    bat: int | None = None
    fw: str | None = None
    deadline: int = 0
    will_at: int | None = None
    mains: bool = True

    def start(self, now: int) -> None:
        """A fresh grace from `now` (the gateway started, or began watching this device)."""
        self.deadline = now + self.lost_after_ms
        self.will_at = None


def heard(
    w: Watch,
    now: int,
    marks: Marks,
    *,
    bat: int | None = None,
    fw: str | None = None,
    fault: str | None = None,
    tamper: bool | None = None,
    status: bool = False,
) -> list[str]:
    """The device was heard (any authenticated message). `status`: it was a heartbeat, whose
    `bat`, `flt` and `tmp` are read (an absent `flt` clears a fault, an absent `tmp` a
    tamper)."""
    out: list[str] = []
    w.last_seen = now
    w.deadline = now + w.lost_after_ms
    w.will_at = None
    if w.state == LOST:
        w.state = OK
        out.append("restored")
    if fw is not None:
        w.fw = fw
    if bat is not None:
        w.bat = bat
        if not w.low_battery and bat <= marks.low_pct:
            w.low_battery = True
            out.append("low_battery")
        elif w.low_battery and bat > marks.ok_pct:
            w.low_battery = False
            out.append("battery_ok")
    if status:
        if fault != w.fault:
            if fault is None:
                out.append("fault_clear")
            else:
                out.append("fault")
            w.fault = fault
        if bool(tamper) != w.tamper:
            w.tamper = bool(tamper)
            out.append("tamper" if w.tamper else "tamper_clear")
    return out


def will(w: Watch, now: int, marks: Marks) -> None:
    """The broker's last will for the device: a mains device is lost `will_grace_s` from now
    unless heard before; a battery button's is ignored."""
    if w.mains and w.state == OK:
        w.will_at = now
        w.deadline = min(w.deadline, now + int(marks.will_grace_s * 1000))


def tick(w: Watch, now: int) -> list[str]:
    """Time passes: `lost` once the deadline has passed."""
    if w.state == OK and now >= w.deadline:
        w.state = LOST
        return ["lost"]
    return []


def fault_code(value: object) -> str | None:
    """A heartbeat's `flt` (§4): 1..16 printable ASCII characters; anything else reads as
    no fault reported."""
    if isinstance(value, str) and 1 <= len(value) <= 16 and all(
        0x20 < ord(c) < 0x7F for c in value
    ):
        return value
    return None


def tamper_flag(value: object) -> bool:
    """A heartbeat's `tmp` (§4): 1 while the case is open; anything but the integer 1 is not."""
    return type(value) is int and value == 1


def battery(value: object) -> int | None:
    """A heartbeat's `bat` (§4): an integer 0..100, else no reading."""
    if type(value) is int and 0 <= value <= 100:
        return value
    return None
