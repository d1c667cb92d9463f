"""Prometheus metrics on an injected ``CollectorRegistry``.

Every name starts with ``bgp_speaker_``; label names are the ``LABEL_*`` constants below. In
kube-ovn-speaker compatible mode kube-ovn-speaker's three peer gauges are exported too
(``upstream_names``), under their own names and labels.
:class:`Metrics` is the only writer: the reconciler and the adapters call its small,
keyword-only methods with domain values, never the metric objects themselves.

Label values are bounded: peers are the configured neighbors (series of a peer that
disappears are removed), families and states come from enums, refusal reasons are
classified into :class:`~bgp_speaker.core.health.RefusalKind`.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bgp_speaker.core import health
from bgp_speaker.core.model import Family, PeerId, PeerState, PeerStatus, Refusal, RibOut

PREFIX = "bgp_speaker_"

LABEL_PEER = "peer"
LABEL_STATE = "state"
LABEL_FAMILY = "family"
LABEL_REASON = "reason"
LABEL_RESULT = "result"
LABEL_VERSION = "version"
LABEL_KIND = "kind"

#: kube-ovn-speaker's peer metrics (pkg/speaker/metrics.go): gauges labelled node, peer, peer_asn.
UPSTREAM_PEER_UP = "kube_ovn_speaker_bgp_peer_up"
UPSTREAM_PEER_STATE = "kube_ovn_speaker_bgp_peer_session_state"
UPSTREAM_PEER_FLAPS = "kube_ovn_speaker_bgp_peer_flap_count"
UPSTREAM_LABELS = ("node", "peer", "peer_asn")
UPSTREAM_PEER_METRICS = {
    UPSTREAM_PEER_UP: "Whether the BGP session with the peer is established (1) or not (0).",
    UPSTREAM_PEER_STATE: "BGP session FSM state of the peer "
    "(0=unspecified,1=idle,2=connect,3=active,4=opensent,5=openconfirm,6=established).",
    UPSTREAM_PEER_FLAPS: "Number of times the BGP session with the peer has flapped.",
}
#: Our session states in upstream's (GoBGP's) numbering.
UPSTREAM_STATE_CODES = {
    PeerState.UNKNOWN: 0,
    PeerState.IDLE: 1,
    PeerState.DOWN: 1,
    PeerState.CONNECTED: 4,
    PeerState.ESTABLISHED: 6,
}

CommandResult = Literal["done", "error", "timeout"]
#: "skipped" is a pass that attempted nothing (speaker or source not ready): not recorded.
ReconcileResult = Literal["converged", "partial", "failed", "skipped"]
COMMAND_RESULTS: tuple[CommandResult, ...] = ("done", "error", "timeout")
DATAPLANE_KINDS = ("bound-but-missing", "present-but-unbound")
RECONCILE_RESULTS: tuple[ReconcileResult, ...] = ("converged", "partial", "failed")
SKIPPED: ReconcileResult = "skipped"

#: From 1 ms to 10 s: 1, 2.5, 5 and 7.5 in each decade.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
RECONCILE_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Metrics:
    """All of the speaker's metrics. Not thread-safe; call it from the event loop."""

    def __init__(
        self, registry: CollectorRegistry, *, version: str, upstream_names: bool = False, node: str = ""
    ) -> None:
        """``upstream_names`` also exports kube-ovn-speaker's peer metrics (:data:`UPSTREAM_PEER_METRICS`)
        for existing dashboards, labelled ``node`` (upstream: ``--node-name``), ``peer``, ``peer_asn``."""

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, labelnames=labels, registry=registry)

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labelnames=labels, registry=registry)

        self.registry = registry
        self._info = gauge("info", "Constant 1, labelled with the running version.", (LABEL_VERSION,))
        self._info.labels(version).set(1)

        self._peer_up = gauge(
            "peer_up", "1 when the BGP session with the peer is established.", (LABEL_PEER,)
        )
        self._peer_state = gauge(
            "peer_state", "1 for the session's current state, 0 for the others.", (LABEL_PEER, LABEL_STATE)
        )
        self._peer_flaps = counter(
            "peer_flaps", "Times the session left the established state.", (LABEL_PEER,)
        )
        self._routes_announced = gauge(
            "routes_announced", "Prefixes ExaBGP holds for the peer.", (LABEL_PEER, LABEL_FAMILY)
        )
        self._routes_desired = gauge(
            "routes_desired", "Prefixes the peer should be told.", (LABEL_PEER, LABEL_FAMILY)
        )
        self._ribs = _Ribs(desired={}, announced={}, peers={})
        self._desired_not_announced = gauge(
            "desired_not_announced",
            "(peer, prefix) pairs desired but not announced, or announced with other attributes.",
        )
        self._desired_not_announced.set_function(lambda: self._ribs.stats()[_MISSING])
        self._announced_not_desired = gauge(
            "announced_not_desired", "(peer, prefix) pairs announced but no longer desired."
        )
        self._announced_not_desired.set_function(lambda: self._ribs.stats()[_EXTRA])
        self._refused = gauge("refused_addresses", "Addresses currently refused, by reason.", (LABEL_REASON,))
        self._refusals = counter(
            "refusals", "Refusals that appeared (one that persists counts once).", (LABEL_REASON,)
        )
        self._exabgp_up = gauge("exabgp_up", "1 when the ExaBGP child process is running.")
        self._exabgp_restarts = counter("exabgp_restarts", "ExaBGP child process restarts.")
        self._commands = counter("commands", "ExaBGP API commands by outcome.", (LABEL_RESULT,))
        self._reconcile_duration = Histogram(
            PREFIX + "reconcile_duration_seconds",
            "Duration of one reconcile pass.",
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self._reconcile_total = counter("reconcile", "Reconcile passes by outcome.", (LABEL_RESULT,))
        self._last_converged = gauge(
            "last_converged_timestamp_seconds", "Wall-clock time of the last pass that converged."
        )
        self._latency = Histogram(
            PREFIX + "announce_latency_seconds",
            "From a source reporting a change to ExaBGP acknowledging the resulting announce or withdraw.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._source_synced = gauge("source_synced", "1 when the candidate source completed a full load.")
        self._source_stale = gauge("source_stale_seconds", "Seconds since the source was last known current.")
        self._source_errors = counter("source_errors", "Errors reading the candidate source.")
        self._config_valid = gauge(
            "config_valid", "1 when the newest live configuration (ConfigMap) was valid and applied."
        )
        self._config_valid.set(1)
        self._config_pending_restart = gauge(
            "config_pending_restart", "Changed settings that only take effect at the next start."
        )
        self._dataplane_capable = gauge(
            "dataplane_readable",
            "1 when the gateway's NAT tables could be read, 0 when not (no CAP_NET_ADMIN), -1 when off.",
        )
        self._dataplane_capable.set(-1)
        self._dataplane_mismatch = gauge(
            "dataplane_mismatches",
            "EIPs whose Kubernetes binding and NAT rules disagree, by kind "
            "(bound-but-missing, present-but-unbound).",
            (LABEL_KIND,),
        )
        for kind in DATAPLANE_KINDS:
            self._dataplane_mismatch.labels(kind).set(0)
        self._upstream: dict[str, Gauge] = {}
        if upstream_names:
            self._upstream = {
                name: Gauge(name, doc, labelnames=UPSTREAM_LABELS, registry=registry)
                for name, doc in UPSTREAM_PEER_METRICS.items()
            }
        self._node = node
        self._peer_asns: dict[str, str] = {}
        self._upstream_labels: dict[str, tuple[str, str, str]] = {}
        self._flap_totals: dict[str, int] = {}

        # Series that should exist at 0 from the start, so that rate() and alerts work.
        for command_result in COMMAND_RESULTS:
            self._commands.labels(command_result)
        for reconcile_result in RECONCILE_RESULTS:
            self._reconcile_total.labels(reconcile_result)
        for kind in health.RefusalKind:
            self._refused.labels(kind.value).set(0)
            self._refusals.labels(kind.value)

        self._peers: set[str] = set()
        self._flaps_seen: dict[str, int] = {}
        self._route_peers: set[str] = set()
        self._refusals_seen: frozenset[Refusal] = frozenset()

    # -- peers ---------------------------------------------------------------------------

    def set_peer(self, status: PeerStatus) -> None:
        """Record one peer's session state; ``status.flaps`` is cumulative, its increase is counted."""
        peer = str(status.peer)
        self._peers.add(peer)
        self._peer_up.labels(peer).set(1 if status.state is PeerState.ESTABLISHED else 0)
        for state in PeerState:
            self._peer_state.labels(peer, state.value).set(1 if state is status.state else 0)
        seen = self._flaps_seen.get(peer)
        flaps = self._peer_flaps.labels(peer)
        increase = 0
        if seen is not None and status.flaps > seen:
            increase = status.flaps - seen
        elif seen is None and status.flaps > 0:
            increase = status.flaps
        if increase:
            flaps.inc(increase)
        # A lower count (the speaker restarted) becomes the new baseline.
        self._flaps_seen[peer] = status.flaps
        self._flap_totals[peer] = self._flap_totals.get(peer, 0) + increase
        if self._upstream:
            self._set_upstream(peer, status)

    def set_peer_asns(self, asns: Mapping[str, int]) -> None:
        """The configured AS of each peer (the ``peer_asn`` label of the upstream metrics)."""
        self._peer_asns = {peer: str(asn) for peer, asn in asns.items()}

    def _set_upstream(self, peer: str, status: PeerStatus) -> None:
        labels = (self._node, peer, self._peer_asns.get(peer, ""))
        old = self._upstream_labels.get(peer)
        if old is not None and old != labels:
            self._forget_upstream(peer)
        self._upstream_labels[peer] = labels
        established = status.state is PeerState.ESTABLISHED
        self._upstream[UPSTREAM_PEER_UP].labels(*labels).set(1 if established else 0)
        self._upstream[UPSTREAM_PEER_STATE].labels(*labels).set(UPSTREAM_STATE_CODES[status.state])
        self._upstream[UPSTREAM_PEER_FLAPS].labels(*labels).set(self._flap_totals.get(peer, 0))

    def _forget_upstream(self, peer: str) -> None:
        labels = self._upstream_labels.pop(peer, None)
        if labels is not None:
            for metric in self._upstream.values():
                _remove(metric, *labels)

    def set_peers(self, statuses: Iterable[PeerStatus]) -> None:
        """Record every peer's state; series of peers not in ``statuses`` are removed."""
        current = list(statuses)
        for status in current:
            self.set_peer(status)
        keep = {str(s.peer) for s in current}
        for peer in self._peers - keep:
            self.forget_peer(peer)

    def forget_peer(self, peer: PeerId | str) -> None:
        """Remove every series labelled with ``peer`` (session and routes)."""
        name = str(peer)
        for metric in (self._peer_up, self._peer_flaps):
            _remove(metric, name)
        for state in PeerState:
            _remove(self._peer_state, name, state.value)
        self._forget_route_peer(name)
        self._peers.discard(name)
        self._flaps_seen.pop(name, None)
        self._flap_totals.pop(name, None)
        self._forget_upstream(name)

    # -- routes and drift ----------------------------------------------------------------

    def set_routes(self, *, desired: Mapping[PeerId, RibOut], announced: Mapping[PeerId, RibOut]) -> None:
        """Per-peer, per-family counts and the drift between the two. Route series of peers
        in neither mapping are removed.

        Cheap whatever the size: the two mappings are kept (not copied, so they must not be
        changed afterwards) and counted when the metrics are read, once per call at most."""
        peers = {str(p): p for p in (*desired, *announced)}
        for name in self._route_peers - peers.keys():
            self._forget_route_peer(name)
        for name in peers.keys() - self._route_peers:
            for family in Family:
                self._routes_desired.labels(name, family.value).set_function(
                    functools.partial(self._route_stat, "desired", name, family)
                )
                self._routes_announced.labels(name, family.value).set_function(
                    functools.partial(self._route_stat, "announced", name, family)
                )
        self._route_peers = set(peers)
        self._ribs = _Ribs(desired=desired, announced=announced, peers=peers)

    def _route_stat(self, which: str, name: str, family: Family) -> float:
        stats = self._ribs.stats()
        return stats.get((which, name, family.value), 0)

    def _forget_route_peer(self, name: str) -> None:
        for family in Family:
            _remove(self._routes_desired, name, family.value)
            _remove(self._routes_announced, name, family.value)
        self._route_peers.discard(name)

    # -- refusals ------------------------------------------------------------------------

    def set_refusals(self, refusals: Sequence[Refusal]) -> None:
        """The current refusals: sets the per-kind gauge, counts the ones not seen last time."""
        counts = dict.fromkeys(health.RefusalKind, 0)
        current = frozenset(refusals)
        for refusal in current:
            counts[health.refusal_kind(refusal.reason)] += 1
        for kind, count in counts.items():
            self._refused.labels(kind.value).set(count)
        for refusal in current - self._refusals_seen:
            self._refusals.labels(health.refusal_kind(refusal.reason).value).inc()
        self._refusals_seen = current

    # -- reconcile and latency -----------------------------------------------------------

    def observe_reconcile(self, *, seconds: float, result: ReconcileResult, at: float | None = None) -> None:
        """One reconcile pass; ``at`` (default: now) becomes the last-converged time when it converged.

        A ``skipped`` pass is ignored (it neither took time worth measuring nor had an outcome);
        any other unknown result raises ``ValueError``.
        """
        if result == SKIPPED:
            return
        if result not in RECONCILE_RESULTS:
            raise ValueError(f"unknown reconcile result {result!r}")
        self._reconcile_duration.observe(seconds)
        self._reconcile_total.labels(result).inc()
        if result == "converged":
            self._last_converged.set(time.time() if at is None else at)

    def observe_latency(self, seconds: float) -> None:
        """Source change reported -> ExaBGP ack of the resulting command."""
        self._latency.observe(max(0.0, seconds))

    # -- ExaBGP --------------------------------------------------------------------------

    def set_exabgp_up(self, up: bool) -> None:
        self._exabgp_up.set(1 if up else 0)

    def exabgp_restarted(self) -> None:
        self._exabgp_restarts.inc()

    def command(self, result: CommandResult, count: int = 1) -> None:
        if result not in COMMAND_RESULTS:
            raise ValueError(f"unknown command result {result!r}")
        if count > 0:
            self._commands.labels(result).inc(count)

    # -- source --------------------------------------------------------------------------

    def set_source(self, *, synced: bool, stale_seconds: float | None) -> None:
        """``stale_seconds`` is ``None`` before the source was ever current (exported as 0)."""
        self._source_synced.set(1 if synced else 0)
        self._source_stale.set(0.0 if stale_seconds is None else max(0.0, stale_seconds))

    def source_error(self) -> None:
        self._source_errors.inc()

    # -- live configuration --------------------------------------------------------------

    def set_dataplane(self, *, readable: bool | None, mismatches: Mapping[str, int]) -> None:
        """``readable`` None: gating is off. ``mismatches``: count by observation kind."""
        self._dataplane_capable.set(-1 if readable is None else int(readable))
        for kind in DATAPLANE_KINDS:
            self._dataplane_mismatch.labels(kind).set(mismatches.get(kind, 0))

    def set_config(self, *, valid: bool, pending_restart: int) -> None:
        self._config_valid.set(1 if valid else 0)
        self._config_pending_restart.set(pending_restart)


_MISSING = ("missing", "", "")
_EXTRA = ("extra", "", "")
_FAMILY_OF_TYPE: dict[type, str] = {IPv4Network: Family.IPV4.value, IPv6Network: Family.IPV6.value}


@dataclass(slots=True)
class _Ribs:
    """The routes of the last :meth:`Metrics.set_routes`, counted on first read."""

    desired: Mapping[PeerId, RibOut]
    announced: Mapping[PeerId, RibOut]
    peers: Mapping[str, PeerId]
    _stats: dict[tuple[str, str, str], int] | None = None

    def stats(self) -> dict[tuple[str, str, str], int]:
        """(desired|announced, peer, family) -> prefixes, and the two drift totals."""
        if self._stats is None:
            stats = {_MISSING: 0, _EXTRA: 0}
            for name, peer in self.peers.items():
                want = self.desired.get(peer, {})
                have = self.announced.get(peer, {})
                for which, rib in (("desired", want), ("announced", have)):
                    for kind, count in collections.Counter(map(type, rib)).items():
                        stats[(which, name, _FAMILY_OF_TYPE[kind])] = count
                if want is not have:
                    stats[_MISSING] += sum(1 for prefix, attrs in want.items() if have.get(prefix) != attrs)
                    stats[_EXTRA] += sum(1 for prefix in have if prefix not in want)
            self._stats = stats
        return self._stats


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    """Drop one series; a series that does not exist is not an error."""
    metric.remove(*labels)
