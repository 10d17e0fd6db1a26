"""Device supervision: silence, batteries, faults and tampering become events for the centre.

The village side tells the supervisor each time it hears a registered device (any message
that passed the §3 checks) and each last will the broker publishes for one; `run()` checks the
deadlines every `check_s`. What changes is stored as a supervision event (protocol §6.2.1) in
the same outbox as alarms, in one operation with the device's new durable state (table
`supervision`), and forwarded, signed, like an alarm. The rules are `gateway.suprules`.

Only devices heard at least once are watched (the first time raises `seen`): a board that is
registered but not yet installed is not reported lost. A gateway that starts gives every
watched device a fresh grace (suprules), so its own downtime is not everyone's loss, and it
remembers who is lost, low on battery, faulty or open.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from gateway import suprules
from gateway.config import SupervisionConfig
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.registry import Device, Registry
from gateway.store import EventRecord, Store, SupervisionRow, now_ms
from protocol import uplink

log = logging.getLogger("onekey.gateway.supervision")


def profile(cfg: SupervisionConfig, dev: Device) -> suprules.Profile:
    """The device's power profile, its own period (from provisioning) if it has one."""
    if dev.power == "battery":
        return suprules.Profile(
            dev.period_s or cfg.battery_period_s, cfg.battery_missed, cfg.battery_margin_s
        )
    return suprules.Profile(dev.period_s or cfg.mains_period_s, cfg.mains_missed, cfg.mains_margin_s)


