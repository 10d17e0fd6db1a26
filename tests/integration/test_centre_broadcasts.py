"""Broadcasts through a real centre broker (Mosquitto, TLS, client certificates): the test
plays the gateway. It receives the centre's signed copy on `ok/v1/gw/{gw}/down/bc`, checks the
signature with the centre's public key, answers with signed speaker reports, and sees them in
the API; a broadcast posted while the broker is down arrives once the broker is back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.fakegateway import signed_conf, signed_reports
from onekey.cli import main
from tests import centre_site
from tests.centre_site import GW, Site, centre_running, connected, next_signed, open_site, poll
from transport.mqtt import MqttClient

pytestmark = pytest.mark.integration

BC_TOPIC = f"ok/v1/gw/{GW}/down/bc"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with open_site(tmp_path, villages=["v-xiaocun"], fast_reconnect=True) as s:
        yield s


def gateway(site: Site, persistent: bool = False) -> contextlib.AbstractAsyncContextManager[MqttClient]:
    return centre_site.gateway(site, BC_TOPIC, persistent)


async def next_broadcast(site: Site, client: MqttClient, within: float = 10.0) -> dict[str, Any]:
    """The next copy; confirmed (§6.6) as a gateway does once it has stored it."""
    copy = await next_signed(site, client, BC_TOPIC, within)
    await client.publish(*signed_conf(site.gw_key, GW, bc=[copy["id"]]), qos=1)
    return copy


def broadcast(**kw: Any) -> dict[str, Any]:
    return {
        "by": "Li Wei",
        "urgency": "Immediate",
        "severity": "Extreme",
        "certainty": "Observed",
        "valid_for_s": 600,
        "area": [{"village": "v-xiaocun"}],
        "text": "山洪预警：请立即撤离到安全地带。",
        "clip": "siren",
        "confirm_extreme": True,  # Extreme to a whole village: staff confirm it
        **kw,
    }


async def test_a_broadcast_reaches_the_gateway_signed_and_its_reports_come_back(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with centre_running(site.config) as http, gateway(site) as gw:
        r = await http.post("/api/broadcasts", json=broadcast())
        assert r.status_code == 201, r.text
        bc_id = r.json()["id"]
        copy = await next_broadcast(site, gw)
        assert (copy["id"], copy["gw"], copy["msgType"], copy["severity"], copy["clip"]) == (
            bc_id, GW, "Alert", "Extreme", "siren"
        )
        assert copy["area"] == [{"village": "v-xiaocun", "groups": [], "speakers": []}]
        assert copy["text"] == "山洪预警：请立即撤离到安全地带。"

        at = copy["sent"]
        await gw.publish(*signed_reports(site.gw_key, GW, bc_id, [
            ("spk-1", "queued", at + 10), ("spk-2", "queued", at + 10),
            ("spk-1", "received", at + 50), ("spk-1", "playing", at + 60),
        ]), qos=1)
        await gw.publish(*signed_reports(site.gw_key, GW, bc_id, [
            ("spk-1", "played", at + 9000), ("spk-2", "offline", at + 20),
            ("spk-1", "queued", at + 9500),  # late: changes nothing
        ]), qos=1)

        async def reported() -> bool:
            d = (await http.get(f"/api/broadcasts/{bc_id}")).json()
            states = {s["device"]: (s["state"], s["at"]) for s in d["speakers"]}
            return states == {"spk-1": ("played", at + 9000), "spk-2": ("offline", at + 20)}

        await poll(reported)
        d = (await http.get(f"/api/broadcasts/{bc_id}")).json()
        assert d["state"] == "sent" and d["gateways"][0]["state"] == "sent"
        assert d["summary"]["speakers"] == {"played": 1, "offline": 1}

        # A forged report is refused and counted; the state stays.
        forger = Ed25519PrivateKey.generate()
        await gw.publish(*signed_reports(forger, GW, bc_id, [("spk-2", "played", at + 30)]), qos=1)

        async def refused() -> bool:
            m = (await http.get("/api/metrics")).json()
            return bool(m["rejected"].get("bad_signature") == 1)

        await poll(refused)
        assert await reported()

        # CAP out through the command line, and back in as a new broadcast.
        xml_path = tmp_path / "alert.xml"
        base = str(http.base_url).rstrip("/")
        token = http.headers["Authorization"].removeprefix("Bearer ")
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        rc = await asyncio.to_thread(
            main, ["cap", "export", bc_id, "--api", base, "--token-file", str(token_file),
                   "-o", str(xml_path)]
        )
        assert rc == 0
        xml = xml_path.read_text(encoding="utf-8")
        assert f"<identifier>{bc_id}</identifier>" in xml
        xml_path.write_text(xml.replace(bc_id, "imported-7"), encoding="utf-8")
        monkeypatch.setenv("ONEKEY_TOKEN", token)  # the other way to give the token
        rc = await asyncio.to_thread(
            main, ["cap", "import", str(xml_path), "--by", "Zhao", "--api", base]
        )
        assert rc == 2  # Extreme to a whole village: refused until staff confirm it
        rc = await asyncio.to_thread(
            main, ["cap", "import", str(xml_path), "--by", "Zhao", "--api", base,
                   "--confirm-extreme"]
        )
        assert rc == 0
        imported = await next_broadcast(site, gw)
        # The import gets the centre's own id; the source's identifier stays at the centre.
        assert imported["id"] != "imported-7"
        assert (imported["sender"], imported["text"]) == (copy["sender"], copy["text"])
        got = (await http.get(f"/api/broadcasts/{imported['id']}")).json()
        assert got["cap_source"]["identifier"] == "imported-7"

        # Staff cancel the first: the gateway gets a signed Cancel that references it.
        r = await http.post(f"/api/broadcasts/{bc_id}/cancel", json={"by": "Zhao", "note": "ok"})
        assert r.status_code == 200, r.text
        cancel = await next_broadcast(site, gw)
        assert (cancel["msgType"], cancel["references"], cancel["expires"]) == (
            "Cancel", [bc_id], copy["expires"]
        )
        assert (await http.get(f"/api/broadcasts/{bc_id}")).json()["state"] == "cancelled"


async def test_a_broadcast_posted_while_the_broker_is_down_is_delivered_when_it_returns(
    site: Site,
) -> None:
    async with centre_running(site.config) as http:
        async with gateway(site, persistent=True):
            pass  # the gateway's session and subscription now wait at the broker
        await asyncio.to_thread(site.broker.stop)
        await poll(lambda: connected(http, False))

        r = await http.post("/api/broadcasts", json=broadcast(text="broker down test"))
        assert r.status_code == 201, r.text
        bc_id = r.json()["id"]
        assert r.json()["state"] == "sending"
        assert (await http.get("/api/metrics")).json()["pending_downlinks"] == 1

        await asyncio.to_thread(site.broker.start)
        async with gateway(site, persistent=True) as gw:
            copy = await next_broadcast(site, gw, within=20)
            assert (copy["id"], copy["text"]) == (bc_id, "broker down test")

        async def sent() -> bool:
            d = (await http.get(f"/api/broadcasts/{bc_id}")).json()
            return bool(d["state"] == "sent")

        await poll(sent)
        assert (await http.get("/api/metrics")).json()["pending_downlinks"] == 0
