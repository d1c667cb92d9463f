"""In-memory fakes of the ports. They fail the test on invariant violations instead of
silently accepting what a real ExaBGP would choke on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bgp_speaker.aiokit import Trigger
from bgp_speaker.core.model import (
    Announce,
    Candidate,
    IPNetwork,
    NextHops,
    PeerId,
    PeerState,
    PeerStatus,
    Plan,
    Refusal,
    RouteAttributes,
    Withdraw,
)
from bgp_speaker.errors import SpeakerUnavailable
from bgp_speaker.ports import ApplyResult, Rib, SourceSnapshot


class InvariantViolation(AssertionError):
    pass


@dataclass
class FakeSpeaker:
    """Holds one adj-rib-out per peer, like ExaBGP."""

    peers: tuple[PeerId, ...]
    rib: dict[PeerId, dict[IPNetwork, RouteAttributes]] = field(default_factory=dict)
    generation: int = 1
    available: bool = True
    #: Prefixes whose announce ExaBGP answers with `error`.
    poison: set[IPNetwork] = field(default_factory=set)
    #: Interrupt (channel lost) after this many more steps; None = never.
    fail_after_steps: int | None = None
    steps_applied: int = 0
    reads: int = 0

    def __post_init__(self) -> None:
        for peer in self.peers:
            self.rib.setdefault(peer, {})

    async def read_rib_out(self) -> Rib:
        if not self.available:
            raise SpeakerUnavailable("fake speaker is down")
        self.reads += 1
        return {peer: dict(routes) for peer, routes in self.rib.items()}

    async def apply(self, plan: Plan) -> ApplyResult:
        if not self.available:
            raise SpeakerUnavailable("fake speaker is down")
        applied = []
        rejected = []
        for step in plan.steps:
            if self.fail_after_steps is not None and self.fail_after_steps <= 0:
                self.available = False
                return ApplyResult(applied=tuple(applied), rejected=tuple(rejected), interrupted=True)
            if self.fail_after_steps is not None:
                self.fail_after_steps -= 1
            if step.peer not in self.rib:
                raise InvariantViolation(f"command for unconfigured peer {step.peer}")
            if not step.prefixes:
                raise InvariantViolation("empty step")
            if isinstance(step, Withdraw):
                for prefix in step.prefixes:
                    if prefix not in self.rib[step.peer]:
                        raise InvariantViolation(f"withdraw of {prefix} which {step.peer} was never told")
                    del self.rib[step.peer][prefix]
                applied.append(step)
                continue
            assert isinstance(step, Announce)
            for prefix in step.prefixes:
                if prefix.version != step.attributes.next_hop.version:
                    raise InvariantViolation(f"{prefix} with next hop {step.attributes.next_hop}")
            bad = tuple(p for p in step.prefixes if p in self.poison)
            good = tuple(p for p in step.prefixes if p not in self.poison)
            if good:
                for prefix in good:
                    self.rib[step.peer][prefix] = step.attributes
                applied.append(Announce(peer=step.peer, attributes=step.attributes, prefixes=good))
            for prefix in bad:
                rejected.append(
                    (Announce(peer=step.peer, attributes=step.attributes, prefixes=(prefix,)), "error")
                )
            self.steps_applied += 1
        return ApplyResult(applied=tuple(applied), rejected=tuple(rejected))

    def peer_statuses(self) -> Mapping[PeerId, PeerStatus]:
        return {p: PeerStatus(peer=p, state=PeerState.ESTABLISHED) for p in self.peers}

    def restart(self) -> None:
        """ExaBGP died and came back empty."""
        self.rib = {peer: {} for peer in self.peers}
        self.generation += 1
        self.available = True


@dataclass
class FakeSource:
    name: str = "fake"
    candidates: tuple[Candidate, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    synced: bool = True
    error: str | None = None

    def snapshot(self) -> SourceSnapshot:
        return SourceSnapshot(
            candidates=self.candidates, refusals=self.refusals, synced=self.synced, error=self.error
        )

    async def run(self, *, trigger: Trigger) -> None:  # pragma: no cover - never started in tests
        return None


@dataclass
class FakeNextHops:
    hops: NextHops

    def current(self) -> NextHops:
        return self.hops

    def status(self) -> Mapping[str, object]:
        return {}

    async def run(self, *, trigger: Trigger) -> None:  # pragma: no cover
        return None
