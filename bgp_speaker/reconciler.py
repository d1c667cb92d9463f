"""The level-triggered reconcile loop.

Every pass: read what the speaker really holds when that is unknown (first pass, ExaBGP or
its helper restarted, periodic drift check), take a full snapshot of the sources, compute
the desired state with the pure core, diff, apply, and record only what the speaker
acknowledged. Events never carry data into this loop; they only pull the trigger.

Safety rules:

- before a source's first complete load nothing is withdrawn (a pass is skipped);
- a source error keeps its last good snapshot (the source's job), so an API outage never
  withdraws anything;
- a prefix ExaBGP rejected is not retried on every pass (that would spin): it waits for
  the next periodic resync or for its desired attributes to change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bgp_speaker.aiokit import Trigger
from bgp_speaker.core import desired as desired_mod
from bgp_speaker.core import plan as plan_mod
from bgp_speaker.core.model import (
    Announce,
    Candidate,
    DesiredState,
    IPNetwork,
    PeerId,
    Plan,
    Refusal,
    RouteAttributes,
    RoutingPolicy,
)
from bgp_speaker.errors import SpeakerUnavailable
from bgp_speaker.ports import CandidateSource, NextHopSource, Rib, SourceSnapshot, Speaker

logger = logging.getLogger(__name__)

#: (candidates) -> (kept candidates, refusals): an optional extra filter such as data-plane gating.
Gate = Callable[[tuple[Candidate, ...]], tuple[tuple[Candidate, ...], tuple[Refusal, ...]]]


@dataclass(frozen=True, slots=True)
class PassReport:
    """What one pass saw and did; observers turn it into metrics, events and status."""

    at: float
    duration: float
    result: str  # converged | partial | failed | skipped
    reason: str = ""
    desired: DesiredState | None = None
    actual: Mapping[PeerId, Mapping[IPNetwork, RouteAttributes]] = field(default_factory=dict)
    snapshot: SourceSnapshot | None = None
    announced: int = 0
    withdrawn: int = 0
    #: Addresses that became announced to at least one peer / withdrawn from every peer.
    newly_announced: frozenset[IPNetwork] = frozenset()
    newly_withdrawn: frozenset[IPNetwork] = frozenset()
    rejected: tuple[tuple[PeerId, IPNetwork, str], ...] = ()
    #: Seconds from the first trigger pull of this pass to the last acknowledgement.
    latency: float | None = None


Observer = Callable[[PassReport], None]


def _prefixes(rib: Mapping[PeerId, Mapping[IPNetwork, RouteAttributes]]) -> set[IPNetwork]:
    # set.update from a dict reuses the hashes it holds (a network's __hash__ is slow Python).
    prefixes: set[IPNetwork] = set()
    prefixes.update(*rib.values())
    return prefixes


def _held(
    prefixes: set[IPNetwork], rib: Mapping[PeerId, Mapping[IPNetwork, RouteAttributes]]
) -> set[IPNetwork]:
    """Those of ``prefixes`` announced to at least one peer."""
    return {p for p in prefixes if any(p in peer_rib for peer_rib in rib.values())}


class Reconciler:
    def __init__(
        self,
        *,
        speaker: Speaker,
        source: CandidateSource,
        next_hops: NextHopSource,
        policy: RoutingPolicy,
        trigger: Trigger,
        resync_seconds: float = 60.0,
        gate: Gate | None = None,
        observers: Sequence[Observer] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._speaker = speaker
        self._source = source
        self._next_hops = next_hops
        self.policy = policy
        self._trigger = trigger
        self._resync_seconds = resync_seconds
        self._gate = gate
        self._observers = list(observers)
        self._clock = clock
        self._actual: Rib | None = None
        self._published: dict[PeerId, dict[IPNetwork, RouteAttributes]] | None = None
        self._generation: int | None = None
        self._rejected: dict[tuple[PeerId, IPNetwork], RouteAttributes] = {}
        self.first_sync_done = False
        self.last_report: PassReport | None = None
        self.heartbeat = time.monotonic()
        self.passes = 0

    # --- public ----------------------------------------------------------------------

    @property
    def actual(self) -> Mapping[PeerId, Mapping[IPNetwork, RouteAttributes]]:
        return self._actual or {}

    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    def invalidate(self) -> None:
        """Forget what we believe is announced; the next pass re-reads the speaker."""
        self._actual = None
        self._published = None

    async def run(self) -> None:
        while True:
            reasons = await self._trigger.wait(max_wait=self._resync_seconds)
            self.heartbeat = time.monotonic()
            if "timer" in reasons:
                self.invalidate()
                self._rejected.clear()
            await self.reconcile_once()

    async def reconcile_once(self) -> PassReport:
        started = time.monotonic()
        pulled_at = self._trigger.first_pull_at
        try:
            report = await self._pass(started=started, pulled_at=pulled_at)
        except SpeakerUnavailable as exc:
            self.invalidate()
            report = self._report(started, result="failed", reason=f"speaker unavailable: {exc}")
        self.passes += 1
        self.heartbeat = time.monotonic()
        self.last_report = report
        self._log(report)
        for observer in self._observers:
            try:
                observer(report)
            except Exception:
                logger.exception("observer failed", extra={"op": "observe"})
        return report

    async def converge(self, *, routes: Mapping[PeerId, Mapping[IPNetwork, RouteAttributes]]) -> PassReport:
        """Drive the speaker to exactly ``routes`` (used for the graceful stop)."""
        started = time.monotonic()
        if self._actual is None or self._generation != self._speaker.generation:
            self._actual = await self._speaker.read_rib_out()
            self._published = None
            self._generation = self._speaker.generation
        plan = plan_mod.diff(desired=routes, actual=self._actual)
        return await self._execute(plan, started=started, pulled_at=None, desired=None, snapshot=None)

    # --- one pass --------------------------------------------------------------------

    async def _pass(self, *, started: float, pulled_at: float | None) -> PassReport:
        if not self._speaker.available:
            return self._report(started, result="skipped", reason="waiting for the ExaBGP API channel")
        if self._actual is None or self._generation != self._speaker.generation:
            generation = self._speaker.generation
            self._actual = await self._speaker.read_rib_out()
            self._published = None
            self._generation = generation
            self._rejected.clear()
            logger.info(
                "read adj-rib-out",
                extra={"op": "resync", "generation": generation, "routes": len(_prefixes(self._actual))},
            )
        snapshot = self._source.snapshot()
        if not snapshot.synced:
            return self._report(
                started,
                result="skipped",
                reason=f"waiting for the first complete load of source {self._source.name}"
                + (f": {snapshot.error}" if snapshot.error else ""),
                snapshot=snapshot,
            )
        candidates = snapshot.candidates
        gate_refusals: tuple[Refusal, ...] = ()
        if self._gate is not None:
            candidates, gate_refusals = self._gate(candidates)
        desired = desired_mod.compute(
            candidates=candidates,
            policy=self.policy,
            next_hops=self._next_hops.current(),
            current=self._actual,
        )
        desired = DesiredState(
            routes=desired.routes, refusals=(*snapshot.refusals, *gate_refusals, *desired.refusals)
        )
        plan = self._without_known_rejections(plan_mod.diff(desired=desired.routes, actual=self._actual))
        return await self._execute(
            plan, started=started, pulled_at=pulled_at, desired=desired, snapshot=snapshot
        )

    async def _execute(
        self,
        plan: Plan,
        *,
        started: float,
        pulled_at: float | None,
        desired: DesiredState | None,
        snapshot: SourceSnapshot | None,
    ) -> PassReport:
        actual = self._actual
        assert actual is not None
        result = await self._speaker.apply(plan) if not plan.empty else None
        acked_at = time.monotonic()
        rejected: list[tuple[PeerId, IPNetwork, str]] = []
        # Only prefixes of acknowledged steps can change state: look at those, not the whole table.
        touched = {p for step in (result.applied if result is not None else ()) for p in step.prefixes}
        before = _held(touched, actual)
        if result is not None:
            if result.applied:
                self._published = None
            for step in result.applied:
                plan_mod.apply_step(actual, step)
            for step, reason in result.rejected:
                if isinstance(step, Announce):
                    for prefix in step.prefixes:
                        self._rejected[(step.peer, prefix)] = step.attributes
                rejected.extend((step.peer, prefix, reason) for prefix in step.prefixes)
            if result.interrupted:
                self.invalidate()
        after = _held(touched, actual)
        announced, withdrawn = plan.count()
        if result is not None and result.interrupted:
            outcome, reason = "failed", "the ExaBGP API channel went away during the pass"
        elif rejected:
            outcome, reason = "partial", f"{len(rejected)} prefix(es) rejected by ExaBGP"
        else:
            outcome, reason = "converged", ""
        if desired is not None and outcome == "converged":
            self.first_sync_done = True
        latency = acked_at - pulled_at if (pulled_at is not None and not plan.empty) else None
        return self._report(
            started,
            result=outcome,
            reason=reason,
            desired=desired,
            snapshot=snapshot,
            announced=announced,
            withdrawn=withdrawn,
            newly_announced=frozenset(after - before),
            newly_withdrawn=frozenset(before - after),
            rejected=tuple(rejected),
            latency=latency,
        )

    def _published_table(self) -> Mapping[PeerId, Mapping[IPNetwork, RouteAttributes]]:
        """A copy of the announced table for the report (observers keep it), rebuilt only when
        the table changed since the last one."""
        if self._published is None:
            self._published = {peer: dict(rib) for peer, rib in (self._actual or {}).items()}
        return self._published

    def _without_known_rejections(self, plan: Plan) -> Plan:
        if not self._rejected:
            return plan
        steps = []
        for step in plan.steps:
            if isinstance(step, Announce):
                keep = tuple(
                    p for p in step.prefixes if self._rejected.get((step.peer, p)) != step.attributes
                )
                if not keep:
                    continue
                step = Announce(peer=step.peer, attributes=step.attributes, prefixes=keep)
            steps.append(step)
        return Plan(steps=tuple(steps))

    def _report(self, started: float, *, result: str, reason: str = "", **fields: object) -> PassReport:
        return PassReport(
            at=self._clock(),
            duration=time.monotonic() - started,
            result=result,
            reason=reason,
            actual=self._published_table(),
            **fields,  # type: ignore[arg-type]
        )

    def _log(self, report: PassReport) -> None:
        extra = {
            "op": "reconcile",
            "result": report.result,
            "announced": report.announced,
            "withdrawn": report.withdrawn,
            "seconds": round(report.duration, 4),
        }
        if report.reason:
            extra["reason"] = report.reason
        if report.result in ("failed", "partial"):
            logger.warning("reconcile pass incomplete", extra=extra)
        elif report.announced or report.withdrawn:
            logger.info("reconcile pass applied changes", extra=extra)
        else:
            logger.debug("reconcile pass", extra=extra)