class Supervisor:
    """Constructing does no I/O; `init()` loads the durable state, `run()` checks deadlines."""

    def __init__(
        self,
        cfg: SupervisionConfig,
        store: Store,
        registry: Registry,
        metrics: Metrics,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.marks = suprules.Marks(cfg.low_battery_pct, cfg.battery_ok_pct, cfg.will_grace_s)
        self.watches: dict[str, suprules.Watch] = {}
        self._saved: dict[str, SupervisionRow] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._listed = 0  # where the next heartbeat's `devs` starts (§6.5)

    async def init(self) -> None:
        """Load who was lost, low or faulty; every watched device gets a fresh grace now."""
        self._saved = await self.store.load_supervision()
        now = self.clock()
        for dev_id in self._saved:
            dev = self.registry.devices.get(dev_id)
            if dev is not None and dev.enabled:
                self._watch(dev, now)
        lost = sorted(d for d, w in self.watches.items() if w.state == suprules.LOST)
        log.info(
            "event=supervision_start watched=%d lost=%d fresh_grace=yes", len(self.watches),
            len(lost),
        )
        self.metrics.gauge("devices_lost", len(lost))

    def _watch(self, dev: Device, now: int) -> suprules.Watch:
        prof = profile(self.cfg, dev)
        w = suprules.Watch(lost_after_ms=prof.lost_after_s * 1000, mains=dev.power != "battery")
        row = self._saved.get(dev.id)
        if row is not None:
            w.state = row.state if row.state in (suprules.OK, suprules.LOST) else suprules.OK
            w.low_battery, w.fault, w.tamper = row.low_battery, row.fault, row.tamper
            w.last_seen, w.bat, w.fw = row.last_seen, row.bat, row.fw
        w.start(now)
        self.watches[dev.id] = w
        return w

    # -- what the village side hears

    def heard(self, dev: Device, kind: str, body: Mapping[str, Any]) -> None:
        now = self.clock()
        w = self.watches.get(dev.id)
        whats: list[str] = []
        if w is None:
            w = self._watch(dev, now)
            if dev.id not in self._saved:
                whats.append("seen")
        before = replace(w)
        if kind == "hb":
            fw = body.get("fw")
            whats += suprules.heard(
                w, now, self.marks,
                bat=suprules.battery(body.get("bat")),
                fw=fw if isinstance(fw, str) and len(fw) <= uplink.MAX_CODE else None,
                fault=suprules.fault_code(body.get("flt")),
                tamper=suprules.tamper_flag(body.get("tmp")),
                status=True,
            )
        else:
            whats += suprules.heard(w, now, self.marks)
        if whats:
            self._emit(dev, w, whats, now, before)

    def will(self, dev: Device) -> None:
        """The broker's last will for `dev` (a hint: it is not authenticated, §2)."""
        w = self.watches.get(dev.id)
        if w is not None:
            suprules.will(w, self.clock(), self.marks)

    def seen_batch(self, limit: int = uplink.MAX_DEVS) -> tuple[uplink.DeviceSeen, ...]:
        """§6.5 `devs` for the next gateway heartbeat: up to `limit` watched devices with when
        each was last heard, taking turns when there are more, so that the centre's device
        list shows every device's last seen within a few heartbeats."""
        heard = sorted(
            (uplink.DeviceSeen(d, w.last_seen, w.bat, w.fw)
             for d, w in self.watches.items() if w.last_seen is not None),
            key=lambda s: s.id,
        )
        if not heard:
            return ()
        start = self._listed % len(heard)
        chosen = (heard[start:] + heard[:start])[:limit]
        self._listed = start + len(chosen)
        return tuple(chosen)

    # -- deadlines

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self.cfg.check_s)

    def check(self) -> None:
        now = self.clock()
        for dev_id in list(self.watches):
            dev = self.registry.devices.get(dev_id)
            if dev is None or not dev.enabled:
                del self.watches[dev_id]  # revoked or removed: no longer supervised
                continue
            w = self.watches[dev_id]
            before = replace(w)
            whats = suprules.tick(w, now)
            if whats:
                self._emit(dev, w, whats, now, before)
        self.metrics.gauge(
            "devices_lost", sum(1 for w in self.watches.values() if w.state == suprules.LOST)
        )

    # -- events

    def _emit(
        self, dev: Device, w: suprules.Watch, whats: list[str], now: int, before: suprules.Watch
    ) -> None:
        prof = profile(self.cfg, dev)
        row = SupervisionRow(
            dev.id, w.state, w.low_battery, w.fault, w.tamper, w.last_seen, w.bat, w.fw
        )
        self._saved[dev.id] = row
        for what in whats:
            sup = uplink.Supervision(
                what=what, subject=dev.id, role=dev.role, power=dev.power,
                period_s=prof.period_s, lost_after_s=prof.lost_after_s, last_seen=w.last_seen,
                bat=w.bat, fw=w.fw,
                code=(w.fault if what == "fault" else before.fault if what == "fault_clear"
                      else None),
            )
            detail = json.dumps(uplink.encode_supervision(sup), separators=(",", ":"))

            def make(n: int, detail: str = detail) -> EventRecord:
                return EventRecord(
                    device=uplink.SUP_SOURCE, counter=n, kind=uplink.SUPERVISION, ref=None,
                    village=dev.village, household=dev.household, gw_ts=now, dev_ts=None,
                    dev_up=None, detail=detail,
                )

            self.metrics.inc(f"supervision_{what}")
            log_fn = log.warning if what in ("lost", "low_battery", "fault", "tamper") else log.info
            log_fn(
                "event=device_%s device=%s power=%s last_seen=%s bat=%s lost_after_s=%d",
                what, dev.id, dev.power, w.last_seen, w.bat, prof.lost_after_s,
            )
            fut = self.store.insert_supervision(uplink.SUP_SOURCE, make, row, now)
            fut.add_done_callback(partial(self._stored, dev_id=dev.id, what=what, before=before))
            self._tasks.add(fut)
            fut.add_done_callback(self._tasks.discard)

    def _stored(
        self, fut: asyncio.Future[int], *, dev_id: str, what: str, before: suprules.Watch
    ) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            log.info("event=supervision_stored device=%s what=%s seq=%d", dev_id, what, fut.result())
            return
        # Not stored: put the condition back as it was, so that the next message or tick
        # raises it again rather than the centre never hearing of it.
        why = str(exc) if isinstance(exc, StoreError) else repr(exc)
        log.error("event=store_failed on=supervision device=%s what=%s error=%r", dev_id, what, why)
        w = self.watches.get(dev_id)
        if w is None:
            return
        if what == "seen":
            self._saved.pop(dev_id, None)
            del self.watches[dev_id]
            return
        w.state, w.low_battery = before.state, before.low_battery
        w.fault, w.tamper = before.fault, before.tamper
        if what == "lost":
            w.deadline = self.clock()
