"""Prometheus metrics that the gateway and the centre share: the text exposition, the modem
state gauge, the commit latency buckets.

Each app instance has its own `CollectorRegistry` (never prometheus-client's global default), so
that tests can run several gateways or centres in one process. Values that live elsewhere (the
JSON counters, the store's depth) are read at scrape time by a collector of each app rather than
counted twice.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Enum, generate_latest

# What `generate_latest` writes: the text format 0.0.4 (prometheus-client's CONTENT_TYPE_LATEST
# names 1.0.0 from 0.22 on, which older Prometheus servers do not know).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A modem's state (docs/modem.md: `Modem.state`), and `absent` while there is no modem.
MODEM_ABSENT = "absent"
MODEM_STATES = (MODEM_ABSENT, "starting", "ok", "no_network", "sim_missing", "gone")

# SQLite commits with fsync: a fraction of a millisecond on an SSD, tens of milliseconds on a
# Pi's SD card, seconds when the card stalls.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ModemGauge:
    """`{prefix}_modem_state{state=...}`: 1 for the modem's current state, 0 for the others;
    `absent` until a modem sets another."""

    def __init__(self, prefix: str, registry: CollectorRegistry) -> None:
        self._enum = Enum(
            f"{prefix}_modem_state",
            "State of the GSM/4G modem (absent: none configured)",
            labelnames=(),
            states=list(MODEM_STATES),
            registry=registry,
        )
        self.state = MODEM_ABSENT
        self._enum.state(MODEM_ABSENT)

    def set(self, state: str) -> None:
        if state not in MODEM_STATES:
            raise ValueError(f"modem state {state!r} is not one of {', '.join(MODEM_STATES)}")
        self.state = state
        self._enum.state(state)


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (version 0.0.4) of everything in `registry`."""
    return generate_latest(registry)
