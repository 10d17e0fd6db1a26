"""Broadcast test helpers: a stand-in for the centre's broadcast sender on the real centre broker.

It connects as a second centre service login (`svc-centre-test`: the broker's ACL lets it
write the gateways' down topics; the centre's own login `centre` stays the running centre's,
because the broker makes the client id the certificate's name), signs broadcasts with the
centre's key or with any other key, and collects the gateway's signed reports from
`ok/v1/gw/+/up/bcr`, checking each signature.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.stack import HOST, LocalStack
from protocol.signed import encode_json, sign_frame, verify_frame
from transport import pki
from transport.keys import load_private_key
from transport.mqtt import MqttClient, MqttError, TlsFiles

STAND_IN = "svc-centre-test"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def broadcast(
    gw: str,
    village: str,
    *,
    text: str = "村委会通知：明天上午九点在村部开会。",
    severity: str = "Minor",
    urgency: str = "Expected",
    valid_s: float = 600,
    bc_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid §8.1 broadcast body for one gateway; keyword arguments override fields."""
    now = now_ms()
    body: dict[str, Any] = {
        "id": bc_id or f"bc-{uuid.uuid4().hex[:16]}",
        "gw": gw,
        "sender": "centre-test/staff-1",
        "sent": now,
        "status": "Actual",
        "msgType": "Alert",
        "references": [],
        "urgency": urgency,
        "severity": severity,
        "certainty": "Observed",
        "expires": now + int(valid_s * 1000),
        "area": [{"village": village, "groups": [], "speakers": []}],
        "language": "zh-CN",
        "text": text,
        "repeat": 1,
    }
    body.update(extra)
    return body


class CentreStandIn:
    def __init__(self, stack: LocalStack) -> None:
        assert stack.centre_tls is not None and stack.centre_broker is not None
        tls = pki.issue_client(pki.create_ca(stack.pki_dir), stack.pki_dir, STAND_IN)
        self.stack = stack
        self.key: Ed25519PrivateKey = load_private_key(stack.centre_dir / "centre.key")
        self.gw_pub = load_private_key(stack.gateway_dir / "gateway.key").public_key()
        self.client = MqttClient(
            f"centre-test-{uuid.uuid4().hex[:6]}",
            HOST,
            stack.centre_broker.port,
            tls=TlsFiles(ca=tls.ca, cert=tls.cert, key=tls.key),
        )
        # (broadcast id, device) -> list of states in arrival order
        self.reports: dict[tuple[str, str], list[str]] = {}
        self.bad_reports = 0
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CentreStandIn:
        broker = self.stack.centre_broker
        assert broker is not None
        if STAND_IN not in broker.centre_users:
            broker.write_acl([*broker.centre_users, STAND_IN])
            await asyncio.to_thread(broker.reload)
        await self.client.connect()
        await self.client.subscribe(f"ok/v1/gw/{self.stack.gateway_id}/up/bcr", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.client.disconnect()

    async def _read(self) -> None:
        try:
            async for msg in self.client.messages():
                try:
                    body = verify_frame(self.gw_pub, msg.topic, msg.payload)
                except Exception:
                    self.bad_reports += 1
                    continue
                for r in body["reports"]:
                    self.reports.setdefault((body["bc"], r["device"]), []).append(r["s"])
                self._changed.set()
        except MqttError:
            pass

    def topic(self, gw: str | None = None) -> str:
        return f"ok/v1/gw/{gw or self.stack.gateway_id}/down/bc"

    def sign(
        self, body: dict[str, Any], topic: str | None = None, key: Ed25519PrivateKey | None = None
    ) -> bytes:
        return sign_frame(key or self.key, topic or self.topic(), encode_json(body))

    async def send(self, body: dict[str, Any]) -> bytes:
        payload = self.sign(body)
        await self.client.publish(self.topic(), payload, qos=1)
        return payload

    async def publish_raw(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=1)

    def state(self, bc_id: str, device: str) -> str | None:
        states = self.reports.get((bc_id, device))
        return states[-1] if states else None

    async def wait_states(self, bc_id: str, want: dict[str, str], timeout: float = 15.0) -> None:
        """Until every device's latest reported state for `bc_id` is the wanted one."""
        deadline = time.monotonic() + timeout
        while any(self.state(bc_id, d) != s for d, s in want.items()):
            left = deadline - time.monotonic()
            if left <= 0:
                got = {d: self.reports.get((bc_id, d)) for d in want}
                raise TimeoutError(f"{bc_id}: wanted {want}, reports so far {got}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.5))
            except TimeoutError:
                pass
