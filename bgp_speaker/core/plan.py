"""Diff desired against actual and produce an ordered, batched :class:`Plan`.

Rules (house style 8): per peer, withdrawals come before announcements; announcements
are grouped by identical attributes so the speaker can send them in few commands; an
empty plan means converged. Re-announcing a prefix replaces its attributes in ExaBGP, so
an attribute change (new next hop, new community) is a plain announce, never a
withdraw-then-announce that would open a gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bgp_speaker.core.desired import prefix_sort_key
from bgp_speaker.core.model import (
    Announce,
    IPNetwork,
    PeerId,
    Plan,
    RibOut,
    RouteAttributes,
    Step,
    Withdraw,
)


def _peer_key(peer: PeerId) -> tuple[int, int]:
    return (peer.version, int(peer))


def _attr_key(attributes: RouteAttributes) -> str:
    return repr(attributes)


def _missing(have: RibOut, want: RibOut) -> Iterable[IPNetwork]:
    """The prefixes of ``have`` not in ``want``. With plain dicts this is a set difference that
    reuses the hashes the dicts hold (a network's ``__hash__`` is Python code, and slow)."""
    if type(have) is dict and type(want) is dict:
        return set(have).difference(want)
    return [p for p in have if p not in want]


def diff(*, desired: Mapping[PeerId, RibOut], actual: Mapping[PeerId, RibOut]) -> Plan:
    steps: list[Step] = []
    for peer in sorted(set(desired) | set(actual), key=_peer_key):
        want = desired.get(peer, {})
        have = actual.get(peer, {})
        gone = sorted(_missing(have, want), key=prefix_sort_key)
        if gone:
            steps.append(Withdraw(peer=peer, prefixes=tuple(gone)))
        groups: dict[RouteAttributes, list[IPNetwork]] = {}
        for prefix, attributes in want.items():
            held = have.get(prefix)
            # Unchanged routes usually carry the very object announced last time.
            if held is not attributes and held != attributes:
                groups.setdefault(attributes, []).append(prefix)
        for attributes in sorted(groups, key=_attr_key):
            prefixes = sorted(groups[attributes], key=prefix_sort_key)
            steps.append(Announce(peer=peer, attributes=attributes, prefixes=tuple(prefixes)))
    return Plan(steps=tuple(steps))


def apply_step(actual: dict[PeerId, dict[IPNetwork, RouteAttributes]], step: Step) -> None:
    """Record one step that the speaker confirmed, in place."""
    rib = actual.setdefault(step.peer, {})
    if isinstance(step, Withdraw):
        for prefix in step.prefixes:
            rib.pop(prefix, None)
    else:
        for prefix in step.prefixes:
            rib[prefix] = step.attributes


def split(step: Step, *, size: int) -> list[Step]:
    """Cut a step into steps of at most ``size`` prefixes, preserving order."""
    if len(step.prefixes) <= size:
        return [step]
    chunks = [step.prefixes[i : i + size] for i in range(0, len(step.prefixes), size)]
    if isinstance(step, Withdraw):
        return [Withdraw(peer=step.peer, prefixes=c) for c in chunks]
    return [Announce(peer=step.peer, attributes=step.attributes, prefixes=c) for c in chunks]
