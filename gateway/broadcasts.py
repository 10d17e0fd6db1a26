"""Broadcasts at the gateway: from the centre, checked and stored, out to each speaker, and
every speaker's state back to the centre (protocol §8).

Nothing of a refused broadcast reaches a speaker: the centre's Ed25519 signature is checked
first, then the gateway, the fields, the expiry and the id (never accepted before). An accepted
broadcast and its per-speaker deliveries are committed before the first copy goes out, so a
restart resumes where it stopped. A speaker that is away keeps its copies waiting until it
is back or the broadcast expires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device_fw import okproto
from gateway import bcpolicy
from gateway.bcpolicy import BroadcastRejected
from gateway.bcstore import BroadcastStore, Delivery, Report
from gateway.config import GatewayConfig
from gateway.errors import StoreError
from gateway.intake import Accepted
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import Store, now_ms
from gateway.village import VillageSide, _log_failure
from protocol import broadcast, reports, topics
from protocol.signed import SignatureError, encode_json, sign_frame, verify_frame
from transport.mqtt import MqttClient, MqttError

log = logging.getLogger("onekey.gateway.broadcasts")

REPORTS_PER_MESSAGE = reports.MAX_REPORTS  # §8.3
MAX_BROADCAST_FRAME = broadcast.MAX_FRAME  # §8.1: the centre signs nothing larger
SWEEP_S = 0.25
LOCAL_PREFIX = "gwl."  # ids of the gateway's own local alerts (gateway/fallback.py)
# A copy with no word from its speaker is sent again after this long (a fresh counter; the
# speaker answers a copy of an id it has with that broadcast's state).
RESEND_S = 20.0

# A speaker not heard from for this long is away (three missed heartbeats and a margin); its
# copies wait until it is heard again. Sooner when the broker publishes its will.
OFFLINE_AFTER_MS = 200_000
PRESENCE_CHECK_S = 5.0

_Mark = tuple[str, str, str, int]  # a report in flight: broadcast, device, state, at


@dataclass(frozen=True)
class CentreOutcome:
    """What became of one broadcast message from the centre."""

    puback: bool  # done with here: the broker may forget it
    confirm: str | None  # the broadcast id to confirm to the centre (§6.6), if settled


class BroadcastSide:
    def __init__(
        self,
        cfg: GatewayConfig,
        store: Store,
        registry: Registry,
        metrics: Metrics,
        village: VillageSide,
        key: Ed25519PrivateKey,
        centre_key: Ed25519PublicKey,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.metrics = metrics
        self.village = village
        self.key = key
        self.centre_key = centre_key
        self.bcs = BroadcastStore(store)
        self.centre_client: Callable[[], MqttClient | None] = lambda: None
        self.report_topic = topics.reports(cfg.gateway_id)
        self.offline: set[str] = set()
        self.last_seen: dict[str, int] = {}
        self._presence_checked = 0.0
        self._wake = asyncio.Event()
        self._returned: set[str] = set()
        self._reporting: set[_Mark] = set()
        self._lock = asyncio.Lock()

    async def init(self) -> None:
        await self.bcs.init()
        rows = await self.bcs.store.db.execute_fetchall(
            "SELECT id, last_seen FROM devices WHERE last_seen IS NOT NULL"
        )
        self.last_seen = {str(r[0]): int(r[1]) for r in rows}

    def away(self, device: str, now: int | None = None) -> bool:
        seen = self.last_seen.get(device)
        return (
            device in self.offline
            or seen is None
            or (now if now is not None else now_ms()) - seen > OFFLINE_AFTER_MS
        )

    # -- from the centre

    async def on_centre_message(self, topic: str, payload: bytes) -> CentreOutcome:
        """Check and store a broadcast copy from the centre. Says whether the message may be
        PUBACKed (done with: stored, a repeat, or refused; not when the store failed, so the
        broker sends it again) and the id to confirm to the centre (§6.6): stored, known as a
        repeat, or refused for good; None when the centre must send it again (a bad signature:
        it may not be the centre's at all; the store failed)."""
        self.metrics.inc("bc_in")
        now = now_ms()
        parts = topic.split("/")
        body: dict[str, Any] | None = None
        try:
            try:
                body = verify_frame(self.centre_key, topic, payload, MAX_BROADCAST_FRAME)
            except SignatureError as exc:
                raise BroadcastRejected("bad_signature", f"{exc.reason}: {exc.detail}") from None
            topic_gw = parts[3] if len(parts) == 6 else ""
            bc = bcpolicy.parse_broadcast(body, self.cfg.gateway_id, topic_gw, now)
            async with self._lock:
                await self._accept(bc, now)
            return CentreOutcome(True, bc.id)
        except BroadcastRejected as exc:
            self.metrics.reject(f"bc_{exc.reason}")
            log.warning(
                "event=broadcast_rejected reason=%s detail=%r topic=%r size=%d",
                exc.reason, exc.detail[:200], topic[:100], len(payload),
            )
            bc_id = body.get("id") if body is not None else None
            settled = bc_id if isinstance(bc_id, str) and 0 < len(bc_id) <= 40 else None
            return CentreOutcome(True, settled)
        except StoreError as exc:
            # Nothing was accepted, so nothing plays; the broker and the centre send it again.
            self.metrics.inc("store_failed")
            log.error("event=store_failed on=broadcast error=%r", str(exc))
            return CentreOutcome(False, None)

    async def _accept(self, bc: bcpolicy.Broadcast, now: int) -> None:
        # A speaker provisioned a moment ago counts too (a cheap version check).
        await self.registry.reload(self.bcs.store)
        speakers = set(bcpolicy.targets(bc, self.registry.devices.values()))
        holders: list[str] = []
        if bc.msg_type != "Alert":
            # Stop the referenced broadcasts: here for copies still waiting, at the speaker for
            # copies it already holds (they get this Cancel or Update too).
            holders = await self.bcs.cancel_undelivered(bc.references, now)
            speakers |= {d for d in holders if self.registry.key_for(d) is not None}
        offline = {d for d in speakers if self.away(d, now)}
        if not await self.bcs.accept(bc, sorted(speakers), offline, now):
            raise BroadcastRejected(bcpolicy.REPLAY, f"broadcast {bc.id} was accepted before")
        self.metrics.inc("bc_accepted")
        log.info(
            "event=broadcast_accepted id=%s type=%s priority=%d speakers=%d offline=%d"
            " expires_in_s=%d sender=%r",
            bc.id, bc.msg_type, bc.priority, len(speakers), len(offline),
            (bc.expires - now) // 1000, bc.sender,
        )
        await self._send_due()
        self._wake.set()

    # -- to the speakers

    async def _send(self, deliveries: list[Delivery]) -> None:
        client = self.village.client
        if client is None or not deliveries:
            return
        sent: list[tuple[str, str]] = []
        fields: dict[str, dict[str, object] | None] = {}
        for d in deliveries:
            if d.bc not in fields:
                body = await self.bcs.body(d.bc)
                fields[d.bc] = (
                    None if body is None
                    else bcpolicy.speaker_fields(bcpolicy.from_row(body))
                )
            key = self.registry.key_for(d.device)
            f = fields[d.bc]
            if key is None or f is None:
                continue
            # ts: the speaker's clock (§8.2.1); the counter is for replay only, not a time.
            copy = {**f, "ts": now_ms()}
            topic, payload = okproto.encode_bc(key, d.device, self.village.next_counter(), copy)
            try:
                client.publish_nowait(topic, payload, qos=1).add_done_callback(_log_failure)
            except MqttError:
                break
            sent.append((d.bc, d.device))
        if sent:
            self.metrics.inc("bc_copies_out", len(sent))
            await self.bcs.mark_sent(sent, now_ms())
            self._wake.set()

    async def _send_due(self) -> None:
        now = now_ms()
        due = await self.bcs.to_send(now, now - int(RESEND_S * 1000))
        resends = sum(1 for d in due if d.sent_at is not None)
        if resends:
            self.metrics.inc("bc_resends", resends)
        await self._send([d for d in due if not self.away(d.device, now)])

    # -- speaker presence and reports (called by the village side)

    def device_seen(self, device: str) -> None:
        now = now_ms()
        was_away = self.away(device, now)
        self.last_seen[device] = now
        self.offline.discard(device)
        if was_away:
            dev = self.registry.devices.get(device)
            if dev is not None and dev.role == "speaker":
                self._returned.add(device)
                log.info("event=speaker_back device=%s", device)
                self._wake.set()

    def device_offline(self, device: str) -> None:
        dev = self.registry.devices.get(device)
        if dev is None or dev.role != "speaker":
            return
        self.offline.add(device)
        self._returned.discard(device)
        fut = self.bcs.mark_offline(device, now_ms())
        fut.add_done_callback(lambda f: self._wake.set())

    async def on_report(self, acc: Accepted) -> None:
        bc_id, state = str(acc.body["id"]), str(acc.body["s"])
        if bc_id.startswith(LOCAL_PREFIX):
            # A local alert this gateway made while cut off (gateway/fallback.py): nothing to
            # report to the centre, which never sent it.
            self.metrics.inc(f"local_alert_{state}")
            log.info("event=local_alert_report device=%s bc=%s state=%s", acc.device.id, bc_id, state)
            return
        current = await self.bcs.delivery_state(bc_id, acc.device.id)
        if current is None:
            self.metrics.reject("bcr_unknown")
            log.warning("event=report_rejected reason=unknown_broadcast device=%s bc=%s",
                        acc.device.id, bc_id)
            return
        self.metrics.inc(f"bcr_{state}")
        try:
            await self.bcs.set_state(bc_id, acc.device.id, state, now_ms())
        except StoreError as exc:
            log.error("event=store_failed on=report device=%s error=%r", acc.device.id, str(exc))
            return
        log.info("event=speaker_report device=%s bc=%s state=%s why=%r",
                 acc.device.id, bc_id, state, acc.body.get("why"))
        self._wake.set()

    # -- the loop: returning speakers, expiry, resends, reports

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._check_presence()
                while self._returned:
                    dev = self._returned.pop()
                    await self._send(await self.bcs.to_send(now_ms(), 0, dev))
                expired = await self.bcs.expire_due(now_ms())
                if expired:
                    self.metrics.inc("bc_expired_undelivered", expired)
                    log.info("event=broadcast_expired_undelivered copies=%d", expired)
                await self._send_due()
                await self._report()
            except StoreError as exc:
                log.error("event=store_failed on=broadcast_sweep error=%r", str(exc))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=SWEEP_S)
            except TimeoutError:
                pass

    def _check_presence(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._presence_checked < PRESENCE_CHECK_S:
            return
        self._presence_checked = loop_now
        now = now_ms()
        for device, seen in list(self.last_seen.items()):
            if device not in self.offline and now - seen > OFFLINE_AFTER_MS:
                log.info("event=speaker_silent device=%s silent_s=%d", device, (now - seen) // 1000)
                self.device_offline(device)

    async def _report(self) -> None:
        client = self.centre_client()
        if client is None:
            return
        unreported = [
            r for r in await self.bcs.unreported(2000)
            if (r.bc, r.device, r.state, r.at) not in self._reporting
        ]
        for bc_id, group in groupby(unreported, key=lambda r: r.bc):
            items = list(group)
            wire = [reports.Report(r.device, r.state, r.at) for r in items]
            i = 0
            for batch in reports.batches(self.cfg.gateway_id, bc_id, wire):
                chunk, i = items[i : i + len(batch.reports)], i + len(batch.reports)
                payload = sign_frame(self.key, self.report_topic, encode_json(reports.encode(batch)))
                try:
                    fut = client.publish_nowait(self.report_topic, payload, qos=1)
                except MqttError:
                    return
                marks = {(r.bc, r.device, r.state, r.at) for r in chunk}
                self._reporting |= marks
                fut.add_done_callback(partial(self._reported, chunk=chunk, marks=marks))
                self.metrics.inc("bc_reports_out", len(chunk))

    def _reported(
        self, fut: asyncio.Future[None], *, chunk: list[Report], marks: set[_Mark]
    ) -> None:
        self._reporting -= marks
        if fut.cancelled() or fut.exception() is not None:
            return  # stays unreported: the next sweep sends it again
        self.bcs.mark_reported(chunk).add_done_callback(_log_failure)

    async def stats(self) -> dict[str, int]:
        return await self.bcs.counts()

