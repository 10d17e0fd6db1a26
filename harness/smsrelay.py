"""Carries SMS between two virtual modems, as the network would: what the gateway's modem
sent to a number (its `sent.jsonl`) arrives at the modem that has that number, as an incoming
SMS from the gateway's number. For tests and benchmarks of the second path (gateway/fallback.py,
centre/smsin.py).

    relay = SmsRelay(gateway_vmodem_dir, {"+8613800000000": centre_vmodem_dir},
                     sender="+8613900000099")
    relay.step()        # delivers what was sent since the last step; returns the rows delivered
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.vmodem import control, read_sent
from modem import same_number


class SmsRelay:
    def __init__(self, source: Path, routes: dict[str, Path], sender: str) -> None:
        self.source = Path(source)
        self.routes = {number: Path(d) for number, d in routes.items()}
        self.sender = sender
        self._seen = 0

    def step(self) -> list[dict[str, Any]]:
        rows = read_sent(self.source)
        new, self._seen = rows[self._seen :], len(rows)
        delivered = []
        for row in new:
            for number, target in self.routes.items():
                if same_number(number, str(row["to"])):
                    # As many parts as the gateway's modem sent, joined again by the driver.
                    control(target, {"cmd": "reply", "from": self.sender, "text": row["text"],
                                     "parts": row["parts"]})
                    delivered.append(row)
        return delivered
