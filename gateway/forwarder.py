"""The centre side: forwards the outbox, signed, in order; relays the centre's acks.

An event leaves the outbox only when the centre's signed `received` ack for its id arrives
(§6.3). Up to `forward_window` events are in flight; anything unconfirmed after
`resend_after_s` is sent again from the oldest, in order. The centre deduplicates by id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.config import GatewayConfig
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import Store, StoredEvent, now_ms
from gateway.village import VillageSide, _log_failure
from protocol import acks, topics, uplink
from protocol.errors import Rejected
from protocol.signed import encode_json, sign_frame
from transport.mqtt import Message, MqttClient, MqttError, TlsFiles

log = logging.getLogger("onekey.gateway.forwarder")


@dataclass
class _InFlight:
    seq: int
    sent_at: float


def event_body(gateway_id: str, ev: StoredEvent) -> dict[str, object]:
    """The §6.2 body of a stored event."""
    r = ev.record
    return uplink.encode_event(
        uplink.new_event(
            gateway_id, ev.seq, r.kind, r.device, r.counter,
            village=r.village, household=r.household, gw_ts=r.gw_ts,
            ref_counter=r.ref, dev_ts=r.dev_ts, dev_up=r.dev_up,
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
        self.on_broadcast: Callable[[str, bytes], Awaitable[None]] | None = None
        store.stored_listeners.append(self._wake.set)

    async def run(self) -> None:
        delay = 0.5
        cb = self.cfg.centre_broker
        while True:
            client = MqttClient(
                f"onekey-gw-{self.cfg.gateway_id}",
                cb.host,
                cb.port,
                tls=TlsFiles(ca=cb.ca, cert=cb.cert, key=cb.key),
                clean_session=False,  # centre acks wait at the broker while we are away
                keepalive=30,
                max_inflight=max(20, self.cfg.forward_window),
            )
            pump: asyncio.Task[None] | None = None
            try:
                await client.connect()
                await client.subscribe(self.down_topic, qos=1)
                await client.subscribe(self.bc_topic, qos=1)
                self.client = client
                self.metrics.gauge("centre_link", "up")
                log.info("event=centre_link_up broker=%s:%d", cb.host, cb.port)
                delay = 0.5
                self._inflight.clear()
                self._last_sent = 0
                pump = asyncio.create_task(self._pump(client), name="gateway-forward-pump")
                async for msg in client.messages():
                    if msg.topic == self.bc_topic:
                        if self.on_broadcast is not None:
                            await self.on_broadcast(msg.topic, msg.payload)
                    else:
                        await self._on_ack(msg)
            except MqttError as exc:
                log.warning(
                    "event=centre_link_down broker=%s:%d error=%r outbox=%d",
                    cb.host, cb.port, str(exc), len(self._inflight),
                )
            finally:
                self.client = None
                self.metrics.gauge("centre_link", "down")
                if pump is not None:
                    pump.cancel()
                    try:
                        await pump
                    except (asyncio.CancelledError, MqttError):
                        pass
                await client.disconnect()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 60.0)

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

    async def _on_ack(self, msg: Message) -> None:
        try:
            ack = acks.open_ack(self.centre_key, self.cfg.gateway_id, msg.topic, msg.payload)
        except Rejected as exc:
            self.metrics.reject(f"centre_{exc.reason}")
            log.warning("event=centre_ack_rejected reason=%s detail=%r", exc.reason, exc.detail)
            return
        eid, state, device, counter, by = ack.id, ack.state, ack.device, ack.counter, ack.by
        try:
            moved = await self.store.advance_state(device, counter, str(state), acked_by=by)
        except StoreError as exc:
            log.error("event=store_failed on=centre_ack id=%s error=%r", eid, str(exc))
            return
        if self._inflight.pop(str(eid), None) is not None:
            self._wake.set()
        if moved:
            self.metrics.inc(f"centre_{state}")
            log.info("event=centre_%s id=%s by=%r", state, eid, by)
            self.village.send_ack(device, counter, str(state), by=by)

    # -- supervision

    async def heartbeat(self) -> None:
        while True:
            client = self.client
            if client is not None:
                try:
                    depth = await self.store.outbox_depth()
                except StoreError:
                    depth = -1
                self.metrics.gauge("outbox", depth)
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
                    )
                )
                payload = sign_frame(self.key, self.hb_topic, encode_json(body))
                try:
                    client.publish_nowait(self.hb_topic, payload, qos=0).add_done_callback(
                        _log_failure
                    )
                except MqttError:
                    pass
            await asyncio.sleep(self.cfg.heartbeat_s)
