"""The centre's long-lived tasks under supervision: a failure is logged, counted and restarted
after a backoff; the other tasks go on; a cancelled task stays cancelled."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

import httpx
import pytest

from centre.api import create_app
from centre.bcstore import BroadcastStore
from centre.config import load_config
from centre.enrol import init_centre
from harness.fakegateway import FakeBroker, wait_until
from tests.auth_support import act_as
from transport.supervisor import supervise


async def test_a_scheduler_tick_that_raises_does_not_stop_later_ticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = init_centre(tmp_path / "centre")
    ticks: list[int] = []
    release_due = BroadcastStore.release_due

    async def flaky(self: BroadcastStore, now: int) -> list[str]:
        ticks.append(now)
        if len(ticks) == 2:
            raise RuntimeError("a fault in one tick")
        return await release_due(self, now)

    monkeypatch.setattr(BroadcastStore, "release_due", flaky)
    broker = FakeBroker()
    app = create_app(load_config(path), client_factory=broker.factory, scheduler_period_s=0.01)
    act_as(app)  # route logic under test; tests/unit/test_centre_accounts.py checks access
    with caplog.at_level(logging.ERROR, logger="onekey.centre.api"):
        async with app.router.lifespan_context(app):
            await wait_until(lambda: len(ticks) >= 2)
            await wait_until(lambda: len(ticks) >= 5, within=10)  # restarted after its backoff
            metrics = app.state.metrics
            assert metrics.counts["task_crashes_broadcast-scheduler"] == 1
            # The other tasks never stopped: the ingest is connected and answers.
            assert metrics.connected and len(broker.clients) == 1
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as http:
                assert (await http.get("/healthz")).status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if "task_crashed" in r.getMessage()]
    assert line.startswith("event=task_crashed task=broadcast-scheduler error=RuntimeError")


async def test_supervise_backs_off_restarts_and_starts_over_after_a_healthy_run() -> None:
    starts: list[float] = []
    loop = asyncio.get_running_loop()
    crashes: list[str] = []

    async def run() -> None:
        starts.append(loop.time())
        if len(starts) == 4:
            await asyncio.sleep(0.35)  # healthy for a while, then fails again
        if len(starts) < 6:
            raise ValueError("boom")

    await supervise(
        "t", run, on_crash=crashes.append, first_delay_s=0.05, max_delay_s=1.0,
        healthy_after_s=0.3,
    )
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 6 and crashes == ["t"] * 5
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # doubling
    assert gaps[3] - 0.35 < 0.25  # after a healthy run it starts over (0.05 s, not 0.4 s)


async def test_a_supervised_task_that_is_cancelled_stays_cancelled() -> None:
    started = asyncio.Event()

    async def run() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("t", run))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
