"""The village side: device messages in from the village broker, acks out to devices.

Each device message is PUBACKed only after what it carries is committed (DESIGN.md,
durability): the event insert, the heartbeat or report record, or the decision that it is bad
input. PUBACKs go in arrival order (MQTT 3.1.1 §4.6). A message whose write failed is not
acknowledged: the link is dropped, and the broker sends it again, with everything after it, on
the next connect; so a kill -9 at any moment loses nothing and keeps each device's order.

Every time the village link comes up, the gateway tells devices once more the state of events
that progressed recently (an ack may have been lost with the process or with the broker), and a
heartbeat that lists events the device still waits on (§4.3, `ev`) is answered with the
current state of each one that is ahead of the device's view.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from device_fw import okproto
from gateway import intake
from gateway.config import GatewayConfig
from gateway.errors import StoreError, StoreFullError
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import DOWNLINK_COUNTER, EventRecord, InsertResult, Refused, Store, now_ms
from gateway.supervision import Supervisor
from transport.mqtt import Message, MqttClient, MqttError
from transport.pubacks import PubackOrder
from transport.reconnect import Backoff, keep_connected

log = logging.getLogger("onekey.gateway.village")

UP_FILTER = "ok/v1/dev/+/up/#"
# Acks for devices queued while the village broker is unreachable; the oldest go first.
MAX_PENDING_ACKS = 5000
# Messages from unknown devices make the gateway look at the registry version (a cheap read)
# at most this often; a device provisioned a moment ago is then accepted at once.
UNKNOWN_RELOAD_S = 0.05
# On every village link-up, states that moved this recently are sent to their devices again.
RESEND_PROGRESS_MS = 15 * 60 * 1000
# A message whose write failed this many times is acknowledged anyway (and logged), so that
# one message that cannot be stored does not hold up the village: a device keeps an event on
# its flash until it has `stored`, and sends it again. Never on a full disk: then nothing can
# be stored, so the message stays with the broker until space is freed.
MAX_WRITE_ATTEMPTS = 3
# While the disk is full, the village link is re-opened (and the broker's messages tried
# again) about this often rather than in a tight loop.
STORE_FULL_RETRY_S = 2.0
# §4.3: at most this many [counter, state] pairs in a heartbeat's `ev`.
MAX_EV = 8
# A device's view of an event, in the order states move (§4.2, §7).
DEVICE_STATES = ("sending", "stored", "received", "acked")
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
        supervisor: Supervisor | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        # Device supervision (gateway/supervision.py): told what is heard, and each last will.
        self.supervisor = supervisor
        self.client: MqttClient | None = None
        self._acks = AckCounter(store, clock)
        self._pending: deque[tuple[str, bytes]] = deque(maxlen=MAX_PENDING_ACKS)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_unknown_reload = 0.0
        self._write_failures: dict[tuple[str, int], int] = {}
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
        vb = self.cfg.village_broker
        backoff = Backoff(0.5, 30.0)

        def make_client() -> MqttClient:
            return MqttClient(
                vb.user,  # the broker makes the client id the user name anyway (§2.2)
                vb.host,
                vb.port,
                username=vb.user,
                password=vb.password,
                clean_session=False,  # the broker keeps device messages while we restart
                keepalive=15,
                manual_ack=True,  # PUBACK only once what a message carries is committed
            )

        async def session(client: MqttClient) -> None:
            order = PubackOrder(client, functools.partial(self._drop_link, client))
            await client.subscribe(UP_FILTER, qos=1)
            self.client = client
            self.metrics.gauge("village_link", "up")
            log.info("event=village_link_up broker=%s:%d", vb.host, vb.port)
            if self.store.health.full:
                backoff.delay = STORE_FULL_RETRY_S
            else:
                backoff.reset()
            self._flush_pending()
            await self._resend_progress()
            async for msg in client.messages():
                order.add(msg, await self.handle(msg))

        def lost(exc: Exception, _delay: float) -> None:
            log.warning("event=village_link_down broker=%s:%d error=%r", vb.host, vb.port, str(exc))

        async def closed() -> None:
            self.client = None
            self.metrics.gauge("village_link", "down")

        await keep_connected(make_client, session, backoff=backoff, lost=lost, closed=closed)

    def _drop_link(self, client: MqttClient) -> None:
        """A message was not committed: end this connection without acknowledging it, so that
        the broker sends it again, in order, when we reconnect."""
        log.warning("event=village_link_reset reason=write_failed")
        self.metrics.inc("village_link_resets")
        self._spawn(client.disconnect())

    async def _resend_progress(self) -> None:
        """Acks lost with a crash or with the village broker (it may lose what it held since
        its last save): send recent states again. A device ignores an ack that moves nothing."""
        try:
            recent = await self.store.recent_progress(self.clock() - RESEND_PROGRESS_MS)
        except StoreError as exc:
            log.error("event=store_failed on=resend_progress error=%r", str(exc))
            return
        for device, counter, state, by in recent:
            self.send_ack(device, counter, state, by=by)
        if recent:
            log.info("event=progress_resent acks=%d", len(recent))

    # -- device messages

    async def handle(self, msg: Message) -> asyncio.Future[bool] | None:
        """Take one device message. Returns None when nothing is left to commit (the message
        may be acknowledged now), else a future: True once it may be acknowledged, False if
        it was not committed (the broker must send it again)."""
        self.metrics.inc("messages_in")
        if msg.topic.endswith("/up/will"):
            dev = msg.topic.split("/")[3] if msg.topic.count("/") == 5 else "?"
            log.info("event=device_offline device=%s", dev)
            self.metrics.inc("device_offline")
            if dev in self.registry.devices:
                self.on_device_offline(dev)
                if self.supervisor is not None:
                    self.supervisor.will(self.registry.devices[dev])
            return None
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
            self._rejected(result.reason, result.device_id, msg, result.detail)
            return None  # bad input: acknowledged at once, it must not sit in the broker
        self.on_device_seen(result.device.id)
        if self.supervisor is not None and result.kind in ("hb", "bcr"):
            # Heartbeats and reports pass the counter watermark (§5.3): a replayed one never
            # gets here, so a dead device cannot be kept alive with old frames. An event counts
            # once it is stored as new (_store_event), not as a duplicate.
            self.supervisor.heard(result.device, result.kind, result.body)
        # Each branch queues its store writes before it returns, so writes go to the store in
        # the order the messages arrived.
        if result.kind == "hb":
            return self._track(result, self._heartbeat(result))
        if result.kind == "bcr":
            seen = self.store.record_seen(result.device.id, result.counter, self.clock())
            return self._track(result, self._report(result, seen))
        fut = self.store.insert_event(self._record(result))
        return self._track(result, self._store_event(result, fut, msg))

    def _track(
        self, acc: intake.Accepted, coro: Coroutine[Any, Any, bool]
    ) -> asyncio.Future[bool]:
        task = asyncio.create_task(self._guard(acc, coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, acc: intake.Accepted, coro: Coroutine[Any, Any, bool]) -> bool:
        """What became of one message: True to acknowledge it, False to have it sent again.
        The boundary of one message: whatever it raises is its own fault, logged and counted,
        and never stops the messages after it (DESIGN.md)."""
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, StoreError):
                log.exception(
                    "event=message_failed kind=%s device=%s counter=%d",
                    acc.kind, acc.device.id, acc.counter,
                )
            return self._write_failed(acc, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rejected(self, reason: str, device_id: str | None, msg: Message, detail: str) -> None:
        self.metrics.reject(reason)
        log.warning(
            "event=rejected reason=%s device=%s topic=%r detail=%r size=%d",
            reason, device_id, msg.topic[:100], detail, len(msg.payload),
        )

    def _write_failed(self, acc: intake.Accepted, exc: Exception) -> bool:
        """Whether to acknowledge a message whose write failed: not until it has failed
        MAX_WRITE_ATTEMPTS times (the broker sends it again after the link reset), and never
        while the disk is full. No `stored` ack either: the device keeps an event on its flash
        and sends it again."""
        self.metrics.inc("store_failed")
        if isinstance(exc, StoreFullError):
            # Every write fails alike until space is freed: this message is not at fault.
            log.error(
                "event=store_failed kind=%s device=%s counter=%d full=1 error=%r",
                acc.kind, acc.device.id, acc.counter, str(exc),
            )
            return False
        key = (acc.device.id, acc.counter)  # a device never reuses a counter (§5.1)
        n = self._write_failures.get(key, 0) + 1
        if len(self._write_failures) > 1000:
            self._write_failures.clear()
        self._write_failures[key] = n
        log.error(
            "event=store_failed kind=%s device=%s counter=%d attempt=%d error=%r",
            acc.kind, acc.device.id, acc.counter, n, str(exc),
        )
        if n < MAX_WRITE_ATTEMPTS:
            return False
        self.metrics.inc("store_gave_up")
        log.error(
            "event=store_gave_up kind=%s device=%s counter=%d attempts=%d",
            acc.kind, acc.device.id, acc.counter, n,
        )
        del self._write_failures[key]
        return True

    # -- heartbeats (§4, §4.3)

    async def _heartbeat(self, acc: intake.Accepted) -> bool:
        self.metrics.inc("heartbeats")
        dev = acc.device.id
        status = {k: v for k, v in acc.body.items() if k not in ("t", "d", "c", "ev")}
        recorded = self.store.record_heartbeat(dev, acc.counter, json.dumps(status), self.clock())
        pairs = _ev_pairs(acc.body.get("ev"))
        states = self.store.event_states(dev, [c for c, _s in pairs]) if pairs else None
        try:
            await recorded
        except StoreError as exc:
            # A heartbeat is QoS 0 and the next one comes soon: nothing to send again.
            log.warning("event=store_failed on=heartbeat device=%s error=%r", dev, str(exc))
        if states is not None:
            await self._answer_ev(dev, pairs, states)
        return True

    async def _answer_ev(
        self,
        dev: str,
        pairs: list[tuple[int, str]],
        states: asyncio.Future[dict[int, tuple[str, str | None]]],
    ) -> None:
        """§4.3: the device lists events whose final state it has not seen; tell it the state
        of each one the gateway has moved further."""
        try:
            ours = await states
        except StoreError as exc:
            log.warning("event=store_failed on=device_sync device=%s error=%r", dev, str(exc))
            return
        sent = 0
        for counter, theirs in pairs:
            found = ours.get(counter)
            if found is None:
                continue  # not stored: the device sends it again itself
            state, by = found
            if DEVICE_STATES.index(state) > DEVICE_STATES.index(theirs):
                self.send_ack(dev, counter, state, by=by)
                sent += 1
        if sent:
            self.metrics.inc("sync_acks", sent)
            log.info("event=device_sync device=%s asked=%d answered=%d", dev, len(pairs), sent)

    # -- broadcast reports (§8.3)

    async def _report(self, acc: intake.Accepted, seen: asyncio.Future[None]) -> bool:
        await seen
        if self.on_report is not None:
            await self.on_report(acc)
        return True

    # -- events (§4, §5)

    def _record(self, acc: intake.Accepted) -> EventRecord:
        body = acc.body
        return EventRecord(
            device=acc.device.id,
            counter=acc.counter,
            kind=acc.kind,
            ref=body.get("ref"),
            village=acc.device.village,
            household=acc.device.household,
            gw_ts=self.clock(),
            dev_ts=body.get("ts"),
            dev_up=body.get("up"),
        )

    async def _store_event(
        self, acc: intake.Accepted, fut: asyncio.Future[InsertResult | Refused], msg: Message
    ) -> bool:
        dev, counter = acc.device.id, acc.counter
        res = await fut
        if isinstance(res, Refused):
            # §5.5: outside the device's counter window (a withheld frame injected later).
            self._rejected(res.reason, dev, msg, res.detail)
            return True
        if res.new:
            if self.supervisor is not None:
                self.supervisor.heard(acc.device, acc.kind, acc.body)
            self.metrics.inc(f"stored_{acc.kind}")
            log.info(
                "event=stored kind=%s device=%s counter=%d seq=%d household=%s",
                acc.kind, dev, counter, res.seq, acc.device.household,
            )
        else:
            self.metrics.inc("duplicates")
            log.info("event=duplicate device=%s counter=%d state=%s", dev, counter, res.state)
        self.send_ack(dev, counter, res.state, by=res.acked_by)
        return True

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
            fut.add_done_callback(self._ack_delivered)
            self.metrics.inc("acks_out")

    def _ack_delivered(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.warning("event=write_failed error=%r", str(exc))
        else:
            self.metrics.inc("acks_out_confirmed")  # the village broker has it


def _ev_pairs(value: object) -> list[tuple[int, str]]:
    """§4.3: the `ev` list of a heartbeat, as (counter, device state) pairs; entries that are
    not a valid pair are skipped, and at most MAX_EV are read."""
    if not isinstance(value, list):
        return []
    out: list[tuple[int, str]] = []
    for item in value[:MAX_EV]:
        if (
            isinstance(item, list)
            and len(item) == 2
            and type(item[0]) is int
            and 1 <= item[0] < okproto.MAX_INT
            and item[1] in DEVICE_STATES
        ):
            out.append((item[0], str(item[1])))
    return out


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
