"""The village side: device messages in from the village broker, acks out to devices."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from device_fw import okproto
from gateway import intake
from gateway.config import GatewayConfig
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import DOWNLINK_COUNTER, EventRecord, Refused, Store, now_ms
from onekey.mqtt import Message, MqttClient, MqttError

log = logging.getLogger("onekey.gateway.village")

UP_FILTER = "ok/v1/dev/+/up/#"
# Acks for devices queued while the village broker is unreachable; the oldest go first.
MAX_PENDING_ACKS = 5000
# Messages from unknown devices make the gateway look at the registry version (a cheap read)
# at most this often; a device provisioned a moment ago is then accepted at once.
UNKNOWN_RELOAD_S = 0.05
# §4.2: the downlink counter is reserved this far ahead (counter units: a minute of
# milliseconds, so a restart moves it at most a minute ahead of the clock); a new block is
# reserved once half of the current one is used (a meta row riding a group commit).
COUNTER_BLOCK = 60_000


class AckCounter:
    """§4.2: the gateway's downlink counter: strictly increasing, never reused across
    restarts, whatever the clock does.

    Values are `max(last + 1, clock())`, drawn from a block whose end is committed to the
    store's meta table before any value of it is used (as a device does with its counter,
    §5.1); after a restart counting resumes above the reserved end. A clock that is set back
    therefore cannot make `c` go backwards; a clock that jumps forward is followed only once
    a block covering it is committed.
    """

    def __init__(self, store: Store, clock: Callable[[], int] = now_ms) -> None:
        self.store = store
        self.clock = clock
        self._last = 0
        self._reserved = 0  # committed end of the block
        self._reserving: asyncio.Future[None] | None = None
        self._started = False

    async def start(self) -> None:
        saved = await self.store.get_meta_int(DOWNLINK_COUNTER)
        self._last = max(self._last, saved or 0)
        end = max(self._last, self.clock()) + COUNTER_BLOCK
        await self.store.put_meta_int(DOWNLINK_COUNTER, end)
        self._reserved = end
        self._started = True
        log.info("event=downlink_counter_reserved from=%d to=%d", self._last, end)

    def next(self) -> int:
        if not self._started:
            raise StoreError("the downlink counter is not started: call VillageSide.init() first")
        now = self.clock()
        value = self._last + 1
        if value <= now <= self._reserved:
            value = now
        if value > self._reserved:
            # Half a block used before the next reservation committed: it cannot happen at
            # the rates this gateway sees, but say so if it ever does.
            log.error("event=downlink_counter_ahead value=%d reserved=%d", value, self._reserved)
        self._last = value
        if self._reserved - max(value, now) < COUNTER_BLOCK // 2:
            self._reserve(max(value, now) + COUNTER_BLOCK)
        return value

    def _reserve(self, end: int) -> None:
        if self._reserving is not None and not self._reserving.done():
            return
        fut = self.store.put_meta_int(DOWNLINK_COUNTER, end)
        self._reserving = fut

        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                log.error("event=downlink_counter_reserve_failed end=%d error=%r", end, str(exc))
                return
            self._reserved = max(self._reserved, end)

        fut.add_done_callback(done)


class VillageSide:
    def __init__(
        self,
        cfg: GatewayConfig,
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
        self.client: MqttClient | None = None
        self._acks = AckCounter(store, clock)
        self._pending: deque[tuple[str, bytes]] = deque(maxlen=MAX_PENDING_ACKS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_unknown_reload = 0.0
        self.on_new_event: Callable[[], None] = lambda: None
        # Broadcast hooks (gateway/broadcasts.py): presence and speaker reports.
        self.on_device_seen: Callable[[str], None] = lambda device: None
        self.on_device_offline: Callable[[str], None] = lambda device: None
        self.on_report: Callable[[intake.Accepted], Coroutine[Any, Any, None]] | None = None

    async def init(self) -> None:
        """Reserve the downlink counter (a store write); call once before `run()`."""
        await self._acks.start()


    # -- connection supervision

    async def run(self) -> None:
        delay = 0.5
        vb = self.cfg.village_broker
        while True:
            client = MqttClient(
                vb.user,  # the broker makes the client id the user name anyway (§2.2)
                vb.host,
                vb.port,
                username=vb.user,
                password=vb.password,
                clean_session=False,  # the broker keeps device messages while we restart
                keepalive=15,
            )
            try:
                await client.connect()
                await client.subscribe(UP_FILTER, qos=1)
                self.client = client
                self.metrics.gauge("village_link", "up")
                log.info("event=village_link_up broker=%s:%d", vb.host, vb.port)
                delay = 0.5
                self._flush_pending()
                async for msg in client.messages():
                    await self.handle(msg)
            except MqttError as exc:
                log.warning("event=village_link_down broker=%s:%d error=%r", vb.host, vb.port, str(exc))
            finally:
                self.client = None
                self.metrics.gauge("village_link", "down")
                await client.disconnect()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)

    # -- device messages

    async def handle(self, msg: Message) -> None:
        self.metrics.inc("messages_in")
        if msg.topic.endswith("/up/will"):
            dev = msg.topic.split("/")[3] if msg.topic.count("/") == 5 else "?"
            log.info("event=device_offline device=%s", dev)
            self.metrics.inc("device_offline")
            if dev in self.registry.devices:
                self.on_device_offline(dev)
            return
        result = intake.check(self.registry, msg.topic, msg.payload)
        if (
            isinstance(result, intake.Rejected)
            and result.reason == okproto.UNKNOWN_DEVICE
            and asyncio.get_running_loop().time() - self._last_unknown_reload > UNKNOWN_RELOAD_S
        ):
            # A device provisioned a moment ago: look again before refusing it.
            self._last_unknown_reload = asyncio.get_running_loop().time()
            if await self.registry.reload(self.store):
                result = intake.check(self.registry, msg.topic, msg.payload)
        if isinstance(result, intake.Rejected):
            self.metrics.reject(result.reason)
            log.warning(
                "event=rejected reason=%s device=%s topic=%r detail=%r size=%d",
                result.reason, result.device_id, msg.topic[:100], result.detail, len(msg.payload),
            )
            return
        self.on_device_seen(result.device.id)
        if result.kind == "hb":
            self._heartbeat(result)
            return
        if result.kind == "bcr":
            self.store.record_seen(result.device.id, result.counter, now_ms()).add_done_callback(
                _log_failure
            )
            if self.on_report is not None:
                self._spawn(self.on_report(result))
            return
        self._spawn(self._store_event(result, now_ms()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _heartbeat(self, acc: intake.Accepted) -> None:
        self.metrics.inc("heartbeats")
        status = {k: v for k, v in acc.body.items() if k not in ("t", "d", "c")}
        bat = status.get("bat")
        if isinstance(bat, int) and bat <= 20:
            log.warning("event=low_battery device=%s battery=%d", acc.device.id, bat)
        fut = self.store.record_heartbeat(acc.device.id, acc.counter, json.dumps(status), now_ms())
        fut.add_done_callback(_log_failure)

    async def _store_event(self, acc: intake.Accepted, gw_ts: int) -> None:
        body = acc.body
        rec = EventRecord(
            device=acc.device.id,
            counter=acc.counter,
            kind=acc.kind,
            ref=body.get("ref"),
            village=acc.device.village,
            household=acc.device.household,
            gw_ts=gw_ts,
            dev_ts=body.get("ts"),
            dev_up=body.get("up"),
        )
        try:
            res = await self.store.insert_event(rec)
        except StoreError as exc:
            # No "stored" ack: the device keeps the alarm on its flash and sends it again.
            self.metrics.inc("store_failed")
            log.error("event=store_failed device=%s counter=%d error=%r", rec.device, rec.counter, str(exc))
            return
        if isinstance(res, Refused):
            # §5.5: outside the device's counter window (a withheld frame injected later).
            self.metrics.reject(res.reason)
            log.warning(
                "event=rejected reason=%s device=%s counter=%d detail=%r",
                res.reason, rec.device, rec.counter, res.detail,
            )
            return
        if res.new:
            self.metrics.inc(f"stored_{rec.kind}")
            log.info(
                "event=stored kind=%s device=%s counter=%d seq=%d household=%s",
                rec.kind, rec.device, rec.counter, res.seq, rec.household,
            )
        else:
            self.metrics.inc("duplicates")
            log.info("event=duplicate device=%s counter=%d state=%s", rec.device, rec.counter, res.state)
        self.send_ack(rec.device, rec.counter, res.state, by=res.acked_by)

    # -- acks and broadcasts to devices

    def next_counter(self) -> int:
        """The gateway's downlink counter (§4.2, §8.2), shared by acks and broadcasts."""
        return self._acks.next()

    def send_ack(self, device_id: str, ref: int, state: str, by: str | None = None) -> None:
        key = self.registry.key_for(device_id)
        if key is None:
            return
        topic, payload = okproto.encode_ack(
            key, device_id, self._acks.next(), ref, state, by=_ascii(by, 32)
        )
        self._pending.append((topic, payload))
        self._flush_pending()

    def _flush_pending(self) -> None:
        client = self.client
        while client is not None and self._pending:
            topic, payload = self._pending.popleft()
            try:
                fut = client.publish_nowait(topic, payload, qos=1)
            except MqttError:
                self._pending.appendleft((topic, payload))
                return
            fut.add_done_callback(_log_failure)
            self.metrics.inc("acks_out")


def _ascii(text: str | None, limit: int) -> str | None:
    """Staff names may be Chinese; the device ack carries printable ASCII only (§4)."""
    if text is None:
        return None
    clean = "".join(ch for ch in text if 0x20 <= ord(ch) <= 0x7E)[:limit]
    return clean or None


def _log_failure(fut: asyncio.Future[None]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.warning("event=write_failed error=%r", str(exc))
