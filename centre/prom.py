"""The centre's Prometheus metrics (`GET /metrics`, docs/centre.md "Metrics").

`CentreProm` belongs to one `centre.ingest.Metrics` (one per app): its own registry, the ingest
commit latency histogram and the modem state gauge. The other families are read at scrape time:
the JSON counters from `Metrics`, and what the store holds (events by state, downlinks not yet
confirmed, each gateway's last heartbeat) from a snapshot that `scrape()` reads first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from centre.store import STATES, Gateway, Store
from transport.prom import COMMIT_BUCKETS, ModemGauge, render


class _Counts(Protocol):
    counts: Counter[str]
    rejected: Counter[str]
    connected: bool
    gateways_offline: int


@dataclass
class StoreView:
    """What the store held at the last scrape."""

    events: dict[str, int] = field(default_factory=dict)
    pending_downlinks: int = 0
    gateways: list[Gateway] = field(default_factory=list)
    now_ms: int = 0
    gateway_timeout_ms: int = 0


class CentreProm:
    def __init__(self, metrics: _Counts) -> None:
        self.registry = CollectorRegistry()
        self.commit_seconds = Histogram(
            "onekey_centre_ingest_commit_seconds",
            "Time of one ingest transaction (a batch of gateway messages), waiting for the "
            "store's lock included, to its COMMIT with fsync",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.modem = ModemGauge("onekey_centre", self.registry)
        self.view = StoreView()
        self.registry.register(_Families(metrics, self))

    async def scrape(self, store: Store, now_ms: int, gateway_timeout_ms: int) -> bytes:
        """Read the store, then the exposition text of everything."""
        async with store.transaction(write=False) as db:
            rows = await db.execute_fetchall("SELECT state, COUNT(*) FROM alarms GROUP BY state")
        events = {str(r[0]): int(r[1]) for r in rows}
        self.view = StoreView(
            events, await store.count_downlinks(), await store.list_gateways(), now_ms,
            gateway_timeout_ms,
        )
        return render(self.registry)


class _Families(Collector):
    def __init__(self, metrics: _Counts, prom: CentreProm) -> None:
        self.m = metrics
        self.p = prom

    def collect(self) -> Iterator[Metric]:
        m, v = self.m, self.p.view
        events = GaugeMetricFamily(
            "onekey_centre_events",
            "Events at the centre by state (alarms: open, acked, dispatched, resolved, "
            "cancelled; test presses: test; cancel events: cancel)",
            labels=["state"],
        )
        for state in STATES:
            events.add_metric([state], v.events.get(state, 0))
        yield events
        rejected = CounterMetricFamily(
            "onekey_centre_rejected", "Gateway messages refused, by reason", labels=["reason"]
        )
        for reason, n in sorted(m.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield CounterMetricFamily(
            "onekey_centre_events_received", "New events committed from gateways",
            value=m.counts.get("events", 0),
        )
        yield GaugeMetricFamily(
            "onekey_centre_broker_up", "1 while connected to the centre broker",
            value=1 if m.connected else 0,
        )
        yield GaugeMetricFamily(
            "onekey_centre_pending_downlinks",
            "Staff acks and broadcast copies their gateways have not yet confirmed (§6.6)",
            value=v.pending_downlinks,
        )
        yield GaugeMetricFamily(
            "onekey_centre_gateways_offline", "Enrolled gateways silent beyond the timeout",
            value=m.gateways_offline,
        )
        online = GaugeMetricFamily(
            "onekey_centre_gateway_online", "1 if a heartbeat came within gateway_timeout_s",
            labels=["gw"],
        )
        outbox = GaugeMetricFamily(
            "onekey_centre_gateway_outbox_events",
            "Events a gateway has not yet had received, as its last heartbeat said",
            labels=["gw"],
        )
        store_ok = GaugeMetricFamily(
            "onekey_centre_gateway_store_ok",
            "1 if the gateway's last heartbeat said its store can be written (§6.5 store)",
            labels=["gw"],
        )
        free = GaugeMetricFamily(
            "onekey_centre_gateway_store_free_bytes",
            "Free space on the gateway's store disk, as its last heartbeat said",
            labels=["gw"],
        )
        for g in v.gateways:
            seen = g.last_seen is not None and v.now_ms - g.last_seen <= v.gateway_timeout_ms
            online.add_metric([g.id], 1 if seen else 0)
            if g.outbox is not None:
                outbox.add_metric([g.id], g.outbox)
            if g.store is not None:
                store_ok.add_metric([g.id], 1 if g.store.ok else 0)
                free.add_metric([g.id], g.store.free_bytes)
        yield from (online, outbox, store_ok, free)
