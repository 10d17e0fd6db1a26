"""A short attack campaign (bench/attacks.py runs the long one): a few hundred forged, replayed,
withheld-and-injected, cross-device, takeover, oversized, malformed and fuzzed messages over
every link; none accepted, none played, every service alive and still serving genuine traffic,
every refusal counted where it should be."""

from __future__ import annotations

import pytest

from harness.attacks import AttackCampaign
from harness.stack import LocalStack

pytestmark = pytest.mark.integration


async def test_attacks_on_every_link_are_refused_and_genuine_traffic_still_flows(
    stack: LocalStack,
) -> None:
    campaign = AttackCampaign(
        stack,
        messages=400,
        seed=7,
        speakers=2,
        firmware_speakers=0,
        firmware_buttons=0,
        service_takeovers=3,
        time_limit_s=150,
    )
    result = await campaign.run()
    assert result.sent >= 400, result.report()
    assert result.complete, result.report()
    assert result.ok, "\n".join(result.failures()) + "\n\n" + result.report()
