"""The staff console as the centre serves it: the page, its static files, the server push of
what changed, and the API docs. Nothing is fetched from the internet: a township centre may
have none.

| method | path | what |
| --- | --- | --- |
| GET | / | the console's page (a shell: it asks for a login before it shows anything) |
| GET | /static/{file} | its scripts and style sheets (`centre/static/`, package data) |
| GET | /api/stream | server-sent events: one per change published on the `LiveHub`, and a `ping` |
| GET | /docs | the API's reference, rendered in the page from /openapi.json (no CDN) |

The stream (text/event-stream, WHATWG HTML "server-sent events"): each change is an event named
for its topic (`alarm`, `escalation`, `broadcast`, `gateway`, ...) whose data is the change's JSON.
A `ping` event goes every `heartbeat_s` whatever happens: it keeps proxies from closing an idle
connection, and it is how the page tells a dead connection from a quiet one (a comment line would
do for the proxies, but a page's EventSource never sees comments). A console too slow to drain
its queue has its stream ended by the hub; the page reconnects and reloads its state.

The page loads every script and style sheet in `centre/static/`: `i18n.js` (the dictionary)
first, then the parts' dictionaries (`i18n-*.js`), the parts (the broadcast composer, the admin
pages) in name order, and `app.js` (the console's core, which mounts them) last, so that a part
added as its own file needs no change here.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from centre.live import Change, LiveHub

log = logging.getLogger("onekey.centre.console")

HEARTBEAT_S = 10.0
# How long a page waits after a broken connection before it connects again (SSE `retry`).
RETRY_MS = 1000
_FIRST = "i18n.js"
_LAST = "app.js"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page is served by the centre alone: scripts and styles from it, data from its API only.
# Styles may be inline (a part adds its own <style>); scripts never are.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


def static_dir() -> Traversable:
    return resources.files("centre").joinpath("static")


def _assets() -> dict[str, bytes]:
    """Every servable file of centre/static/, read once (they ship with the package)."""
    out: dict[str, bytes] = {}
    for item in static_dir().iterdir():
        name = item.name
        if item.is_file() and any(name.endswith(ext) for ext in _TYPES) and not name.startswith("."):
            out[name] = item.read_bytes()
    return out


def script_order(names: list[str]) -> list[str]:
    """i18n.js, the parts' own dictionaries (i18n-*.js), the parts in name order, then app.js
    (which mounts them)."""
    # docs.js belongs to the /docs page only.
    scripts = sorted(n for n in names if n.endswith(".js") and n != "docs.js")
    dictionaries = [n for n in scripts if n.startswith("i18n") and n != _FIRST]
    parts = [n for n in scripts if n not in (_FIRST, _LAST) and n not in dictionaries]
    first = [n for n in (_FIRST,) if n in scripts]
    return first + dictionaries + parts + [n for n in (_LAST,) if n in scripts]


def render_index(template: str, names: list[str], version: str) -> str:
    """index.html with a tag for each style sheet and script (versioned, so a new release is
    never mixed with a cached old file)."""
    styles = "\n".join(
        f'<link rel="stylesheet" href="/static/{html.escape(n)}?v={version}">'
        for n in sorted(n for n in names if n.endswith(".css") and n != "docs.css")
    )
    scripts = "\n".join(
        f'<script src="/static/{html.escape(n)}?v={version}" defer></script>' for n in script_order(names)
    )
    return template.replace("<!--STYLES-->", styles).replace("<!--SCRIPTS-->", scripts)


def sse(event: str, data: object) -> bytes:
    """One server-sent event; JSON has no raw newline, so one `data:` line holds it."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


async def change_stream(
    hub: LiveHub, heartbeat_s: float, request: Request | None = None
) -> AsyncIterator[bytes]:
    """The events of one console, until it goes away or the hub drops it."""
    queue = hub.subscribe()
    try:
        # `retry` sets the page's reconnection delay; `hello` tells it the stream is up, so it
        # reloads what it may have missed while it was down.
        yield f"retry: {RETRY_MS}\n".encode() + sse(
            "hello", {"at": time.time_ns() // 1_000_000, "heartbeat_s": heartbeat_s}
        )
        while True:
            try:
                change: Change | None = await asyncio.wait_for(queue.get(), heartbeat_s)
            except TimeoutError:
                if request is not None and await request.is_disconnected():
                    return
                yield sse("ping", {"at": time.time_ns() // 1_000_000})
                continue
            if change is None:
                log.info("event=stream_dropped reason=slow_console")
                return
            yield sse(change.topic, change.data)
    finally:
        hub.unsubscribe(queue)


def console_routes(app: FastAPI, hub: LiveHub, *, heartbeat_s: float = HEARTBEAT_S) -> None:
    """Adds the page, its files, the stream and the docs to the app (FastAPI's own /docs must
    be off: it loads Swagger UI from a CDN)."""
    assets = _assets()
    digest = hashlib.sha256()
    for name in sorted(assets):
        digest.update(name.encode() + b"\0" + assets[name])
    version = digest.hexdigest()[:12]
    index_html = render_index(assets.pop("index.html").decode("utf-8"), list(assets), version)
    docs_html = assets.pop("docs.html", b"").decode("utf-8")
    router = APIRouter()
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP,
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html, headers=headers)

    @router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_html, headers=headers)

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        body = assets.get(name)
        if body is None:
            raise HTTPException(404, f"no file {name!r}")
        suffix = name[name.rfind("."):]
        # Versioned URLs (?v=) change with every release: a day's cache is safe.
        return Response(body, media_type=_TYPES[suffix],
                        headers={"Cache-Control": "private, max-age=86400",
                                 "X-Content-Type-Options": "nosniff"})

    @router.get(
        "/api/stream",
        summary="Server push of changes (text/event-stream)",
        description=(
            "Server-sent events: `hello` when the stream starts (reload state then), one event "
            "per change named for its topic (`alarm`: the alarm as GET /api/alarms/{id} returns "
            "it; `escalation`: {alarm, ...step}; `broadcast`: {id}; `gateway`: {id}), and a "
            f"`ping` every {heartbeat_s:g} s: a page that hears nothing for longer knows the "
            "connection is dead."
        ),
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(
            change_stream(hub, heartbeat_s, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    app.include_router(router)
