"""Long-lived tasks under supervision (DESIGN.md: every long-lived task runs under a supervisor;
one failing operation fails only itself).

`supervise(name, run)` awaits `run()`; if it raises, the error is logged with its traceback as
a key=value line, counted, and `run()` is started again after a backoff that doubles from
`first_delay_s` to `max_delay_s` and starts over once a run has lasted `healthy_after_s`.
A cancelled task stays cancelled; a `run()` that returns ends the supervision.

The gateway's tasks (gateway/service.py) and the centre's (centre/api.py) both run under it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

_log = logging.getLogger("onekey.supervisor")


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    log: logging.Logger = _log,
    on_crash: Callable[[str], None] | None = None,
    first_delay_s: float = 1.0,
    max_delay_s: float = 60.0,
    healthy_after_s: float = 60.0,
) -> None:
    loop = asyncio.get_running_loop()
    delay = first_delay_s
    while True:
        started = loop.time()
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the one place that catches everything: log, wait, restart
            if loop.time() - started >= healthy_after_s:
                delay = first_delay_s  # it ran well for a while: this is a new failure
            log.exception(
                "event=task_crashed task=%s error=%s restart_in_s=%.1f",
                name, type(exc).__name__, delay,
            )
            if on_crash is not None:
                on_crash(name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
        else:
            log.info("event=task_ended task=%s", name)
            return
