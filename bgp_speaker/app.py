"""Composition root: build every part from the settings, run them, stop them cleanly.

Long-lived tasks run in one TaskGroup; a root task that fails stops the daemon with a non-zero
exit so Kubernetes restarts it. SIGTERM/SIGINT start the graceful stop:

1. stop following inputs (no new passes);
2. optionally re-announce everything with GRACEFUL_SHUTDOWN (65535:0) and wait
   ``shutdown.drain_seconds`` so the core moves traffic to other paths first;
3. withdraw everything and wait for ExaBGP's acknowledgement;
4. stop ExaBGP and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from bgp_speaker import __version__, assembly, livecfg, logs, statusdoc
from bgp_speaker.adapters import netlink
from bgp_speaker.adapters.exabgp.speaker import ExabgpSpeaker, session_config_from_settings
from bgp_speaker.adapters.http import HttpServer
from bgp_speaker.adapters.interconnect import InterconnectRouting
from bgp_speaker.aiokit import Trigger
from bgp_speaker.core import desired as desired_mod
from bgp_speaker.core import health
from bgp_speaker.core.model import GRACEFUL_SHUTDOWN, PeerState
from bgp_speaker.errors import BgpSpeakerError
from bgp_speaker.gatekeeper import DataplaneGate
from bgp_speaker.metrics import Metrics
from bgp_speaker.observers import Activity, EventSink
from bgp_speaker.ports import CandidateSource
from bgp_speaker.reconciler import Reconciler
from bgp_speaker.settings import Settings, from_mapping

if TYPE_CHECKING:
    from bgp_speaker.adapters.kube.configwatch import ConfigWatch

logger = logging.getLogger(__name__)
HOUSEKEEPING_SECONDS = 1.0


class Daemon:
    """Every part of one speaker, their tasks, and the graceful stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        live: livecfg.LiveConfig | None = None,
        config_watch: ConfigWatch | None = None,
        upstream_metrics: bool = False,
    ) -> None:
        self.settings = settings
        self.live = live
        self.config_watch = config_watch
        self.registry = CollectorRegistry()
        self.metrics = Metrics(
            self.registry,
            version=__version__,
            upstream_names=upstream_metrics,
            node=os.environ.get("KUBE_NODE_NAME", "").lower(),
        )
        self.metrics.set_peer_asns({str(p.address): p.asn for p in settings.peers})
        if live is not None:
            self.metrics.set_config(valid=live.state.valid, pending_restart=0)
        self.trigger = Trigger(coalesce=settings.reconcile.coalesce_seconds)
        built = assembly.build_source(settings)
        self.source: CandidateSource = built.source
        self.gateway = built.gateway
        self._kube_source = built.kube_source
        self._recorder = built.recorder
        self.events: EventSink | None = built.recorder
        self._router_id: IPv4Address | None = None
        self._config_dirty = asyncio.Event()
        self.next_hops = netlink.InterconnectWatcher(
            interface=settings.interconnect.interface,
            pools=assembly.not_next_hops(settings.pools),
            override_ipv4=settings.interconnect.next_hop_ipv4,
            override_ipv6=settings.interconnect.next_hop_ipv6,
        )
        gateway_event = self._recorder.gateway_event if self._recorder is not None else None
        self.activity = Activity(metrics=self.metrics, events=self.events, gateway_event=gateway_event)
        self.speaker: ExabgpSpeaker | None = None
        self.reconciler: Reconciler | None = None
        self.http: HttpServer | None = None
        self.gate: DataplaneGate | None = None
        self.routing: InterconnectRouting | None = None
        self.heartbeat = time.time()
        self._stop = asyncio.Event()
        self._failed: str | None = None

    def _speaker_changed(self) -> None:
        """ExaBGP (re)connected or a session changed: reconcile; tell metrics and Events now."""
        self.trigger.pull("speaker")
        if self.speaker is not None:
            self.activity.on_peers(self.speaker.peer_statuses())

    async def _housekeeping(self) -> None:
        while True:
            self.heartbeat = time.time()
            if self.speaker is not None:
                self.activity.on_peers(self.speaker.peer_statuses())
                self.metrics.set_exabgp_up(self.speaker.running)
                self.activity.on_acks(self.speaker.channel.acks)
            self.activity.on_dataplane(self.gate.status() if self.gate is not None else None)
            snapshot = self.source.snapshot()
            stale = time.time() - snapshot.fresh_at if snapshot.fresh_at is not None else None
            self.metrics.set_source(synced=snapshot.synced, stale_seconds=stale)
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    # --- probes and status -----------------------------------------------------------

    def liveness(self) -> health.Verdict:
        speaker = self.speaker
        return health.liveness(
            now=time.time(),
            loop_heartbeat=self.heartbeat,
            exabgp_running=speaker.running if speaker is not None else True,
            exabgp_restarting_since=speaker.restarting_since if speaker is not None else None,
            max_heartbeat_age=30.0,
            max_restart_seconds=300.0,
        )

    def readiness(self) -> health.Verdict:
        snapshot = self.source.snapshot()
        statuses = self.speaker.peer_statuses() if self.speaker is not None else {}
        established = sum(1 for s in statuses.values() if s.state is PeerState.ESTABLISHED)
        return health.readiness(
            first_sync_done=self.reconciler is not None and self.reconciler.first_sync_done,
            established_peers=established,
            configured_peers=len(self.settings.peers),
            min_established=self.settings.min_established_peers,
            source_synced=snapshot.synced,
            source_stale_seconds=time.time() - snapshot.fresh_at if snapshot.fresh_at else None,
            source_error=snapshot.error,
            next_hops_stale=bool(self.next_hops.status().get("stale", False)),
        )

    def status(self) -> dict[str, Any]:
        live, ready = self.liveness(), self.readiness()
        speaker = self.speaker
        return statusdoc.build(
            version=__version__,
            gateway=self.gateway,
            now=time.time(),
            source_name=self.source.name,
            snapshot=self.source.snapshot(),
            next_hops=self.next_hops.current(),
            interface=self.settings.interconnect.interface,
            next_hop_detail=self.next_hops.status(),
            exabgp=speaker.status() if speaker is not None else {"running": False},
            peers=[
                statusdoc.PeerInfo(address=p.address, asn=p.asn, description=p.description)
                for p in self.settings.peers
            ],
            peer_statuses=speaker.peer_statuses() if speaker is not None else {},
            report=self.reconciler.last_report if self.reconciler is not None else None,
            actual=self.reconciler.actual if self.reconciler is not None else {},
            health={
                "live": live.ok,
                "ready": ready.ok,
                "reasons": [*live.reasons, *ready.reasons],
                "notes": [*live.notes, *ready.notes],
            },
            extra={
                "dataplane": self.gate.status() if self.gate is not None else {"mode": "off"},
                "interconnect": self.routing.status().as_dict() if self.routing is not None else None,
                "config": self._config_status(),
                "capabilities": self.capabilities(),
            },
        )

    def _config_status(self) -> dict[str, Any] | None:
        if self.live is None:
            return None
        watch = self.config_watch.status() if self.config_watch is not None else None
        return {**self.live.status(), "watch": watch}

    def capabilities(self) -> dict[str, Any]:
        return assembly.capabilities(self.settings)

    # --- live configuration (livecfg.Target) -----------------------------------------

    def apply_routes(self, settings: Settings) -> None:
        self.settings = settings
        self.next_hops.pools = assembly.not_next_hops(settings.pools)
        if self.reconciler is not None:
            self.reconciler.policy = settings.routing_policy()
        if self._kube_source is not None:
            self._kube_source.reconfigure(settings.source.kubernetes)
        self.metrics.set_peer_asns({str(p.address): p.asn for p in settings.peers})
        logging.getLogger().setLevel(settings.logging.level)
        self.trigger.pull("config")

    async def apply_sessions(self, settings: Settings, changes: livecfg.Changes) -> None:
        assert self.speaker is not None
        router_id = settings.router_id or self._router_id
        assert router_id is not None
        session = session_config_from_settings(settings, router_id=router_id, relay_command=())
        if not await self.speaker.reconfigure(session):
            logger.warning("ExaBGP did not confirm the reload; it reads the new configuration when it starts")
        if self.reconciler is not None:
            self.reconciler.invalidate()  # a re-created neighbor starts with an empty adj-rib-out
        self.trigger.pull("config:sessions")

    def config_event(self, reason: str, type_: str, message: str) -> None:
        if self._recorder is not None:
            self._recorder.gateway_event(reason, type_, message)

    def config_state(self, *, valid: bool, pending_restart: int) -> None:
        self.metrics.set_config(valid=valid, pending_restart=pending_restart)

    async def _follow_config(self) -> None:
        assert self.live is not None
        assert self.config_watch is not None
        while True:
            await self._config_dirty.wait()
            self._config_dirty.clear()
            try:
                await self.live.update(
                    self.config_watch.data(), version=self.config_watch.version, target=self
                )
            except Exception:  # a bug here must not stop announcing: keep the running config
                logger.exception("applying the live configuration failed; keeping the running one")

    # --- lifecycle -------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def _root(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("root task failed; stopping", extra={"task": name})
            self._failed = f"{name}: {exc}"
        else:
            if self._stop.is_set():
                return  # a part finishing during the stop we asked for is no failure
            logger.error("root task exited unexpectedly; stopping", extra={"task": name})
            self._failed = f"{name} exited"
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        router_id = self._router_id = await assembly.router_id(self.settings)
        self.routing = assembly.build_routing(self.settings, environ=os.environ)
        self.gate = await assembly.build_dataplane(self.settings, trigger=self.trigger)
        self.speaker = ExabgpSpeaker(
            settings=self.settings, router_id=router_id, on_change=self._speaker_changed
        )
        self.speaker.on_restart = self.metrics.exabgp_restarted
        self.reconciler = Reconciler(
            speaker=self.speaker,
            source=self.source,
            next_hops=self.next_hops,
            policy=self.settings.routing_policy(),
            trigger=self.trigger,
            resync_seconds=self.settings.reconcile.resync_seconds,
            gate=self.gate,
            observers=[self.activity.on_pass],
        )
        if self.settings.http.listen:
            self.http = HttpServer(
                listen=self.settings.http.listen,
                registry=self.registry,
                status=self.status,
                liveness=self.liveness,
                readiness=self.readiness,
            )
            await self.http.start()
        logger.info(
            "bgp-speaker starting",
            extra={"version": __version__, "router_id": str(router_id), "peers": len(self.settings.peers)},
        )
        await self.speaker.start()
        async with asyncio.TaskGroup() as group:
            inputs = [
                group.create_task(self._root(self.source.run(trigger=self.trigger), name="source")),
                group.create_task(self._root(self.next_hops.run(trigger=self.trigger), name="next-hops")),
                group.create_task(self._root(self.reconciler.run(), name="reconciler")),
                group.create_task(self._root(self._housekeeping(), name="housekeeping")),
            ]
            if self.gate is not None:
                inputs.append(
                    group.create_task(
                        self._root(self.gate.watcher.run(trigger=self.trigger), name="dataplane")
                    )
                )
            if self.routing is not None:
                inputs.append(group.create_task(self._root(self.routing.run(), name="interconnect")))
            if self.events is not None:
                inputs.append(group.create_task(self._root(self.events.run(), name="events")))
            if self.live is not None and self.config_watch is not None:
                watch = self.config_watch.run(on_change=self._config_dirty.set)
                inputs.append(group.create_task(self._root(watch, name="config-watch")))
                inputs.append(group.create_task(self._root(self._follow_config(), name="config")))
            if self.live is not None and self.live.state.error is not None:
                self.config_event(
                    "ConfigInvalid", "Warning", f"started without the ConfigMap: {self.live.state.error}"
                )
            degraded = self.capabilities()["degraded"]
            if degraded:
                logger.warning(
                    "no NET_ADMIN capability: these features report their state but cannot act",
                    extra={"features": ",".join(degraded)},
                )
            speaker_task = group.create_task(self._root(self.speaker.run(), name="exabgp"))
            self.trigger.pull("start")
            await self._stop.wait()
            for task in inputs:
                task.cancel()
            if self._failed is None:
                await self._graceful_stop()
            await self.speaker.stop()
            speaker_task.cancel()
        if self.http is not None:
            await self.http.stop()
        if self._failed is not None:
            logger.error("bgp-speaker stopped after a failure", extra={"reason": self._failed})
            return 1
        logger.info("bgp-speaker stopped")
        return 0

    async def _graceful_stop(self) -> None:
        assert self.reconciler is not None
        assert self.speaker is not None
        shutdown = self.settings.shutdown
        try:
            async with asyncio.timeout(shutdown.drain_seconds + 2 * shutdown.withdraw_timeout + 5):
                actual = {peer: dict(rib) for peer, rib in self.reconciler.actual.items()}
                if shutdown.graceful_shutdown and any(actual.values()) and self.speaker.available:
                    logger.info(
                        "draining: re-announcing with GRACEFUL_SHUTDOWN",
                        extra={"community": GRACEFUL_SHUTDOWN, "seconds": shutdown.drain_seconds},
                    )
                    await self.reconciler.converge(
                        routes=desired_mod.with_graceful_shutdown(actual, community=GRACEFUL_SHUTDOWN)
                    )
                    await asyncio.sleep(shutdown.drain_seconds)
                if self.speaker.available:
                    async with asyncio.timeout(shutdown.withdraw_timeout):
                        report = await self.reconciler.converge(routes={})
                        await self.speaker.settle()
                    logger.info("withdrew every route", extra={"withdrawn": report.withdrawn})
        except TimeoutError:
            logger.warning("graceful stop timed out; stopping ExaBGP anyway")
        except BgpSpeakerError as exc:
            logger.warning("graceful stop failed; stopping ExaBGP anyway", extra={"reason": str(exc)})


