"""Desired state: candidates + policy + next hops -> what each peer should be told.

Pure selection, in the spirit of Cilium's ``PolicySelection``: every decision not to
announce something is returned as a :class:`Refusal` with a human-readable reason, so the
caller can log it, count it and show it in ``/status`` without re-deriving anything.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from bgp_speaker.core.model import (
    AttributeOverrides,
    Candidate,
    DesiredState,
    Family,
    IPAddress,
    IPNetwork,
    NextHops,
    PeerId,
    Refusal,
    RibOut,
    RouteAttributes,
    RoutingPolicy,
    canonical_communities,
    family_of,
    host_prefix,
)


def prefix_sort_key(prefix: IPNetwork) -> tuple[int, int, int]:
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def merge_attributes(
    *, next_hop: IPAddress, defaults: AttributeOverrides, overrides: AttributeOverrides
) -> RouteAttributes:
    """Per-address overrides win over the configured defaults, field by field."""

    def pick(name: str) -> object:
        value = getattr(overrides, name)
        return getattr(defaults, name) if value is None else value

    communities = pick("communities")
    large = pick("large_communities")
    prepend = pick("as_path_prepend")
    return RouteAttributes(
        next_hop=next_hop,
        communities=canonical_communities(communities) if isinstance(communities, tuple) else (),
        large_communities=canonical_communities(large) if isinstance(large, tuple) else (),
        med=overrides.med if overrides.med is not None else defaults.med,
        local_preference=(
            overrides.local_preference
            if overrides.local_preference is not None
            else defaults.local_preference
        ),
        as_path_prepend=prepend if isinstance(prepend, int) else 0,
    )


@functools.lru_cache(maxsize=4096)
def _merged(
    next_hop: IPAddress, defaults: AttributeOverrides, overrides: AttributeOverrides
) -> RouteAttributes:
    """:func:`merge_attributes`, memoised: unchanged candidates get the very same attribute object on
    every pass, so comparing it with what is announced is an identity check."""
    return merge_attributes(next_hop=next_hop, defaults=defaults, overrides=overrides)


def _pool_text(pools: tuple[IPNetwork, ...]) -> str:
    return ", ".join(str(p) for p in pools) if pools else "none configured"


@dataclass(slots=True)
class _Lane:
    """Everything one address family needs per candidate, worked out once per pass."""

    family: Family
    pools: list[tuple[int, int]]
    next_hop: IPAddress | None
    carried: bool
    defaults: AttributeOverrides
    rib: dict[IPNetwork, RouteAttributes] = field(default_factory=dict)
    last: tuple[AttributeOverrides, RouteAttributes] | None = None

    def attributes(self, overrides: AttributeOverrides) -> RouteAttributes:
        last = self.last
        if last is not None and last[0] is overrides:
            return last[1]
        assert self.next_hop is not None
        try:
            attributes = _merged(self.next_hop, self.defaults, overrides)
        except TypeError:  # overrides holding a list: correct, only not shareable
            return merge_attributes(next_hop=self.next_hop, defaults=self.defaults, overrides=overrides)
        self.last = (overrides, attributes)
        return attributes


def compute(
    *,
    candidates: Iterable[Candidate],
    policy: RoutingPolicy,
    next_hops: NextHops,
    current: Mapping[PeerId, RibOut] | None = None,
) -> DesiredState:
    """Select what to announce to every peer.

    ``current`` is what is announced now; it only decides which prefixes keep their slot
    when a peer's prefix cap is exceeded, so that a new address never displaces an old one.
    """
    current = current or {}
    refusals: list[Refusal] = []
    origins: dict[IPAddress, str] = {}
    # Hot loop (runs over every candidate on every pass): per family, the pools as (mask,
    # network) integers, the next hop, whether any peer carries it, and its accepted routes.
    v4, v6 = (
        _Lane(
            family=family,
            pools=[(int(p.netmask), int(p.network_address)) for p in policy.pools if family_of(p) is family],
            next_hop=next_hops.for_family(family),
            carried=any(family in p.families for p in policy.peers),
            defaults=policy.defaults,
        )
        for family in (Family.IPV4, Family.IPV6)
    )
    accepted: list[tuple[IPNetwork, str]] = []

    for candidate in candidates:
        address, origin = candidate.address, candidate.origin
        known = len(origins)
        first = origins.setdefault(address, origin)
        if len(origins) == known:
            refusals.append(Refusal(address=str(address), origin=origin, reason=f"duplicate of {first}"))
            continue
        lane = v4 if isinstance(address, IPv4Address) else v6
        value = int(address)
        for mask, net in lane.pools:
            if value & mask == net:
                break
        else:
            refusals.append(
                Refusal(
                    address=str(address),
                    origin=origin,
                    reason=f"outside the allowed pools ({_pool_text(policy.pools)})",
                )
            )
            continue
        family = lane.family
        if lane.next_hop is None:
            refusals.append(
                Refusal(
                    address=str(address),
                    origin=origin,
                    reason=f"no {family.value} next hop: the interconnect interface has no "
                    f"{family.value} address and no next-hop override is configured",
                )
            )
            continue
        if not lane.carried:
            refusals.append(
                Refusal(address=str(address), origin=origin, reason=f"no peer carries {family.value}")
            )
            continue
        prefix = host_prefix(address)
        lane.rib[prefix] = lane.attributes(candidate.overrides)
        accepted.append((prefix, origin))

    routes: dict[PeerId, RibOut] = {}
    origin_of: dict[IPNetwork, str] | None = None
    for peer in policy.peers:
        rib = {
            **(v4.rib if Family.IPV4 in peer.families else {}),
            **(v6.rib if Family.IPV6 in peer.families else {}),
        }
        cap = peer.max_prefixes
        if cap is not None and len(rib) > cap:
            origin_of = origin_of or dict(accepted)
            announced = current.get(peer.peer, {})
            order = sorted(rib, key=lambda p: (p not in announced, prefix_sort_key(p)))
            for prefix in order[cap:]:
                refusals.append(
                    Refusal(
                        address=str(prefix.network_address),
                        origin=origin_of[prefix],
                        reason=f"prefix cap of {cap} reached for peer {peer.peer}",
                        peer=peer.peer,
                    )
                )
            rib = {p: rib[p] for p in order[:cap]}
        routes[peer.peer] = rib
    return DesiredState(routes=routes, refusals=tuple(refusals))


def with_graceful_shutdown(routes: Mapping[PeerId, RibOut], *, community: str) -> dict[PeerId, RibOut]:
    """The same routes, each also carrying ``community`` (RFC 8326 drain before stop)."""
    return {
        peer: {prefix: attrs.with_community(community) for prefix, attrs in rib.items()}
        for peer, rib in routes.items()
    }


def families_in(rib: RibOut) -> set[Family]:
    return {family_of(p) for p in rib}
