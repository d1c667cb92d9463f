"""Data-plane gating: announce an EIP only while the gateway really serves it.

Kubernetes' ``ready`` flags say what should work; the gateway's NAT tables (a
:class:`~bgp_speaker.core.natrules.NatView`) say what does. :func:`gate` compares the two:

- ``off``: every candidate is kept, nothing is tracked.
- ``observe``: every candidate is kept; mismatches are reported as observations.
- ``require``: a candidate is kept only while its NAT rules are installed. A candidate that was
  kept and loses its rules stays kept for ``hold_down`` seconds, so Kube-OVN's redo (rules removed
  and re-added when the gateway pod restarts) does not flap the route. A candidate that never had
  rules is refused at once: announcing before the rule exists would blackhole traffic.

When the view is ``None`` (the tables could not be read, e.g. no CAP_NET_ADMIN) every candidate is
kept: the speaker falls back to Kubernetes state and says so elsewhere.

Pure: ``now`` is passed in, the previous :class:`GatingState` is passed back in on the next call.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from bgp_speaker.core.model import Candidate, IPAddress, Refusal
from bgp_speaker.core.natrules import NatView

Mode = Literal["off", "observe", "require"]


class ObservationKind(enum.StrEnum):
    BOUND_BUT_MISSING = "bound-but-missing"
    PRESENT_BUT_UNBOUND = "present-but-unbound"


@dataclass(frozen=True, slots=True)
class Observation:
    """A mismatch between Kubernetes and the data plane, for /status, Events and metrics."""

    address: str
    kind: ObservationKind
    #: When the mismatch was first seen (same clock as ``now``).
    since: float
    seconds: float
    #: Where the candidate came from (empty for present-but-unbound).
    origin: str = ""
    #: Rule kinds installed for the address (present-but-unbound).
    kinds: tuple[str, ...] = ()
    #: Bound-but-missing in ``require`` mode and still announced because of the hold-down.
    held: bool = False
    #: Wall-clock end of the hold-down when ``held``.
    held_until: float | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "address": self.address,
            "kind": str(self.kind),
            "since": self.since,
            "seconds": round(self.seconds, 1),
        }
        if self.origin:
            out["origin"] = self.origin
        if self.kinds:
            out["kinds"] = list(self.kinds)
        if self.held:
            out["held_until"] = self.held_until
        return out


@dataclass(frozen=True, slots=True)
class GatingState:
    """What :func:`gate` must remember between calls."""

    #: Addresses that passed the gate in the previous call.
    kept: frozenset[IPAddress] = frozenset()
    #: Bound address -> first moment it was seen without installed rules (current episode).
    missing_since: Mapping[IPAddress, float] = field(default_factory=dict)
    #: Installed address -> first moment it was seen installed while not bound.
    unbound_since: Mapping[IPAddress, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GatingResult:
    kept: tuple[Candidate, ...]
    refusals: tuple[Refusal, ...] = ()
    observations: tuple[Observation, ...] = ()
    state: GatingState = field(default_factory=GatingState)
    #: Earliest end of a running hold-down: call :func:`gate` again then (None: nothing pending).
    next_deadline: float | None = None
    #: False when nothing was compared (mode ``off`` or the view is unreadable).
    active: bool = True


def missing_reason(*, seconds: float, view: NatView, address: IPAddress) -> str:
    text = f"bound in Kubernetes but no NAT rule installed in the gateway for {seconds:.0f} s"
    if address.version == 6:
        return text + " (the NAT gateway has no IPv6 NAT)"
    if not view.initialized:
        return text + " (the gateway's NAT chains are not initialized)"
    if address in view.partial:
        return text + " (only one half of a FIP is installed)"
    return text


def gate(
    candidates: Iterable[Candidate],
    *,
    view: NatView | None,
    mode: Mode,
    hold_down: float,
    now: float,
    previous: GatingState | None = None,
) -> GatingResult:
    """Split ``candidates`` into kept and refused, given what the data plane holds."""
    candidates = tuple(candidates)
    prev = previous or GatingState()
    if mode == "off":
        return GatingResult(kept=candidates, active=False)
    if view is None:
        # Unreadable tables: fall back to Kubernetes state; keep the timers for when it returns.
        return GatingResult(
            kept=candidates,
            state=GatingState(
                kept=frozenset(c.address for c in candidates),
                missing_since=dict(prev.missing_since),
                unbound_since=dict(prev.unbound_since),
            ),
            active=False,
        )

    installed = view.installed()
    kept: list[Candidate] = []
    refusals: list[Refusal] = []
    observations: list[Observation] = []
    missing_since: dict[IPAddress, float] = {}
    kept_addresses: set[IPAddress] = set()
    deadlines: list[float] = []
    bound: set[IPAddress] = set()

    for candidate in candidates:
        address = candidate.address
        bound.add(address)
        if address in installed:
            kept.append(candidate)
            kept_addresses.add(address)
            continue
        since = missing_since.get(address, prev.missing_since.get(address, now))
        missing_since[address] = since
        seconds = max(0.0, now - since)
        held = mode == "require" and address in prev.kept and seconds < hold_down
        if mode == "observe" or held:
            kept.append(candidate)
            kept_addresses.add(address)
        else:
            refusals.append(
                Refusal(
                    address=str(address),
                    origin=candidate.origin,
                    reason=missing_reason(seconds=seconds, view=view, address=address),
                )
            )
        if held:
            deadlines.append(since + hold_down)
        observations.append(
            Observation(
                address=str(address),
                kind=ObservationKind.BOUND_BUT_MISSING,
                since=since,
                seconds=seconds,
                origin=candidate.origin,
                held=held,
                held_until=since + hold_down if held else None,
            )
        )

    unbound_since: dict[IPAddress, float] = {}
    for address in sorted(installed - bound):
        since = prev.unbound_since.get(address, now)
        unbound_since[address] = since
        observations.append(
            Observation(
                address=str(address),
                kind=ObservationKind.PRESENT_BUT_UNBOUND,
                since=since,
                seconds=max(0.0, now - since),
                kinds=tuple(sorted(view.kinds(address))),
            )
        )

    return GatingResult(
        kept=tuple(kept),
        refusals=tuple(refusals),
        observations=tuple(observations),
        state=GatingState(
            kept=frozenset(kept_addresses), missing_since=missing_since, unbound_since=unbound_since
        ),
        next_deadline=min(deadlines) if deadlines else None,
    )
