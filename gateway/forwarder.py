"""The centre side: forwards the outbox, signed, in order; relays the centre's acks.

An event leaves the outbox only when the centre's signed `received` ack for its id arrives
(§6.3). Up to `forward_window` events are in flight; anything unconfirmed after
`resend_after_s` is sent again from the oldest, in order. The centre deduplicates by id.

What the centre sends down that carries state (a staff `acked` ack, a broadcast copy) is
confirmed on `up/conf` once it is committed here, or known as a repeat, or refused for good
for a reason other than a bad signature (§6.6); the centre holds it until then and sends it
again. An empty confirmation right after each connect tells the centre we are there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.broadcasts import CentreOutcome
from gateway.config import GatewayConfig
from gateway.contactlist import Outcome as ContactsOutcome
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import Store, StoredEvent, now_ms
from gateway.village import VillageSide, _log_failure
from protocol import acks, topics, uplink
from protocol.errors import Rejected
from protocol.signed import encode_json, sign_frame
from transport.mqtt import Message, MqttClient, MqttError, TlsFiles
from transport.pubacks import PubackOrder
from transport.reconnect import Backoff, keep_connected

log = logging.getLogger("onekey.gateway.forwarder")


# Confirmations per message (§6.6): at most 200 items; 100 ids of the longest kind (32-character
# gateway and device ids, a 16-digit counter) keep the body near 10 KB, well below the centre
# broker's packet limit.
# A batch of centre acks this large has its signatures checked in a worker thread.
THREAD_VERIFY_FROM = 8


@dataclass
class _InFlight:
    seq: int
    sent_at: float


def event_body(gateway_id: str, ev: StoredEvent) -> dict[str, object]:
    """The §6.2 body of a stored event."""
    r = ev.record
    # A supervision event keeps its `sup` object as the link's codec wrote it (§6.2.1).
    sup = None if r.detail is None else uplink.parse_supervision(json.loads(r.detail))
    return uplink.encode_event(
        uplink.new_event(
            gateway_id, ev.seq, r.kind, r.device, r.counter,
            village=r.village, household=r.household, gw_ts=r.gw_ts,
            ref_counter=r.ref, dev_ts=r.dev_ts, dev_up=r.dev_up, sup=sup,
        )
    )


class CentreSide:
    def __init__(
        self,
        cfg: GatewayConfig,
        store: Store,
        registry: Registry,
        metrics: Metrics,
        key: Ed25519PrivateKey,
        centre_key: Ed25519PublicKey,
        village: VillageSide,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.key = key
        self.centre_key = centre_key
        self.village = village
        self.client: MqttClient | None = None
        self._wake = asyncio.Event()
        self._inflight: dict[str, _InFlight] = {}
        self._last_sent = 0
        gw = cfg.gateway_id
        self.up_topic = topics.event(gw)
        self.hb_topic = topics.heartbeat(gw)
        self.down_topic = topics.ack(gw)
        self.bc_topic = topics.broadcast(gw)
        self.conf_topic = topics.confirmations(gw)
        self.contacts_topic = topics.contacts(gw)
        # When the link went down (monotonic), None while it is up: the second path's clock.
        # Down from the start until the first connection.
        self.down_since: float | None = time.monotonic()
        # The contact list from the centre (§11), and the modem's state for the heartbeat
        # (§6.5; None: no modem configured).
        self.on_contacts: Callable[[str, bytes], Awaitable[ContactsOutcome]] | None = None
        self.modem_state: Callable[[], str | None] = lambda: None
        self.contacts_version: Callable[[], int] = lambda: 0
        # Takes a broadcast from the centre; returns its id once it is settled here (stored,
        # a repeat, or refused for good), None if the centre must send it again.
        self.on_broadcast: Callable[[str, bytes], Awaitable[CentreOutcome]] | None = None
        self._conf_acks: list[tuple[str, str]] = []
        self._conf_bc: list[str] = []
        self._conf_cl: list[int] = []
        # Centre acks taken from the message loop and not yet handed to the store (_on_ack).
        self._acks_in: list[tuple[Message, asyncio.Future[bool]]] = []
        self._acks_tail: asyncio.Task[None] | None = None
        self._ack_tasks: set[asyncio.Task[None]] = set()
        store.stored_listeners.append(self._wake.set)
        # §6.5: a change in whether the store can be written goes to the centre at once.
        self._hb_wake = asyncio.Event()
        store.health_listeners.append(self._hb_wake.set)

    async def run(self) -> None:
        cb = self.cfg.centre_broker
        backoff = Backoff(0.5, 60.0)
        pump: asyncio.Task[None] | None = None

        def make_client() -> MqttClient:
            return MqttClient(
                self.cfg.gateway_id,  # = the certificate's CN, which the broker makes the id (§6)
                cb.host,
                cb.port,
                tls=TlsFiles(ca=cb.ca, cert=cb.cert, key=cb.key),
                clean_session=False,  # centre acks wait at the broker while we are away
                keepalive=30,
                max_inflight=max(20, self.cfg.forward_window),
                manual_ack=True,  # PUBACK a centre message only once it is committed here
            )

        async def session(client: MqttClient) -> None:
            nonlocal pump
            order = PubackOrder(client, partial(self._drop_link, client))
            await client.subscribe(self.down_topic, qos=1)
            await client.subscribe(self.bc_topic, qos=1)
            if self.on_contacts is not None:
                await client.subscribe(self.contacts_topic, qos=1)
            self.client = client
            self.down_since = None
            # §6.6: here now, send what I lack; with the contact-list version held (§11), so
            # that a centre whose list is newer sends it.
            held = self.contacts_version()
            self._publish_conf(client, [], [], [held] if held else [])
            self.metrics.gauge("centre_link", "up")
            self._hb_wake.set()  # a heartbeat at once: the centre learns our state now
            log.info("event=centre_link_up broker=%s:%d", cb.host, cb.port)
            backoff.reset()
            self._inflight.clear()
            self._last_sent = 0
            pump = asyncio.create_task(self._pump(client), name="gateway-forward-pump")
            async for msg in client.messages():
                if msg.topic == self.bc_topic:
                    if self.on_broadcast is None:
                        continue  # not subscribed without a handler; nothing to PUBACK
                    outcome = await self.on_broadcast(msg.topic, msg.payload)
                    if outcome.confirm is not None:
                        self.confirm(bc=[outcome.confirm])
                    order.add(msg, _settled(outcome.puback))
                elif msg.topic == self.contacts_topic:
                    if self.on_contacts is None:
                        continue
                    got = await self.on_contacts(msg.topic, msg.payload)
                    if got.confirm is not None:
                        self.confirm(cl=[got.confirm])
                    order.add(msg, _settled(got.puback))
                else:
                    # Committed in the background, in order (see there); PUBACKed then.
                    order.add(msg, self._on_ack(msg))

        def lost(exc: Exception, _delay: float) -> None:
            log.warning(
                "event=centre_link_down broker=%s:%d error=%r outbox=%d inflight=%d",
                cb.host, cb.port, str(exc), self.store.outbox_count, len(self._inflight),
            )

        async def closed() -> None:
            nonlocal pump
            self.client = None
            if self.down_since is None:
                self.down_since = time.monotonic()
            self.metrics.gauge("centre_link", "down")
            if pump is not None:
                pump.cancel()
                try:
                    await pump
                except (asyncio.CancelledError, MqttError):
                    pass
                pump = None

        await keep_connected(make_client, session, backoff=backoff, lost=lost, closed=closed)

    def _drop_link(self, client: MqttClient) -> None:
        """A centre message was not committed: end this connection without acknowledging it,
        so that the broker sends it again, in order, when we reconnect."""
        log.warning("event=centre_link_reset reason=write_failed")
        self.metrics.inc("centre_link_resets")
        task = asyncio.get_running_loop().create_task(client.disconnect())
        self._ack_tasks.add(task)
        task.add_done_callback(self._ack_tasks.discard)

    # -- outbox pump

    async def _pump(self, client: MqttClient) -> None:
        window = self.cfg.forward_window
        while True:
            self._wake.clear()
            room = window - len(self._inflight)
            if room > 0:
                events = await self.store.outbox(self._last_sent, room)
                for ev in events:
                    self._send(client, ev)
            self._resend_if_stale()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)
            except TimeoutError:
                pass

    def _send(self, client: MqttClient, ev: StoredEvent) -> None:
        body = event_body(self.cfg.gateway_id, ev)
        payload = sign_frame(self.key, self.up_topic, encode_json(body))
        fut = client.publish_nowait(self.up_topic, payload, qos=1)
        fut.add_done_callback(_log_failure)
        eid = str(body["id"])
        self._inflight[eid] = _InFlight(ev.seq, time.monotonic())
        self._last_sent = ev.seq
        self.metrics.inc("forwarded")

    def _resend_if_stale(self) -> None:
        if not self._inflight:
            return
        oldest = min(self._inflight.values(), key=lambda f: f.seq)
        if time.monotonic() - oldest.sent_at < self.cfg.resend_after_s:
            return
        log.warning(
            "event=resend reason=no_centre_ack from_seq=%d inflight=%d",
            oldest.seq, len(self._inflight),
        )
        self.metrics.inc("resends")
        self._last_sent = oldest.seq - 1
        self._inflight.clear()

    # -- acks from the centre

    def _on_ack(self, msg: Message) -> asyncio.Future[bool]:
        """Take a centre ack (§6.4): its signature is checked, its state change queued in the
        store's group commit, and the device told, while the message loop goes on with the
        next messages, so a burst of acks costs a few commits, not one each. Returns a future:
        True once the state is committed and relayed (or the message is refused as bad input),
        False if it was not committed (nothing is confirmed then: the centre sends it again).
        PUBACK the message once it is done, in arrival order (a refused message is done at
        once, a committed one when its commit is: wait on each in turn)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._acks_in.append((msg, done))
        if len(self._acks_in) == 1:
            loop.call_soon(self._take_acks)  # whatever arrives in this turn goes with it
        return done

    def _take_acks(self) -> None:
        batch, self._acks_in = self._acks_in, []
        task = asyncio.get_running_loop().create_task(self._check_acks(batch, self._acks_tail))
        self._acks_tail = task
        self._ack_tasks.add(task)
        task.add_done_callback(self._acks_taken)

    def _acks_taken(self, task: asyncio.Task[None]) -> None:
        self._ack_tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:  # its acks were not committed: the centre sends them again
            log.error("event=centre_acks_failed error=%r", exc, exc_info=exc)

    async def _check_acks(
        self, batch: list[tuple[Message, asyncio.Future[bool]]], previous: asyncio.Task[None] | None
    ) -> None:
        applied = 0
        try:
            msgs = [m for m, _ in batch]
            if len(msgs) >= THREAD_VERIFY_FROM:
                # Ed25519 verification lets go of the GIL: in a worker thread it runs beside
                # the loop, which meanwhile forwards events and reads the next messages.
                bodies = await asyncio.to_thread(self._verify_all, msgs)
            else:
                bodies = self._verify_all(msgs)
            if previous is not None:
                await asyncio.wait([previous])  # the batch before goes to the store first
            for (_msg, done), body in zip(batch, bodies, strict=True):
                self._apply_ack(body, done)
                applied += 1
        finally:
            for _msg, done in batch[applied:]:
                if not done.done():  # cancelled, or a fault above: the centre sends it again
                    done.set_result(False)

    def _verify_all(self, msgs: list[Message]) -> list[acks.Ack | Rejected]:
        """Signature and fields (§6.4, the link's codec). No shared state: safe in a worker
        thread."""
        out: list[acks.Ack | Rejected] = []
        for msg in msgs:
            try:
                out.append(acks.open_ack(self.centre_key, self.cfg.gateway_id, msg.topic, msg.payload))
            except Rejected as exc:
                out.append(exc)
        return out

    def _apply_ack(self, ack: acks.Ack | Rejected, done: asyncio.Future[bool]) -> None:
        if isinstance(ack, Rejected):
            self.metrics.reject(f"centre_{ack.reason}")
            log.warning("event=centre_ack_rejected reason=%s detail=%r", ack.reason, ack.detail)
            done.set_result(True)
            return
        eid, state, device, counter, by = ack.id, ack.state, ack.device, ack.counter, ack.by
        fut = self.store.advance_state(device, counter, str(state), acked_by=by)
        fut.add_done_callback(
            partial(self._ack_committed, eid=eid, state=state, by=by, done=done)
        )

    def _ack_committed(
        self, fut: asyncio.Future[bool], *, eid: str, state: str, by: str | None,
        done: asyncio.Future[bool],
    ) -> None:
        if done.done():
            return
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            # Not confirmed: the centre sends it again (an `acked` until we confirm it, §6.6;
            # a `received` when the event is forwarded again).
            why = str(exc) if isinstance(exc, StoreError) else repr(exc)
            log.error("event=store_failed on=centre_ack id=%s error=%r", eid, why)
            done.set_result(False)
            return
        moved = fut.result()
        if self._inflight.pop(eid, None) is not None:
            self._wake.set()
        if state == "acked":
            # Committed, or already this far (a repeat): the centre may let it go. A `received`
            # needs no confirmation: the outbox sends the event until it gets one.
            self.confirm(acks=[(eid, "acked")])
        if moved:
            _gw, device, counter = eid.split(":")
            self.metrics.inc(f"centre_{state}")
            log.info("event=centre_%s id=%s by=%r", state, eid, by)
            self.village.send_ack(device, int(counter), state, by=by)
        done.set_result(True)

    # -- confirmations to the centre (§6.6)

    def confirm(
        self, acks: list[tuple[str, str]] | None = None, bc: list[str] | None = None,
        cl: list[int] | None = None,
    ) -> None:
        """Queue confirmations; they go out together at the end of this turn of the loop."""
        first = not self._conf_acks and not self._conf_bc and not self._conf_cl
        self._conf_acks += acks or []
        self._conf_bc += bc or []
        self._conf_cl += cl or []
        if first and (self._conf_acks or self._conf_bc or self._conf_cl):
            asyncio.get_running_loop().call_soon(self._flush_conf)

    def _flush_conf(self) -> None:
        pending_acks, pending_bc, pending_cl = self._conf_acks, self._conf_bc, self._conf_cl
        self._conf_acks, self._conf_bc, self._conf_cl = [], [], []
        client = self.client
        if client is None:
            return  # the centre sends them again when we are back, and we confirm then
        if pending_cl and not self._publish_conf(client, [], [], sorted(set(pending_cl))):
            return
        # The link's codec splits them into messages that fit (§6.6).
        for conf in uplink.confirmations(self.cfg.gateway_id, now_ms(), pending_acks, pending_bc):
            if not self._publish_conf(client, list(conf.acks), list(conf.bc)):
                return  # lost with the link: the centre sends again, we confirm again

    def _publish_conf(
        self, client: MqttClient, acked: list[tuple[str, str]], bcs: list[str],
        cl: list[int] | None = None,
    ) -> bool:
        conf = uplink.Confirmation(
            self.cfg.gateway_id, now_ms(), tuple(acked), tuple(bcs), tuple(cl or ())
        )
        payload = sign_frame(self.key, self.conf_topic, encode_json(uplink.encode_confirmation(conf)))
        try:
            client.publish_nowait(self.conf_topic, payload, qos=1).add_done_callback(_log_failure)
        except MqttError:
            return False
        self.metrics.inc("confs_out")
        return True

    # -- supervision

    async def heartbeat(self) -> None:
        while True:
            self._hb_wake.clear()
            client = self.client
            if client is not None:
                depth = self.store.outbox_count  # exact, kept by the store on every commit
                health = self.store.health
                body = uplink.encode_heartbeat(
                    uplink.Heartbeat(
                        self.cfg.gateway_id,
                        now_ms(),
                        depth,
                        len(self.registry.devices),
                        # The villages this gateway serves, so the centre can route broadcasts.
                        tuple(sorted(
                            {self.cfg.village} | {d.village for d in self.registry.devices.values()}
                        )),
                        # When its devices were last heard, some at a time (§6.5, supervision).
                        None if self.village.supervisor is None
                        else self.village.supervisor.seen_batch(),
                        # Not stored, so it goes out also when the disk is full.
                        uplink.StoreState(
                            health.ok, health.full, health.failed, self.store.free_bytes()
                        ),
                        self.modem_state(),
                    )
                )
                payload = sign_frame(self.key, self.hb_topic, encode_json(body))
                try:
                    client.publish_nowait(self.hb_topic, payload, qos=0).add_done_callback(
                        _log_failure
                    )
                except MqttError:
                    pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hb_wake.wait(), self.cfg.heartbeat_s)


def _settled(ok: bool) -> asyncio.Future[bool]:
    fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    fut.set_result(ok)
    return fut
