"""A small asyncio MQTT 3.1.1 client over paho-mqtt 2.x, with no background thread.

paho's socket is driven from the event loop: `add_reader`/`add_writer` on the socket paho
opens (its `on_socket_*` callbacks), and a task that calls `loop_misc()` every second for
keepalive. Only the blocking TCP connect and TLS handshake run in the default executor, so
that a slow uplink never stalls the loop.

One client object is one connection at a time. Reconnection is the caller's: a supervisor
task awaits `closed()` (or the end of `messages()`), then calls `connect()` again, with
backoff. Everything pending when the connection drops (publishes awaiting PUBACK,
subscriptions awaiting SUBACK) fails with `MqttError`; the caller re-sends what it must.

Incoming messages go to an unbounded `asyncio.Queue` read by `messages()`. With
`manual_ack=True` an incoming QoS 1 message is PUBACKed only when the caller says so
(`ack(msg)`), after it has committed what the message carries (DESIGN.md, durability): a crash
before that leaves the message in the broker's session, which sends it again, in order, on the
next connect. Without it paho acknowledges on arrival.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

log = logging.getLogger("onekey.mqtt")

MISC_INTERVAL = 1.0
DISCONNECT_TIMEOUT = 5.0


READ_PACKETS_PER_WAKE = 64


@dataclass(frozen=True)
class TlsFiles:
    """The CA that signed the broker's certificate; this client's certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    # The packet id (QoS 1) and the connection it came on; `MqttClient.ack` needs both.
    mid: int = 0
    conn: int = 0


class MqttError(Exception):
    """Any MQTT failure: connection lost, publish or subscribe refused or timed out."""


class MqttConnectError(MqttError):
    """The connection could not be made: refused, unreachable, or TLS failure."""


def _mark_retrieved(fut: asyncio.Future[Any]) -> None:
    # A caller may drop a future it does not care about; keep asyncio from logging
    # "exception was never retrieved" for it. Awaiting it still raises.
    if not fut.cancelled():
        fut.exception()


def _tls_hint(text: str) -> str:
    low = text.lower()
    if "certificate required" in low or "certificate_required" in low:
        return "the broker requires a client certificate: give TlsFiles a cert and key"
    if "unknown ca" in low or "unknown_ca" in low:
        return "the broker does not trust this client certificate's CA"
    if "bad certificate" in low or "certificate unknown" in low or "bad_certificate" in low:
        return "the broker rejected this client certificate"
    if "expired" in low:
        return "a certificate has expired; issue a new one"
    return ""


class _TlsContext(ssl.SSLContext):
    """Remembers the socket it wrapped, so that one whose handshake failed inside paho
    (which then drops it without closing it) can be closed."""

    wrapped: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        self.wrapped = sock
        return sock


