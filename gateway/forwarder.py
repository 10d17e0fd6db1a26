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
from onekey.mqtt import Message, MqttClient, MqttError, TlsFiles
from onekey.signing import SignatureError, encode_json, sign_frame, verify_frame

log = logging.getLogger("onekey.gateway.forwarder")


@dataclass
class _InFlight:
    seq: int
    sent_at: float


def event_id(gateway_id: str, device: str, counter: int) -> str:
    return f"{gateway_id}:{device}:{counter}"


def event_body(gateway_id: str, ev: StoredEvent) -> dict[str, object]:
    r = ev.record
    body: dict[str, object] = {
        "id": event_id(gateway_id, r.device, r.counter),
        "gw": gateway_id,
        "seq": ev.seq,
        "kind": r.kind,
        "device": r.device,
        "counter": r.counter,
        "village": r.village,
        "household": r.household,
        "gw_ts": r.gw_ts,
    }
    if r.ref is not None:
        body["ref"] = event_id(gateway_id, r.device, r.ref)
    if r.dev_ts is not None:
        body["dev_ts"] = r.dev_ts
    if r.dev_up is not None:
        body["dev_up"] = r.dev_up
    return body


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
        self.up_topic = f"ok/v1/gw/{gw}/up/event"
        self.hb_topic = f"ok/v1/gw/{gw}/up/hb"
        self.down_topic = f"ok/v1/gw/{gw}/down/ack"
        self.bc_topic = f"ok/v1/gw/{gw}/down/bc"
        self.on_broadcast: Callable[[str, bytes], Awaitable[None]] | None = None
        store.stored_listeners.append(self._wake.set)

    async def run(self) -> None:
        delay = 0.5
        cb = self.cfg.centre_broker
        while True:
            client = MqttClient(
                self.cfg.gateway_id,  # = the certificate's CN, which the broker makes the id (§6)
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
            body = verify_frame(self.centre_key, msg.topic, msg.payload)
        except SignatureError as exc:
            self.metrics.reject(f"centre_{exc.reason}")
            log.warning("event=centre_ack_rejected reason=%s detail=%r", exc.reason, exc.detail)
            return
        eid, state = body.get("id"), body.get("s")
        parts = eid.split(":") if isinstance(eid, str) else []
        if (
            len(parts) != 3
            or parts[0] != self.cfg.gateway_id
            or not parts[2].isdigit()
            or state not in ("received", "acked")
        ):
            self.metrics.reject("centre_bad_field")
            log.warning("event=centre_ack_rejected reason=bad_field body=%r", body)
            return
        device, counter = parts[1], int(parts[2])
        by = body.get("by") if isinstance(body.get("by"), str) else None
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
                body = {
                    "gw": self.cfg.gateway_id,
                    "ts": now_ms(),
                    "outbox": depth,
                    "devices": len(self.registry.devices),
                    # The villages this gateway serves, so the centre can route broadcasts.
                    "villages": sorted(
                        {self.cfg.village} | {d.village for d in self.registry.devices.values()}
                    ),
                }
                payload = sign_frame(self.key, self.hb_topic, encode_json(body))
                try:
                    client.publish_nowait(self.hb_topic, payload, qos=0).add_done_callback(
                        _log_failure
                    )
                except MqttError:
                    pass
            await asyncio.sleep(self.cfg.heartbeat_s)
