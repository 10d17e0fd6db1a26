"""Counters the gateway keeps, written to metrics.json for `onekey gateway stats` and tests."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any


class Metrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.gauges: dict[str, Any] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1
        self.counts["rejected"] += 1

    def gauge(self, name: str, value: Any) -> None:
        self.gauges[name] = value

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