class MqttClient:
    """An MQTT 3.1.1 client on the running asyncio loop. The constructor does no I/O."""

    def __init__(
        self,
        client_id: str,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        clean_session: bool = True,
        keepalive: int = 30,
        will: Will | None = None,
        max_inflight: int = 1000,
        max_queued: int = 0,
        manual_ack: bool = False,
    ) -> None:
        self.client_id = client_id
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.tls = tls
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.will = will
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.manual_ack = manual_ack
        self._conn_serial = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._paho: paho.Client | None = None
        self._fd: int | None = None
        self._connected = False
        self._disconnecting = False
        self._connack: asyncio.Future[bool] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._lost_exc: MqttError | None = None
        self._queue: asyncio.Queue[Message | MqttError | None] = asyncio.Queue()
        self._pubs: dict[int, asyncio.Future[None]] = {}
        self._subs: dict[int, tuple[str, asyncio.Future[None]]] = {}
        self._misc_task: asyncio.Task[None] | None = None
        self._last_error = ""
        self._tls_ctx: _TlsContext | None = None
        self.session_present = False

    # -- public API ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    def __repr__(self) -> str:
        state = "connected" if self._connected else "not connected"
        return f"<MqttClient {self.client_id} {self.host}:{self.port} {state}>"

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect and wait for a successful CONNACK. Raises MqttConnectError."""
        if self._connected:
            raise MqttError(f"{self.client_id}: already connected")
        self._reset()
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        client = self._make_paho(timeout)
        self._paho = client
        self._conn_serial += 1
        self._connack = loop.create_future()
        self._connack.add_done_callback(_mark_retrieved)
        self._closed = loop.create_future()
        self._closed.add_done_callback(_mark_retrieved)
        where = f"{self.host}:{self.port}"
        log.debug("client=%s event=connecting broker=%s tls=%s", self.client_id, where, bool(self.tls))
        opening = loop.run_in_executor(
            None, client.connect, self.host, self.port, self.keepalive
        )
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(opening)
                self.session_present = await self._connack
        except BaseException as exc:
            err = self._connect_error(exc, timeout)
            self._lost(err if isinstance(err, MqttError) else None, client)
            ctx = self._tls_ctx

            def close(_f: object = None) -> None:
                self._close_socket(client)
                self._close_failed_tls(ctx)

            if opening.done():
                close()
            else:
                # The executor thread is still connecting; close what it opens when it ends.
                opening.add_done_callback(close)
            if err is exc or isinstance(exc, asyncio.CancelledError):
                raise
            raise err from None
        self._connected = True
        self._misc_task = loop.create_task(self._misc_loop(client), name=f"mqtt-misc-{self.client_id}")
        log.info(
            "client=%s event=connected broker=%s session_present=%s",
            self.client_id,
            where,
            self.session_present,
        )

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Publish; with QoS 1 return once the broker's PUBACK has arrived."""
        fut = self.publish_nowait(topic, payload, qos, retain)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise MqttError(f"no PUBACK for {topic} within {timeout:g} s") from None
        finally:
            if not fut.done():
                fut.cancel()

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Queue a publish; the future completes on PUBACK (QoS 1) or once written (QoS 0).

        Publishes go out in call order, so a caller may pipeline many and await them later.
        Raises MqttError at once when not connected or when the send queue is full.
        """
        client = self._require_connected()
        loop = self._require_loop()
        try:
            info = client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:
            raise MqttError(f"cannot publish on {topic!r}: {exc}") from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttError(f"cannot publish on {topic!r}: {paho.error_string(info.rc)}")
        fut: asyncio.Future[None] = loop.create_future()
        fut.add_done_callback(_mark_retrieved)
        mid = info.mid
        self._pubs[mid] = fut
        fut.add_done_callback(lambda f: self._forget_pub(mid, f))
        return fut

    async def subscribe(
        self,
        topic: str,
        qos: int = 1,
        timeout: float = 10.0,
    ) -> None:
        """Subscribe and wait for the SUBACK; raises MqttError if the broker refuses."""
        client = self._require_connected()
        loop = self._require_loop()
        try:
            rc, mid = client.subscribe(topic, qos)
        except ValueError as exc:
            raise MqttError(f"cannot subscribe to {topic!r}: {exc}") from None
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"cannot subscribe to {topic!r}: {paho.error_string(rc)}")
        fut: asyncio.Future[None] = loop.create_future()
        self._subs[mid] = (topic, fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise MqttError(f"no SUBACK for {topic} within {timeout:g} s") from None
        finally:
            self._subs.pop(mid, None)
        log.debug("client=%s event=subscribed topic=%s qos=%s", self.client_id, topic, qos)

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Incoming messages in arrival order. Ends with MqttError when the connection is
        lost, and normally after disconnect(). Use one consumer per connection."""
        while True:
            if self._queue.empty():
                if self._lost_exc is not None:
                    raise self._lost_exc
                if self._closed is None or self._closed.done():
                    return
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, MqttError):
                raise item
            yield item

    def ack(self, msg: Message) -> None:
        """PUBACK `msg` (manual_ack only; nothing for QoS 0). Call it after what the message
        carries is committed. MQTT 3.1.1 §4.6 asks for PUBACKs in arrival order: ack messages
        in the order `messages()` gave them. If the connection has gone, this does nothing:
        the broker sends the message again on the next connect."""
        if not self.manual_ack or msg.qos == 0:
            return
        client = self._paho
        if client is None or not self._connected or msg.conn != self._conn_serial:
            return  # a message of an earlier connection: the broker sends it again
        client.ack(msg.mid, msg.qos)

    def closed(self) -> asyncio.Future[None]:
        """Completes when this connection ends: with MqttError if lost, with None after
        disconnect()."""
        if self._closed is None:
            raise MqttError(f"{self.client_id}: connect() has not been called")
        return self._closed

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker then drops the will) and close. Safe to call twice."""
        client, closed = self._paho, self._closed
        if client is None or closed is None or closed.done():
            if client is not None:
                self._close_socket(client)
            return
        self._disconnecting = True
        if self._connected:
            client.disconnect()
            try:
                async with asyncio.timeout(DISCONNECT_TIMEOUT):
                    await asyncio.shield(closed)
            except (TimeoutError, MqttError):
                pass
        self._lost(None, client)
        self._close_socket(client)

    async def abort(self) -> None:
        """Drop the connection without DISCONNECT, as a power cut would: the broker then
        publishes the will. For tests and simulations."""
        client, closed = self._paho, self._closed
        if client is None or closed is None or closed.done():
            return
        self._disconnecting = True
        self._lost(None, client)
        self._close_socket(client)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    # -- setup -------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._fd = None
        self._disconnecting = False
        self._lost_exc = None
        self._last_error = ""
        self._queue = asyncio.Queue()
        self._pubs = {}
        self._subs = {}
        self.session_present = False

    def _tls_context(self, tls: TlsFiles) -> _TlsContext:
        ctx = _TlsContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and hostname check
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_verify_locations(cafile=str(tls.ca))
            if tls.cert is not None:
                ctx.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
        except (OSError, ssl.SSLError) as exc:
            raise MqttConnectError(
                f"cannot load TLS files (ca={tls.ca}, cert={tls.cert}, key={tls.key}): {exc}"
            ) from None
        return ctx

    def _make_paho(self, timeout: float) -> paho.Client:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self.clean_session,
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=self.manual_ack,
        )
        client.connect_timeout = timeout
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(self.max_queued)
        if self.username is not None:
            client.username_pw_set(self.username, self._password)
        if self.will is not None:
            w = self.will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        self._tls_ctx = None
        if self.tls is not None:
            self._tls_ctx = self._tls_context(self.tls)
            client.tls_set_context(self._tls_ctx)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_log = self._on_log
        return client

    def _connect_error(self, exc: BaseException, timeout: float) -> BaseException:
        where = f"{self.host}:{self.port}"
        if isinstance(exc, MqttError | asyncio.CancelledError):
            return exc
        if isinstance(exc, ssl.SSLCertVerificationError):
            return MqttConnectError(
                f"TLS: the certificate of {where} failed verification ({exc.verify_message}); "
                f"check that {self.tls.ca if self.tls else 'the CA file'} is the CA that "
                f"signed the broker's certificate and that {self.host!r} is in its "
                "subject alternative names"
            )
        if isinstance(exc, ssl.SSLError):
            hint = _tls_hint(str(exc))
            return MqttConnectError(
                f"TLS handshake with {where} failed: {exc}" + (f" ({hint})" if hint else "")
            )
        if isinstance(exc, TimeoutError):
            return MqttConnectError(
                f"no answer from {where} within {timeout:g} s: is the broker reachable and is "
                "this the right port?"
            )
        if isinstance(exc, ConnectionRefusedError):
            return MqttConnectError(
                f"connection to {where} refused: no broker listens there (is it running?)"
            )
        if isinstance(exc, OSError):
            hint = " (is this a plain MQTT port? then connect without TLS)" if self.tls else ""
            return MqttConnectError(f"cannot reach {where}: {exc}{hint}")
        return MqttConnectError(f"cannot connect to {where}: {exc!r}")

    # -- paho socket callbacks (may run in the executor thread while connecting) --------------
    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._in_loop(self._add_reader, client, sock.fileno())

    def _on_socket_close(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._in_loop(self._remove_fd, sock.fileno())

    def _on_socket_register_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._in_loop(self._add_writer, client, sock.fileno())

    def _on_socket_unregister_write(
        self, client: paho.Client, _userdata: Any, sock: Any
    ) -> None:
        self._in_loop(self._remove_writer, sock.fileno())

    def _add_reader(self, client: paho.Client, fd: int) -> None:
        if client is not self._paho or self._loop is None:
            return
        self._fd = fd
        self._loop.add_reader(fd, self._readable, client)

    def _add_writer(self, client: paho.Client, fd: int) -> None:
        if client is not self._paho or self._loop is None or self._fd != fd:
            return
        self._loop.add_writer(fd, self._writable, client)

    def _remove_writer(self, fd: int) -> None:
        if self._loop is not None and fd == self._fd and fd >= 0:
            self._loop.remove_writer(fd)

    def _remove_fd(self, fd: int) -> None:
        if self._loop is not None and fd == self._fd and fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
            self._fd = None

    def _readable(self, client: paho.Client) -> None:
        try:
            # Several packets per wake-up: a burst is then handled in few loop turns (and
            # committed in few transactions), yet the loop stays responsive.
            client.loop_read(max_packets=READ_PACKETS_PER_WAKE)
        except Exception as exc:  # paho raised from inside its read path: the link is unusable
            self._lost(MqttError(f"read failed: {exc!r}"), client)
            return
        sock = client.socket()
        if isinstance(sock, ssl.SSLSocket) and self._loop is not None:
            try:
                pending = sock.pending()
            except (OSError, ValueError):
                pending = 0
            if pending:
                # TLS already holds decrypted bytes the socket will not signal again.
                self._loop.call_soon(self._readable, client)

    def _writable(self, client: paho.Client) -> None:
        try:
            client.loop_write()
        except Exception as exc:  # same boundary as _readable
            self._lost(MqttError(f"write failed: {exc!r}"), client)

    async def _misc_loop(self, client: paho.Client) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL)
            client.loop_misc()

    # -- paho protocol callbacks (loop thread) -----------------------------------------------
    def _on_log(self, _client: paho.Client, _userdata: Any, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._last_error = buf
            log.debug("client=%s paho_error=%r", self.client_id, buf)

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        flags: paho.ConnectFlags,
        reason: Any,
        _props: Any,
    ) -> None:
        fut = self._connack
        if fut is None or fut.done():
            return
        if reason.is_failure:
            fut.set_exception(MqttConnectError(self._refusal(reason)))
        else:
            fut.set_result(bool(flags.session_present))

    def _refusal(self, reason: Any) -> str:
        where = f"{self.host}:{self.port}"
        value = getattr(reason, "value", reason)
        if value in (134, 4):
            how = "check the user name and password (mosquitto_passwd on the broker)"
        elif value in (135, 5):
            how = (
                "not authorised: Mosquitto answers this to anonymous clients and to a wrong "
                "user name or password; check the credentials in the broker's password file"
            )
        elif value in (133, 2):
            how = "the broker rejected the client id"
        else:
            how = "see the broker's log"
        return f"{where} refused the connection of {self.client_id!r}: {reason} ({how})"

    def _on_disconnect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason: Any,
        _props: Any,
    ) -> None:
        if self._disconnecting and not reason.is_failure:
            self._lost(None, client)
            return
        detail = self._last_error or f"closed by the broker or the network ({reason})"
        self._lost(MqttError(f"connection to {self.host}:{self.port} lost: {detail}"), client)

    def _on_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, _reason: Any, _props: Any
    ) -> None:
        fut = self._pubs.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reasons: list[Any],
        _props: Any,
    ) -> None:
        entry = self._subs.get(mid)
        if entry is None:
            return
        topic, fut = entry
        if fut.done():
            return
        if any(r.is_failure for r in reasons):
            fut.set_exception(
                MqttError(f"the broker refused the subscription to {topic!r} (not in its ACL?)")
            )
        else:
            fut.set_result(None)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            log.warning("client=%s event=dropped reason=topic_not_utf8", self.client_id)
            return
        self._queue.put_nowait(
            Message(
                topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                mid=int(msg.mid), conn=self._conn_serial,
            )
        )

    # -- teardown ----------------------------------------------------------------------------
    def _forget_pub(self, mid: int, fut: asyncio.Future[None]) -> None:
        if self._pubs.get(mid) is fut:
            del self._pubs[mid]

    def _lost(self, exc: MqttError | None, client: paho.Client | None = None) -> None:
        """The connection ended (exc None: by our own disconnect). Runs once per connection."""
        if client is not None and client is not self._paho:
            return
        closed = self._closed
        if closed is None or closed.done():
            return
        was_connected = self._connected
        self._connected = False
        if self._fd is not None:
            self._remove_fd(self._fd)
        if self._misc_task is not None:
            self._misc_task.cancel()
            self._misc_task = None
        failure = exc or MqttError(f"{self.client_id}: disconnected")
        connack = self._connack
        if connack is not None and not connack.done():
            detail = self._last_error or "the broker closed the connection"
            if self.tls:
                hint = _tls_hint(detail)
            else:
                hint = "if this port expects TLS, give tls=TlsFiles(...)"
            connack.set_exception(
                MqttConnectError(
                    f"{self.host}:{self.port} closed the connection before CONNACK: {detail}"
                    + (f" ({hint})" if hint else "")
                )
            )
        for fut in list(self._pubs.values()):
            if not fut.done():
                fut.set_exception(MqttError(f"connection ended before PUBACK: {failure}"))
        self._pubs.clear()
        for topic, fut in list(self._subs.values()):
            if not fut.done():
                fut.set_exception(MqttError(f"connection ended before SUBACK ({topic}): {failure}"))
        self._subs.clear()
        if exc is None:
            self._queue.put_nowait(None)
            closed.set_result(None)
            if was_connected:
                log.info("client=%s event=disconnected", self.client_id)
        else:
            self._lost_exc = exc
            self._queue.put_nowait(exc)
            closed.set_exception(exc)
            if was_connected:
                log.warning("client=%s event=connection_lost reason=%r", self.client_id, str(exc))

    def _close_socket(self, client: paho.Client) -> None:
        """Close `client`'s socket ourselves (failed connect, or no answer to DISCONNECT)."""
        sock = client.socket()
        if sock is None:
            return
        try:
            fd = sock.fileno()
        except (OSError, ValueError):
            fd = -1
        if fd >= 0 and fd == self._fd and client is self._paho:
            self._remove_fd(fd)
        sock.close()

    def _close_failed_tls(self, ctx: _TlsContext | None) -> None:
        if ctx is not None and ctx.wrapped is not None:
            ctx.wrapped.close()
            ctx.wrapped = None

    # -- helpers -----------------------------------------------------------------------------
    def _require_connected(self) -> paho.Client:
        if not self._connected or self._paho is None:
            raise MqttError(f"{self.client_id}: not connected to {self.host}:{self.port}")
        return self._paho

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise MqttError(f"{self.client_id}: connect() has not been called")
        return self._loop
