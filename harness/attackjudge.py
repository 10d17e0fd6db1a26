"""How the attack campaign (harness/attacks.py) judges, from the outside: the centre's API,
the gateway's admin API, metrics file and log, the speakers' logs, /proc.

`AttackJudge` is the half of `AttackCampaign` that looks: indicators that something got through
(counted before and after every phase), refusals that must add up to what was sent, memory and
liveness of every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.attackresult import AttackResult, Bounds, rss_kb
from harness.attackshots import GHOST, TWIN, VICTIM
from harness.protodevice import ProtoDevice
from harness.protospeaker import ProtoSpeaker
from harness.simdevice import SimButton
from harness.simspeaker import SimSpeaker
from harness.stack import LocalStack
from provisioning.simcontrol import SimDeviceError

MARKERS = ("village_link_down", "village_link_up", "centre_link_down", "centre_link_up",
           "broker_down", "broker_up")


class LogWatch:
    """Counts lines holding a marker in a growing log file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._rest = b""
        self.counts: Counter[str] = Counter()

    def count(self, marker: str) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return self.counts[marker]
        self._offset += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            for m in MARKERS:
                if f"event={m} ".encode() in line + b" ":
                    self.counts[m] += 1
        return self.counts[marker]


class AttackJudge:
    """Reads the system from the outside; the campaign supplies the stack, the devices it
    runs, what it sent and what was genuine."""

    stack: LocalStack
    result: AttackResult
    gw: str
    victim: ProtoDevice
    speakers: list[ProtoSpeaker]
    fw_speakers: list[SimSpeaker]
    firmware: list[SimButton | SimSpeaker]
    expected: Counter[str]
    genuine_events: set[str]
    genuine_bcs: set[str]
    staff_acked: set[int]
    _admin_token: str
    _hb_marker: str
    _twin_marker: int
    _ind: Counter[str]  # the indicators after the last phase
    _seen_events: set[str]  # events at the centre that nothing genuine made, so far
    _baseline: dict[str, int]
    _base_reasons: dict[str, dict[str, int]]
    _base_counts: dict[str, int]

    async def _wait_api(self, cond: Callable[[], bool], timeout: float, what: str) -> bool:
        """Polls a condition that reads an HTTP API (in a thread); False after the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await asyncio.to_thread(cond):
                return True
            await asyncio.sleep(0.1)
        self.result.notes.append(f"no {what} within {timeout:.0f} s")
        return False

    # -- what the system shows from the outside

    def _api(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        return self.stack.api(method, path, body)

    def _admin(self, path: str) -> Any:
        req = urllib.request.Request(self.stack.admin_url + path,
                                     headers={"Authorization": f"Bearer {self._admin_token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def _gateway_metrics(self, fresh: bool = False) -> dict[str, Any]:
        """The gateway's metrics file, waiting for a write after this call when `fresh` (the
        gateway writes it every half second)."""
        path = self.stack.gateway_dir / "metrics.json"
        if fresh:
            since = time.time()
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime > since:
                        break
                time.sleep(0.05)
        return self.stack.gateway_metrics()

    def _gateway_refusals(self) -> int:
        return sum(self._gateway_metrics().get("rejected", {}).values())

    def _reason_counts(self) -> dict[str, dict[str, int]]:
        return {
            "gateway": dict(self._gateway_metrics(fresh=True).get("rejected", {})),
            "centre": dict(self._api("/api/metrics").get("rejected", {})),
        }

    def _duplicate_counts(self) -> dict[str, int]:
        return {
            "gateway": int(self._gateway_metrics(fresh=True).get("counts", {}).get("duplicates", 0)),
            "centre": int(self._api("/api/metrics").get("counts", {}).get("duplicates", 0)),
        }

    def _speaker_refusals(self) -> int:
        return sum(s.log.rejected for s in self.speakers)

    def _firmware_refusals(self) -> int:
        total = 0
        for fw in self.fw_speakers:
            with contextlib.suppress(SimDeviceError, OSError):
                total += sum(fw.status().get("refused", {}).values())
        return total

    def _twin_status(self) -> tuple[int | None, bool]:
        """(the twin's outbox as the centre last heard it, the ghost never heard)."""
        gws = {g["id"]: g for g in self._api("/api/gateways")}
        ghost = gws.get(GHOST)
        return gws.get(TWIN, {}).get("outbox"), ghost is None or ghost.get("last_seen") is None

    def _events(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._api("/api/alarms?limit=1000")
        if len(rows) < 1000:
            return rows
        seen: dict[str, dict[str, Any]] = {r["id"]: r for r in rows}
        for gw in (self.gw, TWIN, GHOST):
            for kind in ("alarm", "cancel", "test"):
                for r in self._api(f"/api/alarms?limit=1000&gw={gw}&kind={kind}"):
                    seen[r["id"]] = r
        return list(seen.values())

    def _remote_indicators(self, fresh: bool = False) -> tuple[Counter[str], set[str]]:
        """What the services and the firmware show (HTTP, files, control ports: in a thread)."""
        out: Counter[str] = Counter()
        unexpected = {r["id"] for r in self._events()} - self.genuine_events
        out["events"] = len(unexpected)
        status = self._admin(f"/admin/devices/{VICTIM}").get("status") or {}
        out["device_status"] = int(status.get("fw") != self._hb_marker)
        outbox, ghost_unheard = self._twin_status()
        out["gateway_status"] = int(outbox != self._twin_marker) + int(not ghost_unheard)
        counts = self._gateway_metrics(fresh).get("counts", {})
        out["acks_moved"] = int(counts.get("centre_acked", 0))
        out["bc_accepted"] = int(counts.get("bc_accepted", 0)) - len(self.genuine_bcs)
        for fw in self.fw_speakers:
            out["fw_played"] += sum(1 for p in fw.played()
                                    if p.get("result") == "played" and p["id"] not in self.genuine_bcs)
        return out, unexpected

    async def _indicators(self, fresh: bool = False) -> tuple[Counter[str], set[str]]:
        """Counts of what got through, by kind, and the events nothing genuine made. The
        protocol-level devices' logs are read here, on the loop that writes them."""
        out, unexpected = await asyncio.to_thread(self._remote_indicators, fresh)
        out["acked_shown"] = sum(1 for ref, states in self.victim.acks.seen.items()
                                 if "acked" in states and ref not in self.staff_acked)
        out["played"] = sum(1 for s in self.speakers for b in s.log.played if b not in self.genuine_bcs)
        return out, unexpected

    async def _refusal_counts(self) -> dict[str, int]:
        def read() -> dict[str, int]:
            return {
                "gateway": self._gateway_refusals(),
                "speakers": self._speaker_refusals(),
                "firmware": self._firmware_refusals(),
            }

        return await asyncio.to_thread(read)

    async def _phase_end_check(self) -> None:
        """Once more after everything, with fresh metrics: anything a phase let through that
        showed only later is counted here."""
        after, unexpected = await self._indicators(fresh=True)
        late = sum(after[k] - self._ind[k] for k in after if k not in ("played", "fw_played"))
        played = sum(after[k] - self._ind[k] for k in ("played", "fw_played"))
        if late > 0 or played > 0:
            self.result.unattributed = max(late, 0) + max(played, 0)
            self.result.notes.append(f"found only at the end: {after - self._ind}, events "
                                     f"{sorted(unexpected - self._seen_events)[:5]}")

    async def _judge_refusals(self) -> None:
        """Refusals counted by each receiver against what was sent to it."""
        exp = self.expected

        def total(prefix: str) -> int:
            return sum(v for k, v in exp.items() if k.startswith(prefix))

        def bounds(prefix: str) -> tuple[Bounds, dict[str, Bounds]]:
            exact = {k[len(prefix):]: v for k, v in exp.items()
                     if k.startswith(prefix) and k[len(prefix):] not in ("*", "dup")}
            anyn, dup = exp[prefix + "*"], exp[prefix + "dup"]
            low = sum(exact.values()) + anyn
            per = {r: Bounds(n, n + anyn + (dup if r == "replay" else 0)) for r, n in exact.items()}
            return Bounds(low, low + dup), per

        def grew(now: dict[str, int], then: dict[str, int], skip: str = "") -> dict[str, int]:
            return {r: now.get(r, 0) - then.get(r, 0) for r in set(now) | set(then)
                    if r != skip and now.get(r, 0) != then.get(r, 0)}

        gw_total, gw_per = bounds("gw:")
        ce_total, ce_per = bounds("centre:")
        seen: dict[str, dict[str, int]] = {}

        def settled() -> bool:
            now = self._reason_counts()
            seen["gateway"] = grew(now["gateway"], self._base_reasons["gateway"])
            # The campaign's genuine broadcasts are signed outside the centre's store, so the
            # centre refuses the gateway's reports on them as unknown_broadcast: not attacks.
            seen["centre"] = grew(now["centre"], self._base_reasons["centre"], "unknown_broadcast")
            return (sum(seen["gateway"].values()) >= gw_total.low
                    and sum(seen["centre"].values()) >= ce_total.low
                    and self._speaker_refusals() - self._baseline["speakers"] >= total("spk:")
                    and self._firmware_refusals() - self._baseline["firmware"] >= total("fw:"))

        await self._wait_api(settled, 15, "refusal counts that add up")
        for who, prefix, all_, per in (("gateway", "gw:", gw_total, gw_per),
                                       ("centre", "centre:", ce_total, ce_per)):
            all_.seen = sum(seen[who].values())
            for reason, n in seen[who].items():
                per.setdefault(reason, Bounds(0, exp[prefix + "*"])).seen = n
            self.result.refusals[who] = all_
            self.result.reasons[who] = per
        spk = total("spk:")
        self.result.refusals["protocol speakers"] = Bounds(
            spk, spk, self._speaker_refusals() - self._baseline["speakers"])
        if self.fw_speakers:
            fw = total("fw:")
            got = await asyncio.to_thread(self._firmware_refusals) - self._baseline["firmware"]
            self.result.refusals["firmware speakers"] = Bounds(fw, fw, got)
            for fw_spk in self.fw_speakers:
                with contextlib.suppress(SimDeviceError, OSError):
                    refused = (await asyncio.to_thread(fw_spk.status)).get("refused", {})
                    self.result.notes.append(f"{fw_spk.device_id} refused by reason: {refused}")
        # The victim refuses the acks forged with the gateway's broker rights; those another
        # device forged never reach it (the ACL drops them).
        dev = total("dev:")
        self.result.refusals["victim device"] = Bounds(dev, dev, self.victim.acks.rejected)
        dups = self._duplicate_counts()
        gw_dups = dups["gateway"] - self._base_counts["gateway"]
        self.result.notes.append(
            f"replayed events answered as duplicates: gateway {gw_dups}"
            f" of {exp['gw:dup']} replays, centre {dups['centre'] - self._base_counts['centre']} of"
            f" {exp['centre:dup']} (the gateway re-sends what the centre has not acked in time: extra"
            " duplicates at the centre are its own)")

    def _sample_rss(self, label: str) -> None:
        s = self.stack
        procs = {
            "gateway": s.gateway_proc.pid if s.gateway_proc else None,
            "centre": s.centre_proc.pid if s.centre_proc else None,
            "village broker": s.village_broker.pid if s.village_broker else None,
            "centre broker": s.centre_broker.pid if s.centre_broker else None,
        }
        for name, pid in procs.items():
            self.result.rss_kb.setdefault(name, {})[label] = rss_kb(pid)

    def _check_alive(self) -> None:
        s = self.stack
        alive = self.result.alive
        alive["gateway"] = bool(s.gateway_proc and s.gateway_proc.running)
        alive["centre"] = bool(s.centre_proc and s.centre_proc.running)
        alive["village broker"] = bool(s.village_broker and s.village_broker.running)
        alive["centre broker"] = bool(s.centre_broker and s.centre_broker.running)
        for fw in self.firmware:
            alive[fw.device_id] = fw.running
