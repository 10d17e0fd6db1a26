"""A short fault campaign (bench/faults.py runs the long one): kills of every part under load."""

from __future__ import annotations

import pytest

from harness.faults import FaultCampaign
from harness.stack import LocalStack

pytestmark = pytest.mark.integration


async def test_nothing_is_lost_duplicated_or_reordered_across_kills_of_every_part(
    stack: LocalStack,
) -> None:
    campaign = FaultCampaign(
        stack,
        kills=8,
        devices=4,
        firmware=1,
        gap_s=(0.3, 1.0),
        alarm_every_s=0.3,
        settle_timeout_s=60.0,
        seed=7,
    )
    result = await campaign.run()
    assert sum(result.kills.values()) == 8
    assert result.alarms > 0 and result.staff_acks > 0
    assert result.ok, result.summary() + f"\n{result.lost=}\n{result.out_of_order=}\n" \
        f"{result.acks_not_shown=}\n{result.phantom=}"
