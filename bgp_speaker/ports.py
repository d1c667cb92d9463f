"""The seams between the reconciler and the outside world, as typing Protocols.

Each port has one real adapter under ``bgp_speaker.adapters`` and one fake under
``tests/fakes.py``; the same contract tests run against both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bgp_speaker.aiokit import Trigger
from bgp_speaker.core.model import (
    Candidate,
    IPNetwork,
    NextHops,
    PeerId,
    PeerStatus,
    Plan,
    Refusal,
    RouteAttributes,
    Step,
)

Rib = dict[PeerId, dict[IPNetwork, RouteAttributes]]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What a speaker really did with a plan: only ``applied`` may be recorded as actual."""

    applied: tuple[Step, ...] = ()
    #: Steps (usually single prefixes, after isolation) that ExaBGP refused, with its reason.
    rejected: tuple[tuple[Step, str], ...] = ()
    #: True when the channel went away part-way: the rest of the plan was not sent.
    interrupted: bool = False


class Speaker(Protocol):
    """A BGP speaker we can tell what to announce (ExaBGP behind its process API)."""

    @property
    def generation(self) -> int:
        """Bumped each time the API channel (re)connects. A new value means the speaker's
        state is unknown to us: re-read it with :meth:`read_rib_out` before diffing."""
        ...

    @property
    def available(self) -> bool: ...

    async def read_rib_out(self) -> Rib:
        """What the speaker holds for each peer (``show adj-rib out``).
        Raises ``SpeakerUnavailable``."""
        ...

    async def apply(self, plan: Plan) -> ApplyResult: ...

    def peer_statuses(self) -> Mapping[PeerId, PeerStatus]: ...


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """A point-in-time view of one source of candidates."""

    candidates: tuple[Candidate, ...] = ()
    #: Entries the source itself refused (malformed, not bound, not ready ...).
    refusals: tuple[Refusal, ...] = ()
    #: False until the first complete load; the reconciler does not withdraw before that.
    synced: bool = False
    #: Wall-clock time of the last moment the view was known to be current.
    fresh_at: float | None = None
    #: The last error reading the source; the snapshot is then the last good one.
    error: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)


class CandidateSource(Protocol):
    name: str

    def snapshot(self) -> SourceSnapshot: ...

    async def run(self, *, trigger: Trigger) -> None:
        """Watch the source forever; pull ``trigger`` whenever the snapshot may have changed."""
        ...


class NextHopSource(Protocol):
    def current(self) -> NextHops: ...

    def status(self) -> Mapping[str, object]: ...

    async def run(self, *, trigger: Trigger) -> None: ...
