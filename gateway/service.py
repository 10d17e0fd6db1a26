"""The gateway process: opens the store, loads keys, runs the village and centre sides."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging

from gateway.broadcasts import BroadcastSide
from gateway.config import GatewayConfig
from gateway.contactlist import ContactList
from gateway.errors import ConfigError
from gateway.fallback import FallbackSide
from gateway.forwarder import CentreSide
from gateway.metrics import Metrics
from gateway.registry import Registry
from gateway.store import Store
from gateway.supervision import Supervisor
from gateway.village import VillageSide
from transport import servicelock
from transport.keys import KeyFileError, load_private_key, load_public_hex
from transport.supervisor import supervise

log = logging.getLogger("onekey.gateway")

REGISTRY_POLL_S = 2.0


class Gateway:
    """Constructing does nothing; `run()` starts everything and runs until cancelled."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.store = Store(cfg.db_path, observe_commit=self.metrics.commit_seconds.observe)
        self.registry = Registry()

    async def run(self) -> None:
        try:
            key = load_private_key(self.cfg.key_path)
            centre_key = load_public_hex(self.cfg.centre_public_key)
        except KeyFileError as exc:
            # Fail closed: without our key or the centre's pinned key nothing may be sent.
            raise ConfigError(f"gateway keys: {exc}") from None
        for f in (self.cfg.centre_broker.ca, self.cfg.centre_broker.cert, self.cfg.centre_broker.key):
            if not f.is_file():
                raise ConfigError(f"centre broker TLS file {f} is missing; run `onekey enrol`")
        # Held while the store is open, so that `onekey gateway restore` refuses to run.
        lock = servicelock.ServiceLock(self.cfg.db_path)
        try:
            lock.acquire()
        except servicelock.ServiceLockedError as exc:
            raise ConfigError(
                f"{exc}; is another gateway running on this state_dir? stop it first"
            ) from None
        try:
            await self.store.start()
            try:
                await self.registry.reload(self.store)
                supervisor = Supervisor(
                    self.cfg.supervision, self.store, self.registry, self.metrics
                )
                # Who was lost stays lost; everyone gets a fresh grace from this start.
                await supervisor.init()
                village = VillageSide(
                    self.cfg, self.store, self.registry, self.metrics, supervisor=supervisor
                )
                centre = CentreSide(
                    self.cfg, self.store, self.registry, self.metrics, key, centre_key, village
                )
                broadcasts = BroadcastSide(
                    self.cfg, self.store, self.registry, self.metrics, village, key, centre_key
                )
                await broadcasts.init()
                village.on_device_seen = broadcasts.device_seen
                village.on_device_offline = broadcasts.device_offline
                village.on_report = broadcasts.on_report
                centre.on_broadcast = broadcasts.on_centre_message
                broadcasts.centre_client = lambda: centre.client
                contact_list = ContactList(self.store, self.cfg.gateway_id, centre_key, self.metrics)
                await contact_list.init()
                centre.on_contacts = contact_list.on_centre_message
                centre.contacts_version = lambda: contact_list.version
                fallback = None
                if self.cfg.modem is not None:
                    fallback = FallbackSide(
                        self.cfg, self.cfg.modem, self.store, self.registry, self.metrics,
                        village, key, contact_list, lambda: centre.down_since,
                        lambda: centre.client,
                    )
                    await fallback.init()
                    modem_side = fallback
                    centre.modem_state = lambda: modem_side.modem_state
                # The downlink counter resumes above its reserved block (§4.2). Recent acks are
                # sent again by the village side each time its link comes up.
                await village.init()
                self.metrics.gauge("outbox", self.store.outbox_count)
                log.info(
                    "event=gateway_start id=%s village=%s devices=%d outbox=%s",
                    self.cfg.gateway_id, self.cfg.village, len(self.registry.devices),
                    self.metrics.gauges["outbox"],
                )
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(supervise("village", village.run, log=log))
                    tg.create_task(supervise("centre", centre.run, log=log))
                    tg.create_task(supervise("heartbeat", centre.heartbeat, log=log))
                    tg.create_task(supervise("supervision", supervisor.run, log=log))
                    tg.create_task(supervise("broadcasts", broadcasts.run, log=log))
                    tg.create_task(supervise("registry", self._watch_registry, log=log))
                    tg.create_task(supervise("metrics", self._write_metrics, log=log))
                    tg.create_task(supervise("admin", self._admin, log=log))
                    if fallback is not None:
                        tg.create_task(supervise("fallback", fallback.run, log=log))
            finally:
                with contextlib.suppress(OSError):  # a full disk must not hide why we stop
                    self.metrics.write(self.cfg.metrics_path)
                await self.store.close()
        finally:
            lock.release()

    async def _write_metrics(self) -> None:
        failing = False
        while True:
            # Group commit made visible: transactions against the events they carried.
            self.metrics.gauge("store_commits", self.store.commits)
            self.metrics.gauge("store_ops", self.store.committed_ops)
            self.metrics.gauge("store_failed_ops", self.store.failed_ops)
            self.metrics.gauge("store_writer_restarts", self.store.writer_restarts)
            # The backlog for the centre, kept exact by the store on every commit, so that it
            # shows whether the uplink is up or not.
            self.metrics.gauge("outbox", self.store.outbox_count)
            health = self.store.health
            self.metrics.gauge("store_ok", health.ok)
            self.metrics.gauge("store_full", health.full)
            try:
                self.metrics.write(self.cfg.metrics_path)
            except OSError as exc:
                # A full disk: the counters are still served on /metrics; written again later.
                if not failing:
                    log.warning("event=metrics_write_failed file=%s error=%r",
                                self.cfg.metrics_path, exc.strerror)
                failing = True
            else:
                failing = False
            await asyncio.sleep(0.5)

    async def _admin(self) -> None:
        # Imported here, in a thread: FastAPI takes a while to import, and the alarm path
        # must not wait for the admin API (provisioning) to come up.
        admin = await asyncio.to_thread(importlib.import_module, "gateway.admin")
        await admin.serve(self.cfg, self.store, self.registry, self.metrics)

    async def _watch_registry(self) -> None:
        while True:
            await asyncio.sleep(REGISTRY_POLL_S)
            if await self.registry.reload(self.store):
                log.info("event=registry_reloaded devices=%d", len(self.registry.devices))
            self.metrics.gauge("devices", len(self.registry.devices))
