"""Desired state: candidates + policy + next hops -> what each peer should be told.

Pure selection, in the spirit of Cilium's ``PolicySelection``: every decision not to
announce something is returned as a :class:`Refusal` with a human-readable reason, so the
caller can log it, count it and show it in ``/status`` without re-deriving anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


def _pool_text(pools: tuple[IPNetwork, ...]) -> str:
    return ", ".join(str(p) for p in pools) if pools else "none configured"


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
    accepted: dict[IPNetwork, tuple[RouteAttributes, str]] = {}
    origins: dict[IPAddress, str] = {}
    # Hot loop (runs over every candidate on every pass): pools as (version, mask, network)
    # integers, and one merged attribute set per distinct (next hop, overrides).
    pools = [(p.version, int(p.netmask), int(p.network_address)) for p in policy.pools]
    merged: dict[tuple[IPAddress, AttributeOverrides], RouteAttributes] = {}

    for candidate in candidates:
        address = candidate.address
        if address in origins:
            refusals.append(
                Refusal(
                    address=str(address),
                    origin=candidate.origin,
                    reason=f"duplicate of {origins[address]}",
                )
            )
            continue
        origins[address] = candidate.origin
        version, value = address.version, int(address)
        for pool_version, mask, net in pools:
            if pool_version == version and value & mask == net:
                break
        else:
            refusals.append(
                Refusal(
                    address=str(address),
                    origin=candidate.origin,
                    reason=f"outside the allowed pools ({_pool_text(policy.pools)})",
                )
            )
            continue
        family = family_of(address)
        next_hop = next_hops.for_family(family)
        if next_hop is None:
            refusals.append(
                Refusal(
                    address=str(address),
                    origin=candidate.origin,
                    reason=f"no {family.value} next hop: the interconnect interface has no "
                    f"{family.value} address and no next-hop override is configured",
                )
            )
            continue
        if not any(family in p.families for p in policy.peers):
            refusals.append(
                Refusal(
                    address=str(address), origin=candidate.origin, reason=f"no peer carries {family.value}"
                )
            )
            continue
        key = (next_hop, candidate.overrides)
        try:
            attributes = merged[key]
        except KeyError:
            attributes = merged[key] = merge_attributes(
                next_hop=next_hop, defaults=policy.defaults, overrides=candidate.overrides
            )
        except TypeError:  # overrides holding a list: correct, only not shareable
            attributes = merge_attributes(
                next_hop=next_hop, defaults=policy.defaults, overrides=candidate.overrides
            )
        accepted[host_prefix(address)] = (attributes, candidate.origin)

    routes: dict[PeerId, RibOut] = {}
    for peer in policy.peers:
        rib = {p: a for p, (a, _) in accepted.items() if family_of(p) in peer.families}
        cap = peer.max_prefixes
        if cap is not None and len(rib) > cap:
            announced = current.get(peer.peer, {})
            order = sorted(rib, key=lambda p: (p not in announced, prefix_sort_key(p)))
            for prefix in order[cap:]:
                refusals.append(
                    Refusal(
                        address=str(prefix.network_address),
                        origin=accepted[prefix][1],
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
