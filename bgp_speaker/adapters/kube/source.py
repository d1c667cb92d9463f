"""The ``kubernetes`` candidate source: Kube-OVN objects in memory, selection on snapshot.

Watch events only update the in-memory store and pull the trigger (level-triggered); the
store keeps one selection verdict per IptablesEIP (:mod:`bgp_speaker.adapters.kube.selection`),
and :meth:`KubeSource.snapshot` re-evaluates only the EIPs the events since the last snapshot
can affect, with the pure rules of :mod:`bgp_speaker.core.kubeovn`. A relist, a change of the
gateway object or of the options, and a periodic safety check re-evaluate everything.

Through API server outages the store is never dropped: the last known good view keeps being
served, with ``error`` set and ``fresh_at`` frozen at the moment the first watch broke. A
malformed object is skipped and reported in ``details["malformed"]``; it never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from bgp_speaker.adapters.kube import client as kclient
from bgp_speaker.adapters.kube import watching
from bgp_speaker.adapters.kube.selection import IncrementalSelection
from bgp_speaker.aiokit import Trigger
from bgp_speaker.core import kubeovn
from bgp_speaker.core.kubeovn_facts import RuleKind
from bgp_speaker.errors import ConfigError
from bgp_speaker.ports import SourceSnapshot
from bgp_speaker.settings import KubernetesSourceConfig

logger = logging.getLogger(__name__)

EIPS = "iptables-eips"
GATEWAYS = "vpc-nat-gateways"
RULE_PLURALS: dict[RuleKind, str] = {
    "fip": "iptables-fip-rules",
    "snat": "iptables-snat-rules",
    "dnat": "iptables-dnat-rules",
}
RULE_KIND_OF: dict[str, RuleKind] = {plural: kind for kind, plural in RULE_PLURALS.items()}
#: How often everything is re-evaluated from scratch to check the incremental verdicts.
FULL_CHECK_SECONDS = 600.0
PLURALS = (EIPS, *RULE_PLURALS.values(), GATEWAYS)
KINDS = {
    EIPS: "IptablesEIP",
    GATEWAYS: "VpcNatGateway",
    "iptables-fip-rules": "IptablesFIPRule",
    "iptables-snat-rules": "IptablesSnatRule",
    "iptables-dnat-rules": "IptablesDnatRule",
}


@dataclass
class _Resource:
    objects: dict[str, watching.Obj] = field(default_factory=dict)
    listed: bool = False
    connected: bool = False
    #: Wall-clock time up to which this resource's view is known to be current.
    fresh_at: float | None = None
    error: str | None = None
    resource_version: str = ""
    events: int = 0
    relists: int = 0
    failures: int = 0


def gateway_name(config: KubernetesSourceConfig, *, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    name = config.gateway_name or env.get("GATEWAY_NAME", "").strip()
    if not name:
        raise ConfigError(
            "source.kubernetes.gateway_name is not set and GATEWAY_NAME is not in the environment "
            "(Kube-OVN injects it into the NAT gateway pod)"
        )
    return name


class KubeSource:
    """A :class:`bgp_speaker.ports.CandidateSource` over Kube-OVN's IptablesEIP and NAT rules."""

    name = "kubernetes"

    def __init__(
        self,
        *,
        config: KubernetesSourceConfig,
        gateway: str,
        client_config: client.Configuration,
        clock: Callable[[], float] = time.time,
        timing: watching.Timing | None = None,
        full_check_seconds: float = FULL_CHECK_SECONDS,
    ) -> None:
        self.config = config
        self.gateway = gateway
        self._client_config = client_config
        self._clock = clock
        self._timing = timing or watching.Timing()
        self._options = kubeovn.Options(
            gateway=gateway,
            policy=config.policy,
            annotation_prefix=config.annotation_prefix,
            hold_down_seconds=config.hold_down_seconds,
        )
        self._resources = {plural: _Resource() for plural in PLURALS}
        self._selection = IncrementalSelection(self._options)
        self._full_check_seconds = full_check_seconds
        self._last_full: float | None = None
        self._timer_deadline: float | None = None
        self._malformed: deque[str] = deque(maxlen=20)
        self._malformed_total = 0
        self._trigger: Trigger | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watchers: list[watching.Watcher] = []

    @classmethod
    def from_settings(
        cls, config: KubernetesSourceConfig, *, environ: Mapping[str, str] | None = None, **kwargs: Any
    ) -> KubeSource:
        """Resolve the gateway name and the cluster connection. Raises ConfigError."""
        return cls(
            config=config,
            gateway=gateway_name(config, environ=environ),
            client_config=kclient.load_configuration(config.kubeconfig, environ=environ),
            **kwargs,
        )

    def reconfigure(self, config: KubernetesSourceConfig) -> None:
        """Apply new selection settings (policy, hold-down, annotation prefix) live: the next
        snapshot selects with them. The connection settings are not re-read."""
        self.config = config
        self._options = kubeovn.Options(
            gateway=self.gateway,
            policy=config.policy,
            annotation_prefix=config.annotation_prefix,
            hold_down_seconds=config.hold_down_seconds,
        )
        self._selection.reconfigure(self._options)

    # --- lookups for the event recorder ---------------------------------------------------------

    def lookup(self, plural: str, name: str) -> Mapping[str, Any] | None:
        """The last known object (as the API server sent it), or None."""
        return self._resources[plural].objects.get(name) if plural in self._resources else None

    def gateway_object(self) -> Mapping[str, Any] | None:
        return self._resources[GATEWAYS].objects.get(self.gateway)

    # --- the snapshot ---------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return all(r.listed for r in self._resources.values())

    def _select(self, now: float) -> kubeovn.Selection:
        if self._last_full is None:
            self._last_full = now
        elif now - self._last_full >= self._full_check_seconds:
            self._last_full = now
            wrong = self._selection.verify(now)
            if wrong:
                logger.warning(
                    "incremental selection disagreed with a full recomputation; corrected",
                    extra={"op": "verify", "eips": wrong},
                )
        selection = self._selection.select(now)
        if selection.next_deadline != self._timer_deadline:
            self._arm_timer(selection.next_deadline, now)
        return selection

    def _arm_timer(self, deadline: float | None, now: float) -> None:
        """Pull the trigger when a hold-down ends: no watch event would announce that."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = None
        if deadline is None or self._loop is None or self._trigger is None:
            return
        self._timer_deadline = deadline
        trigger = self._trigger
        delay = max(0.0, deadline - now) + 0.05
        self._timer = self._loop.call_later(delay, self._hold_down_ended, trigger)

    def _hold_down_ended(self, trigger: Trigger) -> None:
        self._timer, self._timer_deadline = None, None
        trigger.pull("kubernetes:hold-down")

    def fresh_at(self, now: float) -> float | None:
        """``now`` while every watch is established; else when the first one broke."""
        stale = [r.fresh_at for r in self._resources.values() if not r.connected]
        if not stale:
            return now
        if any(t is None for t in stale):
            return None
        return min(t for t in stale if t is not None)

    def snapshot(self) -> SourceSnapshot:
        now = self._clock()
        errors = [f"{plural}: {r.error}" for plural, r in self._resources.items() if r.error]
        error = "; ".join(errors) if errors else None
        details: dict[str, object] = {
            "gateway": self.gateway,
            "policy": self.config.policy,
            "hold_down_seconds": self.config.hold_down_seconds,
            "resources": {
                plural: {
                    "objects": len(r.objects),
                    "listed": r.listed,
                    "connected": r.connected,
                    "resource_version": r.resource_version,
                    "events": r.events,
                    "relists": r.relists,
                    "failures": r.failures,
                    "error": r.error,
                }
                for plural, r in self._resources.items()
            },
            "malformed": list(self._malformed),
            "malformed_total": self._malformed_total,
            "selection": dict(self._selection.stats),
        }
        gw = self.gateway_object()
        details["gateway_found"] = gw is not None
        if gw is not None:
            status = gw.get("status")
            details["gateway_ready"] = isinstance(status, dict) and status.get("ready") is True
        if not self.synced:
            return SourceSnapshot(synced=False, fresh_at=None, error=error, details=details)
        selection = self._select(now)
        details["held"] = [
            {"address": h.address, "origin": h.origin, "reason": h.reason, "until": h.until}
            for h in selection.held
        ]
        return SourceSnapshot(
            candidates=selection.candidates,
            refusals=selection.refusals,
            synced=True,
            fresh_at=self.fresh_at(now),
            error=error,
            details=details,
        )

    # --- the watch loop (loop side) -------------------------------------------------------------

    def _changed_store(self, reason: str) -> None:
        if self._trigger is not None:
            self._trigger.pull(f"kubernetes:{reason}")

    def _feed(self, plural: str, name: str, obj: watching.Obj | None) -> None:
        """Hand one change (``obj`` None: deleted) to the incremental selection."""
        if plural == EIPS:
            if obj is None:
                self._selection.delete_eip(name)
            else:
                self._selection.upsert_eip(obj)
        elif plural in RULE_KIND_OF:
            if obj is None:
                self._selection.delete_rule(RULE_KIND_OF[plural], name)
            else:
                self._selection.upsert_rule(RULE_KIND_OF[plural], obj)
        else:
            self._selection.gateway_changed()

    def replaced(self, plural: str, items: list[watching.Obj], resource_version: str) -> None:
        res = self._resources[plural]
        res.objects = {item["metadata"]["name"]: item for item in items}
        if plural == EIPS:
            self._selection.replace_eips(items)
        elif plural in RULE_KIND_OF:
            self._selection.replace_rules(RULE_KIND_OF[plural], items)
        else:
            self._selection.gateway_changed()
        first = not res.listed
        res.listed = True
        res.resource_version = resource_version
        res.fresh_at = self._clock()
        logger.info(
            "listed", extra={"resource": plural, "objects": len(items), "resource_version": resource_version}
        )
        if first and self.synced:
            logger.info("kubernetes source in sync", extra={"gateway": self.gateway})
        self._changed_store(f"{plural}:list")

    def changed(self, plural: str, kind: str, obj: watching.Obj) -> None:
        res = self._resources[plural]
        name = obj["metadata"]["name"]
        deleted = kind == "DELETED"
        if deleted:
            res.objects.pop(name, None)
        else:
            res.objects[name] = obj
        self._feed(plural, name, None if deleted else obj)
        res.events += 1
        res.resource_version = str(obj["metadata"].get("resourceVersion", res.resource_version))
        res.fresh_at = self._clock()
        self._changed_store(plural)

    def connected(self, plural: str) -> None:
        res = self._resources[plural]
        if res.error is not None:
            logger.info("watch re-established", extra={"resource": plural})
        res.connected = True
        res.error = None
        res.fresh_at = self._clock()
        if self._trigger is not None:
            self._trigger.pull(f"kubernetes:{plural}:connected")

    def bookmark(self, plural: str) -> None:
        self._resources[plural].fresh_at = self._clock()

    def failed(self, plural: str, error: str, *, expired: bool = False) -> None:
        res = self._resources[plural]
        if res.connected:
            res.fresh_at = self._clock()
        res.connected = False
        if expired:
            res.relists += 1
            logger.info("resourceVersion expired; relisting", extra={"resource": plural})
            return
        res.failures += 1
        res.error = error
        if self._trigger is not None:
            self._trigger.pull(f"kubernetes:{plural}:error")

    def malformed(self, plural: str, detail: str) -> None:
        self._malformed_total += 1
        self._malformed.append(f"{plural}: {detail}")
        logger.warning("skipped a malformed object", extra={"resource": plural, "reason": detail})

    async def run(self, *, trigger: Trigger) -> None:
        """Start one watch thread per resource and serve until cancelled."""
        self._trigger = trigger
        self._loop = loop = asyncio.get_running_loop()

        def post(call: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(call)

        for plural in PLURALS:
            selector = f"metadata.name={self.gateway}" if plural == GATEWAYS else None
            api = client.CustomObjectsApi(client.ApiClient(self._client_config))
            watcher = watching.Watcher(
                api, plural, post=post, sink=self, field_selector=selector, timing=self._timing
            )
            self._watchers.append(watcher)
            watcher.start()
        logger.info(
            "watching Kube-OVN objects",
            extra={"gateway": self.gateway, "policy": self.config.policy, "host": self._client_config.host},
        )
        try:
            await asyncio.Event().wait()
        finally:
            await self._stop_watchers()

    async def _stop_watchers(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
        if self._timer is not None:
            self._timer.cancel()
        watchers, self._watchers = self._watchers, []

        def join() -> None:
            deadline = time.monotonic() + 5.0
            for watcher in watchers:
                watcher.thread.join(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(join)
