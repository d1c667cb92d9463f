"""What each reconcile pass and each peer change tells the outside: metrics, log lines and
(with the Kubernetes source) Events. Logs say what changed, once, not every pass."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

from bgp_speaker.core.desired import prefix_sort_key
from bgp_speaker.core.model import (
    Candidate,
    IPAddress,
    IPNetwork,
    PeerId,
    PeerState,
    PeerStatus,
    Refusal,
)
from bgp_speaker.metrics import COMMAND_RESULTS, Metrics
from bgp_speaker.reconciler import PassReport

logger = logging.getLogger(__name__)

#: A pass that announces (or withdraws) more prefixes than this logs one summary line for
#: them, naming the first :data:`SUMMARY_SHOWN`, instead of one line per prefix.
LOG_EACH_UP_TO = 20
SUMMARY_SHOWN = 5


class EventSink(Protocol):
    """Where announce/withdraw/refusal/peer events go (Kubernetes Events in the kube source)."""

    def announced(self, origins: Iterable[str]) -> None: ...

    def withdrawn(self, origins: Iterable[str]) -> None: ...

    def refused(self, refusals: Iterable[Refusal]) -> None: ...

    def peer_changed(self, status: PeerStatus) -> None: ...

    async def run(self) -> None: ...


class Activity:
    def __init__(
        self,
        *,
        metrics: Metrics,
        events: EventSink | None = None,
        gateway_event: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self._metrics = metrics
        self._events = events
        #: address -> origin in the candidates of :attr:`_origins_of`; ``_gone``: the addresses
        #: the last rebuild dropped, with their last origin (a withdrawal names it).
        self._origins: dict[IPAddress, str] = {}
        self._gone: dict[IPAddress, str] = {}
        self._origins_of: tuple[Candidate, ...] = ()
        self._candidates: tuple[Candidate, ...] = ()
        self._refusals: frozenset[Refusal] = frozenset()
        self._peer_states: dict[PeerId, PeerState] = {}
        self._acks_counted: dict[str, int] = {}
        self._mismatches: set[tuple[str, str]] = set()
        #: (reason, type, message) -> an Event on this gateway's object (Kubernetes source only).
        self._gateway_event = gateway_event

    def on_pass(self, report: PassReport) -> None:
        if report.result != "skipped":
            self._metrics.observe_reconcile(seconds=report.duration, result=report.result, at=report.at)  # type: ignore[arg-type]
        if report.latency is not None:
            self._metrics.observe_latency(report.latency)
        if report.snapshot is not None:
            self._candidates = report.snapshot.candidates
        if report.desired is not None:
            self._metrics.set_routes(desired=report.desired.routes, announced=report.actual)
            self._metrics.set_refusals(report.desired.refusals)
            self._log_refusals(frozenset(report.desired.refusals))
        self._log_changes("announced", report.newly_announced)
        self._log_changes("withdrawn", report.newly_withdrawn)
        for peer, prefix, reason in report.rejected:
            logger.error(
                "ExaBGP rejected a route", extra={"peer": str(peer), "prefix": str(prefix), "reason": reason}
            )
        if self._events is not None:
            self._events.announced(self._known_origins(report.newly_announced))
            self._events.withdrawn(self._known_origins(report.newly_withdrawn))
            if report.desired is not None:
                self._events.refused(report.desired.refusals)

    def origin(self, prefix: IPNetwork) -> str:
        """The source entry ``prefix`` comes (or, once withdrawn, came) from; "" if unknown."""
        if self._candidates is not self._origins_of:
            # Rebuilt only when the snapshot changed and an origin is asked for.
            fresh = {c.address: c.origin for c in self._candidates}
            self._gone = {a: o for a, o in self._origins.items() if a not in fresh}
            self._origins, self._origins_of = fresh, self._candidates
        address = prefix.network_address
        return self._origins.get(address) or self._gone.get(address, "")

    def _known_origins(self, prefixes: Iterable[IPNetwork]) -> list[str]:
        return [origin for origin in map(self.origin, prefixes) if origin]

    def _log_changes(self, what: str, prefixes: Collection[IPNetwork]) -> None:
        """One line per prefix for a small change, one summary line for a large one."""
        if len(prefixes) > LOG_EACH_UP_TO:
            first = heapq.nsmallest(SUMMARY_SHOWN, prefixes, key=prefix_sort_key)
            logger.info(what, extra={"count": len(prefixes), "first": ",".join(map(str, first))})
            return
        for prefix in sorted(prefixes, key=prefix_sort_key):
            logger.info(what, extra={"prefix": str(prefix), "origin": self.origin(prefix)})

    def _log_refusals(self, refusals: frozenset[Refusal]) -> None:
        for refusal in sorted(refusals - self._refusals, key=lambda r: (r.origin, r.address)):
            extra = {"address": refusal.address, "origin": refusal.origin, "reason": refusal.reason}
            if refusal.peer is not None:
                extra["peer"] = str(refusal.peer)
            logger.warning("address refused", extra=extra)
        for refusal in sorted(self._refusals - refusals, key=lambda r: (r.origin, r.address)):
            logger.info("refusal cleared", extra={"address": refusal.address, "origin": refusal.origin})
        self._refusals = refusals

    def on_peers(self, statuses: Mapping[PeerId, PeerStatus]) -> None:
        self._metrics.set_peers(statuses.values())
        for peer, status in statuses.items():
            if self._peer_states.get(peer) == status.state:
                continue
            self._peer_states[peer] = status.state
            level = logging.INFO if status.state is PeerState.ESTABLISHED else logging.WARNING
            extra = {"peer": str(peer), "state": status.state.value}
            if status.last_error:
                extra["reason"] = status.last_error
            logger.log(level, "peer state changed", extra=extra)
            if self._events is not None:
                self._events.peer_changed(status)

    def on_acks(self, acks: Mapping[str, int]) -> None:
        """ExaBGP's acknowledgements since start, by result: count what is new."""
        for result in COMMAND_RESULTS:
            seen = acks.get(result, 0)
            self._metrics.command(result, seen - self._acks_counted.get(result, 0))
            self._acks_counted[result] = seen

    def on_dataplane(self, status: Mapping[str, Any] | None) -> None:
        """The data-plane gate's status: export it, and log (and report) each new mismatch once."""
        if status is None or status.get("mode", "off") == "off":
            self._metrics.set_dataplane(readable=None, mismatches={})
            return
        observations = [o for o in status.get("observations", []) if isinstance(o, Mapping)]
        counts: dict[str, int] = {}
        current: set[tuple[str, str]] = set()
        for observation in observations:
            kind, address = str(observation.get("kind", "")), str(observation.get("address", ""))
            counts[kind] = counts.get(kind, 0) + 1
            current.add((kind, address))
        self._metrics.set_dataplane(readable=bool(status.get("capable")), mismatches=counts)
        for kind, address in sorted(current - self._mismatches):
            message = (
                f"{address}: bound in Kubernetes but its NAT rules are missing in the gateway"
                if kind == "bound-but-missing"
                else f"{address}: NAT rules installed in the gateway but the EIP is not bound"
            )
            logger.warning("data plane mismatch", extra={"address": address, "kind": kind})
            if self._gateway_event is not None:
                self._gateway_event("DataplaneMismatch", "Warning", message)
        for kind, address in sorted(self._mismatches - current):
            logger.info("data plane mismatch cleared", extra={"address": address, "kind": kind})
        self._mismatches = current
