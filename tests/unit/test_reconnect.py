"""The one reconnect loop (transport/reconnect.py), with a fake client: no broker needed."""

from __future__ import annotations

import asyncio

import pytest

from transport.mqtt import MqttError
from transport.reconnect import Backoff, keep_connected


class FakeClient:
    def __init__(self, log: list[str], refuse: bool) -> None:
        self.log = log
        self.refuse = refuse

    async def connect(self) -> None:
        self.log.append("connect")
        if self.refuse:
            raise MqttError("refused")

    async def disconnect(self) -> None:
        self.log.append("disconnect")


def test_backoff_doubles_up_to_its_cap_with_jitter_and_resets() -> None:
    b = Backoff(0.5, 4.0)
    waits = [b.next() for _ in range(8)]
    for wait, base in zip(waits, [0.5, 1, 2, 4, 4, 4, 4, 4], strict=True):
        assert base / 2 <= wait < base * 1.5
    b.reset()
    assert b.delay == 0.5


async def test_a_lost_connection_is_cleaned_up_and_made_again() -> None:
    log: list[str] = []
    refusals = iter([True, False, False, False])
    sessions = 0
    third = asyncio.Event()
    lost: list[str] = []

    async def session(client: FakeClient) -> None:
        nonlocal sessions
        sessions += 1
        log.append("session")
        if sessions == 2:
            raise ValueError("a fault of ours")  # ends this connection: named below
        if sessions == 3:
            third.set()
            await asyncio.Event().wait()  # runs until cancelled
        raise MqttError("lost")

    async def closed() -> None:
        log.append("closed")

    task = asyncio.create_task(
        keep_connected(
            lambda: FakeClient(log, next(refusals)), session, backoff=Backoff(0.001, 0.002),
            lost=lambda exc, _d: lost.append(str(exc)), closed=closed,
            ends_connection=(ValueError,),
        )
    )
    await asyncio.wait_for(third.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lost == ["refused", "lost", "a fault of ours"]
    # Every attempt, refused or not, is closed and disconnected, also the cancelled one.
    assert log == [
        "connect", "closed", "disconnect",
        "connect", "session", "closed", "disconnect",
        "connect", "session", "closed", "disconnect",
        "connect", "session", "closed", "disconnect",
    ]


async def test_an_unexpected_error_goes_up_to_the_supervisor() -> None:
    async def session(client: FakeClient) -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        await keep_connected(
            lambda: FakeClient([], False), session, backoff=Backoff(), lost=lambda e, d: None
        )