async def run(settings: Settings, **kwargs: Any) -> int:
    assembly.settle_heap()
    daemon = Daemon(settings, **kwargs)
    with contextlib.suppress(asyncio.CancelledError):
        return await daemon.run()
    return 1


async def run_live(
    base: dict[str, Any], *, origin: str, environ: dict[str, str], upstream_metrics: bool = False
) -> int:
    """Run with the live configuration: ``base`` (the compat mapping or the config file) with the
    ConfigMap's overlays merged over it, followed while running. Only with the Kubernetes source;
    env ``BGP_SPEAKER_CONFIGMAP`` names the ConfigMap (default ``bgp-speaker``, empty: none).
    Raises ConfigError when ``base`` itself is invalid."""
    first = from_mapping(base, origin=origin, environ=environ)
    name = environ.get("BGP_SPEAKER_CONFIGMAP", "bgp-speaker").strip()
    if first.source.kind != "kubernetes" or not name:
        return await run(first, upstream_metrics=upstream_metrics)
    from bgp_speaker.adapters import kube
    from bgp_speaker.adapters.kube import configwatch

    kube_config = first.source.kubernetes
    watch = configwatch.ConfigWatch(
        client_config=kube.load_configuration(kube_config.kubeconfig, environ=environ),
        namespace=configwatch.pod_namespace(environ),
        configmap=name,
    )
    await asyncio.to_thread(watch.fetch)
    live = livecfg.LiveConfig(
        base=base, origin=origin, gateway=kube.gateway_name(kube_config, environ=environ), environ=environ
    )
    settings = live.initial(watch.data(), version=watch.version)
    logs.setup(level=settings.logging.level, fmt=settings.logging.format)
    return await run(settings, live=live, config_watch=watch, upstream_metrics=upstream_metrics)
