"""One connection at a time, for ever: the reconnect loop of the gateway's village and centre
sides and of the centre's ingest.

`keep_connected` makes a client, connects, and runs the caller's session on it until the
connection is lost (the session raises `MqttError`, or an error the caller names as one that
ends only this connection). Then it cleans up (the caller's `closed`, then a disconnect) and
waits with exponential backoff and jitter before the next attempt. The session calls
`backoff.reset()` once the link is really usable (subscribed), so a broker that accepts the
connection but refuses the subscription is not retried in a tight loop. Any other exception
goes up to the task's supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from transport.mqtt import MqttError


class Connectable(Protocol):
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...


C = TypeVar("C", bound=Connectable)


class Backoff:
    """Delays that double from `first` up to `cap`, each drawn from [d/2, 3d/2) (jitter, so
    that many clients that lost the same broker do not come back at the same instant)."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        wait = self.delay * (0.5 + random.random())
        self.delay = min(self.delay * 2, self.cap)
        return wait


async def keep_connected(
    make_client: Callable[[], C],
    session: Callable[[C], Awaitable[None]],
    *,
    backoff: Backoff,
    lost: Callable[[Exception, float], None],
    closed: Callable[[], Awaitable[None]] | None = None,
    ends_connection: tuple[type[Exception], ...] = (),
) -> None:
    """Run until cancelled. `lost(exc, delay)` logs why a connection ended (MqttError or one of
    `ends_connection`) and the delay before the next attempt; `closed()` undoes what the
    session set up, before the disconnect."""
    while True:
        client = make_client()
        try:
            await client.connect()
            await session(client)
            raise MqttError("the session ended")
        except MqttError as exc:
            lost(exc, backoff.delay)
        except ends_connection as exc:
            lost(exc, backoff.delay)
        finally:
            if closed is not None:
                await closed()
            with contextlib.suppress(MqttError):
                await client.disconnect()
        await asyncio.sleep(backoff.next())
