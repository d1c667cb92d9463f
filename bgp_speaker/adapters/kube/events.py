"""Kubernetes Events where operators look: on the IptablesEIP, and on the VpcNatGateway.

Reasons: ``Announced``, ``Withdrawn`` (Normal), ``Refused`` (Warning, with the reason) on the
IptablesEIP; ``PeerUp`` (Normal) and ``PeerDown`` (Warning) on this gateway's VpcNatGateway.
Source component ``bgp-speaker``. The objects are cluster-scoped, so the Events live in the
``default`` namespace, as client-go does for cluster-scoped objects.

The calls (:meth:`EventRecorder.announced`, ``withdrawn``, ``refused``, ``peer_changed``)
never block and never raise: they compare with the last state recorded per EIP / peer
(so calling them every reconcile pass with the full lists is fine: only changes make an
Event) and queue the change; :meth:`EventRecorder.run` posts from the queue.

Flood protection:

- a token bucket: at most ``events_per_minute`` API writes per minute, bursts of up to 10;
- aggregation: a queued Event identical to one already queued only bumps its count, and
  an Event identical to one posted in the last 10 minutes is a PATCH of that Event's
  ``count`` and ``lastTimestamp`` (what ``kubectl describe`` shows as "x5 over 3m");
- a bounded queue: past one minute's worth, new Events are dropped and counted.

Failures are logged and counted (:attr:`EventRecorder.stats`), never raised.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from bgp_speaker.adapters.kube import client as kclient
from bgp_speaker.adapters.kube.source import EIPS, KubeSource
from bgp_speaker.core import kubeovn
from bgp_speaker.core.model import PeerState, PeerStatus, Refusal

logger = logging.getLogger(__name__)

COMPONENT = "bgp-speaker"
AGGREGATE_SECONDS = 600.0
MAX_BURST = 10
_Key = tuple[str, str, str, str, str]  # kind, name, reason, type, message


@dataclass
class _Pending:
    ref: dict[str, str]
    reason: str
    type: str
    message: str
    count: int = 1


@dataclass
class _Posted:
    name: str
    count: int
    first: str
    at: float


def _timestamp(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(
        self,
        *,
        client_config: client.Configuration,
        gateway: str,
        source: KubeSource | None = None,
        events_per_minute: int = 60,
        namespace: str = "default",
        instance: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gateway = gateway
        self.namespace = namespace
        self.instance = instance or os.environ.get("POD_NAME") or socket.gethostname()
        self._api = client.CoreV1Api(client.ApiClient(client_config))
        self._source = source
        self._clock = clock
        self._rate = events_per_minute / 60.0
        self._burst = float(max(1, min(MAX_BURST, events_per_minute)))
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._max_pending = max(MAX_BURST, events_per_minute)
        self._pending: OrderedDict[_Key, _Pending] = OrderedDict()
        self._posted: dict[_Key, _Posted] = {}
        self._eip_state: dict[str, str] = {}
        self._peer_state: dict[str, bool] = {}
        self._wake = asyncio.Event()
        self.stats = {"queued": 0, "posted": 0, "patched": 0, "aggregated": 0, "dropped": 0, "failed": 0}

    # --- what the app calls ---------------------------------------------------------------------

    def announced(self, origins: Iterable[str]) -> None:
        for name in self._eip_names(origins):
            addresses = self._addresses(name)
            where = f" {addresses}" if addresses else ""
            self._transition(
                name, "announced", "Announced", "Normal", f"announced{where} over BGP by {self.gateway}"
            )

    def withdrawn(self, origins: Iterable[str]) -> None:
        for name in self._eip_names(origins):
            self._transition(
                name, "withdrawn", "Withdrawn", "Normal", f"withdrawn from BGP by {self.gateway}"
            )

    def refused(self, refusals: Iterable[Refusal]) -> None:
        reasons: dict[str, list[str]] = {}
        for refusal in refusals:
            name = kubeovn.eip_name_of(refusal.origin)
            if name is not None:
                text = f"{refusal.address}: {refusal.reason}" if refusal.address else refusal.reason
                reasons.setdefault(name, []).append(text)
        for name, texts in reasons.items():
            message = f"not announced by {self.gateway}: " + "; ".join(sorted(set(texts)))
            self._transition(name, f"refused:{message}", "Refused", "Warning", message)

    def peer_changed(self, status: PeerStatus) -> None:
        up = status.state is PeerState.ESTABLISHED
        peer = str(status.peer)
        was = self._peer_state.get(peer)
        self._peer_state[peer] = up
        if (was is None and not up) or was == up:
            return
        if up:
            self._enqueue(self._gateway_ref(), "PeerUp", "Normal", f"BGP session with {peer} established")
        else:
            detail = f": {status.last_error}" if status.last_error else ""
            self._enqueue(
                self._gateway_ref(),
                "PeerDown",
                "Warning",
                f"BGP session with {peer} is {status.state.value}{detail}",
            )

    def gateway_event(self, reason: str, type_: str, message: str) -> None:
        """Any other Event on this gateway's VpcNatGateway (configuration applied or rejected,
        session resets). ``message`` must hold no secret."""
        self._enqueue(self._gateway_ref(), reason, type_, message)

    # --- internals ------------------------------------------------------------------------------

    @staticmethod
    def _eip_names(origins: Iterable[str]) -> list[str]:
        names = (kubeovn.eip_name_of(origin) for origin in origins)
        return sorted({n for n in names if n})

    def _lookup(self, plural: str, name: str) -> Mapping[str, Any] | None:
        return self._source.lookup(plural, name) if self._source is not None else None

    def _addresses(self, name: str) -> str:
        obj = self._lookup(EIPS, name)
        spec = obj.get("spec") if obj else None
        if not isinstance(spec, Mapping):
            return ""
        found = [spec.get("v4ip"), spec.get("v6ip")]
        return ", ".join(f"{a}/{128 if ':' in a else 32}" for a in found if isinstance(a, str) and a)

    def _ref(self, kind: str, name: str, obj: Mapping[str, Any] | None) -> dict[str, str]:
        ref = {"apiVersion": "kubeovn.io/v1", "kind": kind, "name": name}
        meta = obj.get("metadata") if obj else None
        if isinstance(meta, Mapping):
            for src, dst in (("uid", "uid"), ("resourceVersion", "resourceVersion")):
                if isinstance(meta.get(src), str):
                    ref[dst] = meta[src]
        return ref

    def _gateway_ref(self) -> dict[str, str]:
        gw = self._source.gateway_object() if self._source is not None else None
        return self._ref("VpcNatGateway", self.gateway, gw)

    def _transition(self, name: str, state: str, reason: str, type_: str, message: str) -> None:
        if self._eip_state.get(name) == state:
            return
        self._eip_state[name] = state
        self._enqueue(self._ref("IptablesEIP", name, self._lookup(EIPS, name)), reason, type_, message)

    def _enqueue(self, ref: dict[str, str], reason: str, type_: str, message: str) -> None:
        message = message[:1024]
        key: _Key = (ref["kind"], ref["name"], reason, type_, message)
        pending = self._pending.get(key)
        if pending is not None:
            pending.count += 1
            self.stats["aggregated"] += 1
            return
        if len(self._pending) >= self._max_pending:
            self.stats["dropped"] += 1
            if self.stats["dropped"] == 1 or self.stats["dropped"] % 100 == 0:
                logger.warning(
                    "Kubernetes events dropped by the rate limit",
                    extra={"dropped": self.stats["dropped"], "reason": reason},
                )
            return
        self._pending[key] = _Pending(ref=ref, reason=reason, type=type_, message=message)
        self.stats["queued"] += 1
        self._wake.set()

    def _take_token(self) -> float:
        """0 when a token was taken; otherwise the seconds until one is available."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    async def run(self) -> None:
        """Post queued Events forever, within the rate limit."""
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._take_token()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            key, pending = self._pending.popitem(last=False)
            await self._post(key, pending)

    async def _post(self, key: _Key, pending: _Pending) -> None:
        now = self._clock()
        stamp = _timestamp(now)
        posted = self._posted.get(key)
        try:
            if posted is not None and now - posted.at < AGGREGATE_SECONDS:
                count = posted.count + pending.count
                patch = {"count": count, "lastTimestamp": stamp}
                await asyncio.to_thread(self._api.patch_namespaced_event, posted.name, self.namespace, patch)
                self._posted[key] = _Posted(name=posted.name, count=count, first=posted.first, at=now)
                self.stats["patched"] += 1
                return
            name = f"{pending.ref['name']}.{time.time_ns():x}"
            body: Any = {
                "metadata": {"name": name, "namespace": self.namespace},
                "involvedObject": pending.ref,
                "reason": pending.reason,
                "message": pending.message,
                "type": pending.type,
                "source": {"component": COMPONENT, "host": self.instance},
                "reportingComponent": COMPONENT,
                "reportingInstance": self.instance,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": pending.count,
            }
            await asyncio.to_thread(self._api.create_namespaced_event, self.namespace, body)
            self._posted[key] = _Posted(name=name, count=pending.count, first=stamp, at=now)
            self.stats["posted"] += 1
            self._forget_old(now)
        except Exception as exc:  # the API may be down: an Event is never worth a crash
            self.stats["failed"] += 1
            if posted is not None:
                self._posted.pop(key, None)  # e.g. the Event expired (404): create a new one next time
            logger.warning(
                "posting a Kubernetes event failed",
                extra={
                    "reason": pending.reason,
                    "object": pending.ref["name"],
                    "error": kclient.describe(exc),
                },
            )

    def _forget_old(self, now: float) -> None:
        if len(self._posted) > 4096:
            self._posted = {k: v for k, v in self._posted.items() if now - v.at < AGGREGATE_SECONDS}
