"""The task that sends held broadcasts when their start comes.

Held broadcasts live in the database (state `scheduled`, their copies already signed), so a
centre that restarts picks them up where it left them; one whose time ran out while the centre
was down is marked `expired` and never sent. The same pass takes out of the outbox the copies
that expired before the broker could take them (the broker was down).

It wakes every `period_s` (1 s by default: a broadcast starts within a second of its start),
or at once on `wake()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from centre.bcstore import BroadcastStore
from centre.ingest import Metrics, kv
from centre.store import StoreError

log = logging.getLogger("onekey.centre.scheduler")


class Scheduler:
    """`run()` until cancelled. Constructing it does no I/O."""

    def __init__(
        self,
        broadcasts: BroadcastStore,
        kick: Callable[[], None],
        clock: Callable[[], int],
        metrics: Metrics,
        period_s: float = 1.0,
    ) -> None:
        self.broadcasts = broadcasts
        self.kick = kick  # tells the ingest task that the outbox has new downlinks
        self.clock = clock
        self.metrics = metrics
        self.period_s = period_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def tick(self) -> list[str]:
        """One pass; returns the ids released."""
        now = self.clock()
        released = await self.broadcasts.release_due(now)
        dropped = await self.broadcasts.expire_unsent(now)
        for bc_id in released:
            self.metrics.inc("broadcasts_released")
            log.info(kv(event="broadcast_released", id=bc_id))
        if dropped:
            self.metrics.inc("broadcast_copies_expired", dropped)
            log.warning(kv(event="broadcast_copies_expired", copies=dropped))
        if released:
            self.kick()
        return released

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except StoreError as exc:
                log.error(kv(event="store_failed", on="scheduler", error=str(exc)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period_s):
                    await self._wake.wait()
