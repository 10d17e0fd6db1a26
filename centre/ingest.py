"""The centre's side of the centre broker: one task that owns the MQTT connection.

It subscribes to every gateway's events, heartbeats, broadcast reports and confirmations (QoS
1, persistent session under a fixed client id, so the broker keeps what arrives while the
centre restarts). Whatever messages have gathered are checked (frames.open_uplink) and
committed together in one transaction (group commit); only then are the signed `received` acks
published (§6.4) and the messages PUBACKed, in arrival order. A duplicate event is answered
with its current state.

Acks that staff gave and broadcast copies that are due are taken from the store's `downlinks`
and published; each stays there until its gateway confirms it on `up/conf` (§6.6), not merely
until the broker's PUBACK (a broker killed before its autosave loses what it held). Unconfirmed
downlinks are published again after every connect, when their gateway is heard again (its
heartbeat, its confirmation sent on connecting, or any message after a silence), and every
`downlink_resend_s` while the gateway is online.

Bad input never stops the task: a message is either handled or rejected with one reason, which
is logged as a key=value line and counted.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from centre import bcreports, confs, contactpush, devices, frames, prom
from centre.bcstore import DOWNLINK_STATE, BroadcastNotFound, BroadcastStore, record_reports
from centre.config import CentreConfig
from centre.live import LiveHub
from centre.store import (
    Downlink,
    Event,
    InsertResult,
    NewEvent,
    Store,
    StoreError,
    confirm_acks,
    event_data,
    insert_events,
    now_ms,
    record_heartbeat,
)
from protocol import contacts, topics, uplink
from transport.keys import KeyFileError, load_public_hex
from transport.mqtt import MqttClient, MqttError, TlsFiles
from transport.reconnect import Backoff, keep_connected

log = logging.getLogger("onekey.centre.ingest")


_PLAIN = re.compile(r"[A-Za-z0-9_.:/+@-]{1,200}")


def kv(**fields: object) -> str:
    """`key=value` pairs; values that are not plain tokens are JSON-quoted (no log injection)."""
    out = []
    for k, v in fields.items():
        s = str(v)
        out.append(f"{k}={s if _PLAIN.fullmatch(s) else json.dumps(s[:200])}")
    return " ".join(out)


class IncomingMessage(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


class MqttLike(Protocol):
    """What the ingest task needs of an MQTT client (transport.mqtt.MqttClient, or a test fake)."""

    async def connect(self) -> None: ...
    async def subscribe(self, topic: str, qos: int = ...) -> None: ...
    def publish_nowait(self, topic: str, payload: bytes, qos: int = ...) -> asyncio.Future[None]: ...
    def messages(self) -> AsyncIterator[Any]: ...
    def ack(self, msg: Any) -> None: ...
    async def disconnect(self) -> None: ...


ClientFactory = Callable[[CentreConfig], MqttLike]


def broker_client(config: CentreConfig) -> MqttLike:
    """The real client: TLS with the centre's certificate (common name = MQTT user)."""
    return MqttClient(
        config.client_id,
        config.broker_host,
        config.broker_port,
        tls=TlsFiles(ca=config.broker_ca, cert=config.broker_cert, key=config.broker_key),
        clean_session=False,  # events that arrive while the centre is away wait at the broker
        keepalive=30,
        # PUBACK only once what a message carries is committed (or it is refused as bad
        # input): a crash before that leaves it in the session, sent again in order.
        manual_ack=True,
    )


class Metrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.connected = False
        self.gateways_offline = 0
        # Prometheus (`GET /metrics`, centre.prom): this instance's own registry.
        self.prom = prom.CentreProm(self)

    def set_modem_state(self, state: str) -> None:
        """The modem's state (`modem.Modem.state`); `absent` until a modem sets it."""
        self.prom.modem.set(state)

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1
        self.counts["rejected"] += 1


MAX_BATCH = 500  # messages committed in one transaction at most
THREAD_CHECK_FROM = 8  # a batch this large has its signatures checked in a worker thread
INTERNAL_ERROR = "internal_error"  # rejection reason of a message the centre's code failed on


@dataclass
class _Item:
    """One message of a batch, as it goes through checks, commit and answer."""

    topic: str
    payload: bytes
    gw: str = ""
    kind: str = ""
    op: NewEvent | frames.Heartbeat | bcreports.ReportBatch | confs.Conf | contacts.SmsReport | None = None
    rejected: frames.Rejected | None = None
    result: InsertResult | None = None
    sup: devices.SupResult | None = None  # a supervision event's (§6.2.1)
    changed: int = 0


