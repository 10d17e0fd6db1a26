"""PUBACK after commit, in arrival order (DESIGN.md, durability; MQTT 3.1.1 §4.6).

A client made with `manual_ack=True` acknowledges nothing by itself. `PubackOrder` holds the
messages of one connection in arrival order, each with a future that says what became of it,
and acknowledges each once it and every message before it are done with. A message that was not
committed stops all acknowledgements on that connection and drops the link, so that the broker
sends it, and everything after it, again, in order, on the next connect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from transport.mqtt import Message, MqttClient


class PubackOrder:
    """PUBACKs of one connection, in arrival order, each once its message is done with.

    `add()` takes the message and a future that says what became of it: True (committed, or
    bad input: acknowledge), False (not committed: the broker must send it again). The first
    False stops all acks on this connection and calls `on_failure` (which drops the link).
    """

    def __init__(self, client: MqttClient, on_failure: Callable[[], None]) -> None:
        self.client = client
        self.on_failure = on_failure
        self.failed = False
        self._queue: deque[tuple[Message, asyncio.Future[bool] | None]] = deque()

    def add(self, msg: Message, done: asyncio.Future[bool] | None) -> None:
        if msg.qos == 0:
            return  # nothing to acknowledge
        self._queue.append((msg, done))
        if done is not None and not done.done():
            done.add_done_callback(lambda _f: self._drain())
        else:
            self._drain()

    def _drain(self) -> None:
        while self._queue and not self.failed:
            msg, done = self._queue[0]
            if done is not None:
                if not done.done():
                    return
                if done.cancelled() or done.exception() is not None or not done.result():
                    self.failed = True
                    self.on_failure()
                    return
            self._queue.popleft()
            self.client.ack(msg)
