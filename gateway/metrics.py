"""Counters the gateway keeps, written to metrics.json for `onekey gateway stats` and tests, and
served in Prometheus' text format on the admin API's `/metrics` (docs/gateway.md, "Metrics").

The Prometheus registry belongs to this object (one per gateway), and its families are read from
the same counters and gauges as the JSON at scrape time, so the two never disagree.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from transport.prom import COMMIT_BUCKETS, ModemGauge

# Event states at the gateway (gateway/store.py STATES), each reported even when 0.
EVENT_STATES = ("stored", "received", "acked")
LINKS = ("village", "centre")


class Metrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.gauges: dict[str, Any] = {}
        # Read from the store just before each scrape (`observe_store`).
        self.event_states: dict[str, int] = {}
        self.registry = CollectorRegistry()
        self.commit_seconds = Histogram(
            "onekey_gateway_store_commit_seconds",
            "Time of one group commit of the gateway's store, BEGIN to COMMIT with its fsync",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self._modem = ModemGauge("onekey_gateway", self.registry)
        self.gauges["modem"] = self._modem.state
        self.registry.register(_Families(self))

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1
        self.counts["rejected"] += 1

    def gauge(self, name: str, value: Any) -> None:
        self.gauges[name] = value

    def set_modem_state(self, state: str) -> None:
        """The modem's state (`modem.Modem.state`: starting, ok, no_network, sim_missing,
        gone); `absent` until a modem sets it. ValueError for any other."""
        self._modem.set(state)
        self.gauges["modem"] = state

    def observe_store(
        self, event_states: dict[str, int], outbox: int, ok: bool, full: bool, failed: int,
        free_bytes: int, devices: int,
    ) -> None:
        """What the store says now, for the next scrape."""
        self.event_states = dict(event_states)
        self.gauges.update(
            outbox=outbox, store_ok=ok, store_full=full, store_failed_writes=failed,
            store_free_bytes=free_bytes, devices=devices,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "rejected": dict(self.rejected),
            "gauges": dict(self.gauges),
        }

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1, sort_keys=True))
        os.replace(tmp, path)


def read_metrics(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


class _Families(Collector):
    """The gateway's Prometheus families, read from `Metrics` at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        g = m.gauges
        events = GaugeMetricFamily(
            "onekey_gateway_events", "Events in the gateway's store by state", labels=["state"]
        )
        for state in EVENT_STATES:
            events.add_metric([state], m.event_states.get(state, 0))
        yield events
        rejected = CounterMetricFamily(
            "onekey_gateway_rejected",
            "Messages refused, by reason (protocol §3.4 reasons; bc_* broadcasts, centre_* acks)",
            labels=["reason"],
        )
        for reason, n in sorted(m.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        links = GaugeMetricFamily(
            "onekey_gateway_link_up", "1 while the link to that broker is up", labels=["link"]
        )
        for link in LINKS:
            links.add_metric([link], 1 if g.get(f"{link}_link") == "up" else 0)
        yield links
        yield GaugeMetricFamily(
            "onekey_gateway_outbox_events", "Events the centre has not yet received",
            value=int(g.get("outbox", 0)),
        )
        yield GaugeMetricFamily(
            "onekey_gateway_devices", "Devices in the registry", value=int(g.get("devices", 0))
        )
        yield GaugeMetricFamily(
            "onekey_gateway_store_ok", "1 while the last write to the store committed",
            value=1 if g.get("store_ok", True) else 0,
        )
        yield GaugeMetricFamily(
            "onekey_gateway_store_full", "1 while writes fail because the disk is full",
            value=1 if g.get("store_full", False) else 0,
        )
        yield GaugeMetricFamily(
            "onekey_gateway_store_free_bytes", "Free space on the store's disk (-1: unknown)",
            value=int(g.get("store_free_bytes", -1)),
        )
        for name, key, text in (
            ("onekey_gateway_messages", "messages_in", "Device messages taken from the village broker"),
            ("onekey_gateway_store_failed", "store_failed", "Device messages whose write failed"),
            ("onekey_gateway_forwarded", "forwarded", "Events sent to the centre (resends included)"),
        ):
            yield CounterMetricFamily(name, text, value=m.counts.get(key, 0))