async def _next_batch(inbox: asyncio.Queue[Any]) -> tuple[list[Any], BaseException | None]:
    """Waits for one message, then takes whatever else is already there (up to MAX_BATCH);
    also returns the error that ended the stream, if the reader has put one."""
    items = [await inbox.get()]
    while len(items) < MAX_BATCH and not inbox.empty():
        items.append(inbox.get_nowait())
    batch: list[Any] = []
    for item in items:
        if isinstance(item, BaseException):
            return batch, item
        batch.append(item)
    return batch, None


def _task_ended(task: asyncio.Task[None], *, inbox: asyncio.Queue[Any]) -> None:
    if not task.cancelled():
        inbox.put_nowait(task.exception() or MqttError(f"{task.get_name()} ended"))


class Ingest:
    """`run()` until cancelled. Constructing it does no I/O."""

    def __init__(
        self,
        config: CentreConfig,
        store: Store,
        key: Ed25519PrivateKey,
        metrics: Metrics | None = None,
        client_factory: ClientFactory = broker_client,
        clock: Callable[[], int] = now_ms,
        live: LiveHub | None = None,
    ) -> None:
        self.config = config
        # What committed changes go to (the console's push): new alarms, cancels, report counts,
        # gateways heard.
        self.live = live or LiveHub()
        self.store = store
        self.broadcasts = BroadcastStore(store)
        self.key = key
        self.metrics = metrics or Metrics()
        self.client_factory = client_factory
        self.clock = clock
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # When each gateway was last heard (loop time), and the gateways whose unconfirmed
        # downlinks go again at the pump's next pass (§6.6).
        self._heard: dict[str, float] = {}
        # Each gateway's §6.5 store state (ok, full) as last published to the consoles.
        self._store_seen: dict[str, tuple[bool, bool] | None] = {}
        self._resync: set[str] = set()
        # Each gateway's SMS modem as its last heartbeat said (§11.5): a change is logged.
        self.gateway_modems: dict[str, str] = {}

    def kick(self) -> None:
        """New pending downlinks are in the store: publish them now if connected."""
        self._wake.set()

    # -- messages, a batch at a time

    async def _keys_for(self, gws: set[str]) -> dict[str, Ed25519PublicKey]:
        """The enrolled keys of `gws` (one read, whatever the batch): a re-enrolled key
        applies from the next batch on."""
        enrolled = await self.store.public_keys(gws)
        keys: dict[str, Ed25519PublicKey] = {}
        for gw, hex_key in enrolled.items():
            cached = self._keys.get(gw)
            if cached is not None and cached[0] == hex_key:
                keys[gw] = cached[1]
                continue
            try:
                pub = load_public_hex(hex_key)
            except KeyFileError:
                log.error(kv(event="bad_enrolled_key", gw=gw))
                continue
            self._keys[gw] = (hex_key, pub)
            keys[gw] = pub
        return keys

    async def handle(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Check and apply one message; returns the acks to publish (topic, payload).
        Raises StoreError only (nothing is acked then: the gateway sends the event again)."""
        (acks,) = await self.handle_many([(topic, payload)])
        return acks

    async def handle_many(
        self, messages: Sequence[tuple[str, bytes]]
    ) -> list[list[tuple[str, bytes]]]:
        """Check and apply messages in arrival order, committing all of them in one
        transaction (group commit: one fsync for the batch); returns, per message, the acks
        to publish. A message that is refused changes nothing and gets no ack.

        Raises StoreError only, and then nothing of the batch is committed.
        """
        now = self.clock()
        items = [_Item(topic, payload) for topic, payload in messages]
        for it in items:
            try:
                it.gw, it.kind = frames.parse_topic(it.topic)
            except frames.Rejected as exc:
                it.rejected = exc
        keys = await self._keys_for({it.gw for it in items if it.rejected is None})
        to_check = [it for it in items if it.rejected is None]
        if len(to_check) >= THREAD_CHECK_FROM:
            # Ed25519 verification lets go of the GIL: in a worker thread it runs beside the
            # event loop, which meanwhile reads the next messages and answers the API.
            await asyncio.to_thread(self._check_all, to_check, keys)
        else:
            self._check_all(to_check, keys)
        await self._commit(items, now)
        out = [self._after_commit(it) for it in items]
        await self._publish(items)
        return out

    async def _publish(self, items: list[_Item]) -> None:
        """Tell the consoles what the committed batch changed: each new alarm or test press,
        and the alarm each new cancel refers to, as `GET /api/alarms/{id}` shows it."""
        refs: list[str] = []
        moved: dict[tuple[str, str], None] = {}
        for it in items:
            if it.rejected is None and it.sup is not None and it.sup.created:
                self.live.publish("device", {"event": devices.event_data(it.sup.event)})
                moved[(it.sup.event.gw, it.sup.event.device)] = None
            if it.rejected is not None or it.result is None or not it.result.created:
                continue
            ev = it.result.event
            if ev.kind == "cancel":
                if ev.ref is not None:
                    refs.append(ev.ref)
            else:
                self.live.publish("alarm", event_data(ev))
        for ref in dict.fromkeys(refs):
            # Read after the commit: the cancel may or may not have changed its state.
            alarm = await self.store.get_event(ref)
            if alarm is not None:
                self.live.publish("alarm", event_data(alarm))
        if moved:
            # The rows of the devices the batch changed, as GET /api/devices lists them.
            for gw, dev_id in moved:
                dev = await devices.get_device(self.store, gw, dev_id)
                if dev is not None:
                    self.live.publish("device", {"device": devices.device_data(dev)})

    def _check_all(self, items: list[_Item], keys: dict[str, Ed25519PublicKey]) -> None:
        """No I/O and no shared state: safe in a worker thread."""
        for it in items:
            self._check(it, keys)

    def _check(self, it: _Item, keys: dict[str, Ed25519PublicKey]) -> None:
        """Signature, then fields (§6, §8.3, §6.6); sets `it.op` or `it.rejected`."""
        try:
            gw, kind, body = frames.open_uplink(it.topic, it.payload, keys.get)
            if kind == "hb":
                it.op = frames.parse_heartbeat(body, gw)
            elif kind == "bcr":
                it.op = bcreports.parse_reports(body, gw)
            elif kind == "conf":
                it.op = confs.parse_conf(body, gw)
            elif kind == topics.SMS_REPORTS:
                it.op = contacts.parse_sms_report(body, gw)
            else:
                it.op = frames.parse_event(body, gw)
        except frames.Rejected as exc:
            it.rejected = exc
        except Exception as exc:  # a fault in the code, not in the input: this message only
            # One message must not stop the others, nor come back after every reconnect and
            # stop them again: it is refused (and PUBACKed) like bad input, with the traceback.
            log.exception(kv(event="check_failed", topic=it.topic, error=type(exc).__name__))
            it.rejected = frames.Rejected(INTERNAL_ERROR, type(exc).__name__)

    async def _commit(self, items: list[_Item], now: int) -> None:
        """Everything the batch carries, in one transaction."""
        if all(it.op is None for it in items):
            return
        events = [
            (it, it.op) for it in items
            if isinstance(it.op, NewEvent) and it.op.kind != uplink.SUPERVISION
        ]
        sups = [
            (it, it.op) for it in items
            if isinstance(it.op, NewEvent) and it.op.kind == uplink.SUPERVISION
        ]
        started = time.perf_counter()
        async with self.store.transaction() as db:
            results = await insert_events(db, [ev for _, ev in events], now)
            for (it, _), result in zip(events, results, strict=True):
                it.result = result
            if sups:
                sup_results = await devices.insert_supervision(db, [ev for _, ev in sups], now)
                for (it, _), sup_result in zip(sups, sup_results, strict=True):
                    it.sup = sup_result
            for it in items:
                op = it.op
                if isinstance(op, frames.Heartbeat):
                    if not await record_heartbeat(
                        db, op.gw, op.ts, op.outbox, op.devices, now, villages=op.villages,
                        store=op.store,
                    ):
                        it.rejected = frames.Rejected(
                            frames.REPLAY, f"heartbeat ts {op.ts} is not newer"
                        )
                    elif op.devs:
                        await devices.record_seen(db, op.gw, op.devs, now)
                elif isinstance(op, bcreports.ReportBatch):
                    try:
                        it.changed = await record_reports(db, op, now)
                    except BroadcastNotFound as exc:
                        it.rejected = frames.Rejected(bcreports.UNKNOWN_BROADCAST, str(exc))
                elif isinstance(op, confs.Conf):
                    it.changed = await confirm_acks(db, op.gw, op.acks)
                    it.changed += await self.broadcasts.confirm_copies(db, op.gw, op.bc, now)
                    it.changed += await contactpush.confirm_versions(db, op.gw, op.cl)
                elif isinstance(op, contacts.SmsReport):
                    # Imported here: centre.smsin imports this module.
                    from centre.smsin import record_gateway_sms

                    it.changed = await record_gateway_sms(db, op)
        self.metrics.prom.commit_seconds.observe(time.perf_counter() - started)

    def _after_commit(self, it: _Item) -> list[tuple[str, bytes]]:
        """Count and log one message of a committed batch; its ack, if it is an event."""
        if it.rejected is not None:
            exc = it.rejected
            self.metrics.reject(exc.reason)
            log.warning(
                kv(event="rejected", reason=exc.reason, topic=it.topic, detail=exc.detail or "-")
            )
            return []
        op = it.op
        if op is not None:
            # A gateway's heartbeat, or the confirmation it sends on connecting, says it is
            # there now: what it has not confirmed goes again (§6.6).
            self._gateway_heard(it.gw, isinstance(op, frames.Heartbeat) or (
                isinstance(op, confs.Conf) and op.empty
            ))
        if isinstance(op, frames.Heartbeat):
            self.metrics.inc("heartbeats")
            store = self._store_state(op)
            if op.modem is not None and self.gateway_modems.get(op.gw) != op.modem:
                self.gateway_modems[op.gw] = op.modem
                line = kv(event="gateway_modem", gw=op.gw, state=op.modem)
                (log.info if op.modem == "ok" else log.warning)(line)
            # The consoles' gateway health (last seen, outbox, devices) moves with each one.
            self.live.publish("gateway", {"id": op.gw, **store})
            return []
        if isinstance(op, contacts.SmsReport):
            self.metrics.inc("gateway_sms_reports")
            log.info(kv(event="gateway_sms", gw=op.gw, id=op.id, to=op.to, parts=op.parts,
                        new=it.changed))
            return []
        if isinstance(op, confs.Conf):
            self.metrics.inc("confs")
            self.metrics.inc("downlinks_confirmed", it.changed)
            if not op.empty:
                log.info(
                    kv(event="conf", gw=op.gw, acks=len(op.acks), bc=len(op.bc),
                       confirmed=it.changed)
                )
            return []
        if it.sup is not None:
            sev = it.sup.event
            if it.sup.created:
                self.metrics.inc("device_events")
                self.metrics.inc(f"device_events_{sev.what}")
                log.info(
                    kv(event="device_event", id=sev.id, what=sev.what, device=sev.device,
                       gw=sev.gw, village=sev.village, raised=sev.raised)
                )
            else:
                self.metrics.inc("duplicates")
                log.info(kv(event="duplicate", id=sev.id, what=sev.what))
            return [frames.signed_ack(self.key, sev.gw, devices.ack_body(sev))]
        if isinstance(op, bcreports.ReportBatch):
            self.metrics.inc("bc_reports")
            self.metrics.inc("bc_report_items", len(op.reports))
            log.info(
                kv(event="bc_reports", gw=op.gw, bc=op.bc, reports=len(op.reports),
                   changed=it.changed)
            )
            if it.changed:  # the console's counts of that broadcast moved
                self.live.publish("broadcast", {"id": op.bc})
            return []
        assert it.result is not None
        ev = it.result.event
        if it.result.created:
            self.metrics.inc("events")
            self.metrics.inc(f"events_{ev.kind}")
            log.info(
                kv(
                    event="stored", id=ev.id, kind=ev.kind, state=ev.state,
                    village=ev.village, household=ev.household or "-",
                )
            )
        else:
            self.metrics.inc("duplicates")
            log.info(kv(event="duplicate", id=ev.id, state=ev.state))
        return [self._ack(ev)]

    def _store_state(self, hb: frames.Heartbeat) -> dict[str, Any]:
        """§6.5 `store`: a gateway that can no longer write its store (a full disk) is logged
        once per change, and again when it recovers. Returns what the consoles' `gateway`
        change carries besides the id: `store` when it changed."""
        st = hb.store
        now = None if st is None else (st.ok, st.full)
        if self._store_seen.get(hb.gw) == now:
            return {}
        self._store_seen[hb.gw] = now
        if st is not None and not st.ok:
            log.error(kv(event="gateway_store_failing", gw=hb.gw, full=int(st.full),
                         failed=st.failed, free_bytes=st.free_bytes))
        elif st is not None:
            log.info(kv(event="gateway_store_ok", gw=hb.gw, free_bytes=st.free_bytes))
        return {"store": None if st is None else uplink.encode_store_state(st)}

    def _ack(self, ev: Event) -> tuple[str, bytes]:
        return frames.signed_ack(self.key, ev.gw, frames.ack_body(ev))

    # -- the connection

    async def run(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        tasks: list[asyncio.Task[None]] = []

        async def session(client: MqttLike) -> None:
            await client.subscribe(frames.SUB_EVENTS, qos=1)
            await client.subscribe(frames.SUB_HEARTBEATS, qos=1)
            await client.subscribe(frames.SUB_REPORTS, qos=1)
            await client.subscribe(confs.SUB_CONF, qos=1)
            await client.subscribe(topics.SUB_SMS_REPORTS, qos=1)
            self.metrics.connected = True
            self.metrics.inc("connects")
            log.info(
                kv(
                    event="broker_up",
                    broker=f"{self.config.broker_host}:{self.config.broker_port}",
                )
            )
            backoff.reset()
            # If the reader or the pump ends, so does this connection (with its error, if
            # any: the supervisor sees it), and the next one starts both again.
            inbox: asyncio.Queue[Any] = asyncio.Queue()
            pump = asyncio.create_task(self._pump(client), name="centre-downlink-pump")
            pump.add_done_callback(partial(_task_ended, inbox=inbox))
            reader = asyncio.create_task(self._read(client, inbox), name="centre-reader")
            reader.add_done_callback(partial(_task_ended, inbox=inbox))
            tasks[:] = [pump, reader]
            while True:
                batch, end = await _next_batch(inbox)
                if batch:
                    await self._on_batch(client, batch)
                if end is not None:
                    raise end

        def lost(exc: Exception, delay: float) -> None:
            if isinstance(exc, StoreError):
                # Nothing of that batch was committed and none of it was PUBACKed: the broker
                # sends it (and everything after it) again on the next connection.
                self.metrics.inc("store_errors")
                log.error(kv(event="store_failed", on="ingest", error=str(exc),
                             retry_s=f"{delay:.1f}"))
            else:
                log.warning(kv(event="broker_down", error=str(exc), retry_s=f"{delay:.1f}"))

        async def closed() -> None:
            self.metrics.connected = False
            await self._stop_tasks(*tasks)
            tasks.clear()

        await keep_connected(
            lambda: self.client_factory(self.config), session, backoff=backoff, lost=lost,
            closed=closed, ends_connection=(StoreError,),
        )

    async def _read(self, client: MqttLike, inbox: asyncio.Queue[Any]) -> None:
        # Moves whatever the client has received into `inbox` at once, so that the batch
        # loop finds there everything that arrived while it was committing the last batch.
        async for msg in client.messages():
            inbox.put_nowait(msg)

    async def _stop_tasks(self, *extra: asyncio.Task[None] | None) -> None:
        tasks = [*self._tasks, *(t for t in extra if t is not None)]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    async def _on_batch(self, client: MqttLike, batch: list[Any]) -> None:
        """Commit a batch, then publish its acks, then PUBACK its messages in arrival order
        (a refused message too: bad input must not stay in the session)."""
        acks = await self.handle_many([(m.topic, m.payload) for m in batch])
        for out in acks:
            for ack_topic, ack_payload in out:
                fut = client.publish_nowait(ack_topic, ack_payload, qos=1)
                fut.add_done_callback(self._sent)
        for msg in batch:
            client.ack(msg)
        self.metrics.inc("batches")

    def _sent(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self.metrics.inc("acks_sent")
        else:
            log.warning(kv(event="ack_not_sent", error=str(exc)))

    def _gateway_heard(self, gw: str, prompt: bool) -> None:
        now = asyncio.get_running_loop().time()
        last = self._heard.get(gw)
        self._heard[gw] = now
        if prompt or last is None or now - last >= self.config.downlink_resend_s:
            self._resync.add(gw)
            self._wake.set()

    def _online(self, gw: str, now: float) -> bool:
        last = self._heard.get(gw)
        return last is not None and now - last <= self.config.gateway_timeout_s

    async def _pump(self, client: MqttLike) -> None:
        """Publish the downlinks no gateway has confirmed yet (§6.6): each at once, then again
        when its gateway is heard again, and every `downlink_resend_s` while its gateway is
        online (a gateway that is away gets its downlinks when it is heard again, instead of a
        copy every period piling up in its broker session). A new connection starts with a
        new pass over all of them."""
        loop = asyncio.get_running_loop()
        published: dict[int, float] = {}  # downlink id -> when last published on this link
        inflight: set[int] = set()  # published, PUBACK not yet in
        resend_s = self.config.downlink_resend_s
        while True:
            self._wake.clear()
            resync, self._resync = self._resync, set()
            try:
                pending = await self.store.pending_downlinks()
            except StoreError as exc:
                log.error(kv(event="store_failed", on="pending_downlinks", error=str(exc)))
                await asyncio.sleep(1.0)
                continue
            now = loop.time()
            live = {dl.id for dl in pending}
            for dl_id in [i for i in published if i not in live]:
                del published[dl_id]  # confirmed (or expired)
            for dl in pending:
                last = published.get(dl.id)
                if dl.id in inflight or not (
                    last is None
                    or dl.gw in resync
                    or (now - last >= resend_s and self._online(dl.gw, now))
                ):
                    continue
                try:
                    fut = client.publish_nowait(dl.topic, dl.payload, qos=1)
                except MqttError as exc:  # the link is going down; all is sent after reconnect
                    log.warning(kv(event="downlink_not_sent", id=dl.event_id, error=str(exc)))
                    return
                published[dl.id] = now
                inflight.add(dl.id)
                if last is not None:
                    self.metrics.inc("downlinks_resent")
                    log.info(kv(event="downlink_resent", id=dl.event_id, gw=dl.gw,
                                kind=dl.state))
                task = asyncio.create_task(self._published(dl, fut, inflight))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, resend_s / 3)):
                    await self._wake.wait()

    async def _published(
        self, dl: Downlink, fut: asyncio.Future[None], inflight: set[int]
    ) -> None:
        """The broker's PUBACK for one downlink: a broadcast copy is then `sent`. The downlink
        stays held until its gateway confirms it."""
        try:
            await fut
        except MqttError as exc:
            log.warning(kv(event="downlink_not_sent", id=dl.event_id, error=str(exc)))
            return  # sent again after the next connect
        finally:
            inflight.discard(dl.id)
        self.metrics.inc("downlinks_sent")
        if dl.state == DOWNLINK_STATE:
            try:
                if await self.broadcasts.downlink_sent(dl.id, self.clock()):
                    self.metrics.inc("broadcast_copies_sent")
            except StoreError as exc:
                # The copy stays `pending` until its gateway confirms it, which marks it sent.
                log.error(kv(event="store_failed", on="downlink_sent", error=str(exc)))
        log.info(kv(event="downlink_sent", id=dl.event_id, gw=dl.gw, kind=dl.state))

    # -- supervision

    async def watch_gateways(self, period_s: float = 5.0) -> None:
        """Log (once per change) a gateway that has been silent longer than
        `gateway_timeout_s`, and when it is heard again; keeps `metrics.gateways_offline`."""
        silent: set[str] = set()
        while True:
            try:
                gateways = await self.store.list_gateways()
            except StoreError as exc:
                log.error(kv(event="store_failed", on="watch_gateways", error=str(exc)))
            else:
                now = self.clock()
                limit = int(self.config.gateway_timeout_s * 1000)
                for g in gateways:
                    quiet = g.last_seen is None or now - g.last_seen > limit
                    if quiet and g.id not in silent:
                        silent.add(g.id)
                        self.metrics.inc("gateway_silent")
                        log.warning(
                            kv(
                                event="gateway_silent",
                                gw=g.id,
                                last_seen=g.last_seen if g.last_seen is not None else "never",
                                timeout_s=self.config.gateway_timeout_s,
                            )
                        )
                    elif not quiet and g.id in silent:
                        silent.discard(g.id)
                        log.info(kv(event="gateway_heard", gw=g.id))
                silent &= {g.id for g in gateways}
                self.metrics.gateways_offline = len(silent)
            await asyncio.sleep(period_s)
