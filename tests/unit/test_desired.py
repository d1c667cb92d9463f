from ipaddress import ip_address, ip_network

import pytest

from bgp_speaker.core import desired
from bgp_speaker.core.model import (
    GRACEFUL_SHUTDOWN,
    AttributeOverrides,
    Candidate,
    Family,
    NextHops,
    PeerPolicy,
    RouteAttributes,
    RoutingPolicy,
)

CORE = ip_address("172.31.255.1")
CORE6 = ip_address("fd00:ffff::1")
NH4 = ip_address("172.31.255.11")
NH6 = ip_address("fd00:ffff::11")
POOLS = (ip_network("203.0.113.0/24"), ip_network("2001:db8:e1b::/64"))


def policy(**kw):
    peers = kw.pop("peers", (PeerPolicy(peer=CORE, local_as=65001, peer_as=65000),))
    return RoutingPolicy(peers=peers, pools=kw.pop("pools", POOLS), **kw)


def cand(ip, origin="t", **over):
    return Candidate(address=ip_address(ip), origin=origin, overrides=AttributeOverrides(**over))


def test_selects_v4_and_v6_host_routes_with_family_next_hops():
    state = desired.compute(
        candidates=[cand("203.0.113.10"), cand("2001:db8:e1b::10")],
        policy=policy(),
        next_hops=NextHops(ipv4=NH4, ipv6=NH6),
    )
    assert state.refusals == ()
    rib = state.routes[CORE]
    assert rib[ip_network("203.0.113.10/32")].next_hop == NH4
    assert rib[ip_network("2001:db8:e1b::10/128")].next_hop == NH6


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("198.18.0.1", "outside the allowed pools (203.0.113.0/24, 2001:db8:e1b::/64)"),
        ("2001:db8:ffff::1", "outside the allowed pools"),
    ],
)
def test_refuses_addresses_outside_the_pools(address, fragment):
    state = desired.compute(
        candidates=[cand(address, origin="file:e.yaml[0]")],
        policy=policy(),
        next_hops=NextHops(ipv4=NH4, ipv6=NH6),
    )
    assert state.routes[CORE] == {}
    (refusal,) = state.refusals
    assert refusal.address == address
    assert refusal.origin == "file:e.yaml[0]"
    assert fragment in refusal.reason


def test_never_pairs_an_ipv6_route_with_an_ipv4_next_hop():
    state = desired.compute(
        candidates=[cand("2001:db8:e1b::10")], policy=policy(), next_hops=NextHops(ipv4=NH4)
    )
    assert state.routes[CORE] == {}
    assert "no ipv6 next hop" in state.refusals[0].reason


def test_duplicates_are_refused_and_first_wins():
    state = desired.compute(
        candidates=[cand("203.0.113.10", "a"), cand("203.0.113.10", "b")],
        policy=policy(),
        next_hops=NextHops(ipv4=NH4),
    )
    assert list(state.routes[CORE]) == [ip_network("203.0.113.10/32")]
    assert state.refusals[0].origin == "b"
    assert "duplicate of a" in state.refusals[0].reason


def test_overrides_win_over_defaults_field_by_field():
    pol = policy(defaults=AttributeOverrides(communities=("65000:1",), med=5, as_path_prepend=1))
    state = desired.compute(
        candidates=[cand("203.0.113.10", communities=("65000:9",)), cand("203.0.113.11", med=7)],
        policy=pol,
        next_hops=NextHops(ipv4=NH4),
    )
    a = state.routes[CORE][ip_network("203.0.113.10/32")]
    b = state.routes[CORE][ip_network("203.0.113.11/32")]
    assert (a.communities, a.med, a.as_path_prepend) == (("65000:9",), 5, 1)
    assert (b.communities, b.med, b.as_path_prepend) == (("65000:1",), 7, 1)


def test_per_peer_families():
    peers = (
        PeerPolicy(peer=CORE, local_as=1, peer_as=2, families=frozenset({Family.IPV4})),
        PeerPolicy(peer=CORE6, local_as=1, peer_as=2, families=frozenset({Family.IPV6})),
    )
    state = desired.compute(
        candidates=[cand("203.0.113.10"), cand("2001:db8:e1b::10")],
        policy=policy(peers=peers),
        next_hops=NextHops(ipv4=NH4, ipv6=NH6),
    )
    assert list(state.routes[CORE]) == [ip_network("203.0.113.10/32")]
    assert list(state.routes[CORE6]) == [ip_network("2001:db8:e1b::10/128")]


def test_prefix_cap_keeps_announced_prefixes_first():
    peers = (PeerPolicy(peer=CORE, local_as=1, peer_as=2, max_prefixes=2),)
    current = {CORE: {ip_network("203.0.113.30/32"): RouteAttributes(next_hop=NH4)}}
    state = desired.compute(
        candidates=[cand(f"203.0.113.{i}") for i in (10, 20, 30)],
        policy=policy(peers=peers),
        next_hops=NextHops(ipv4=NH4),
        current=current,
    )
    assert set(state.routes[CORE]) == {ip_network("203.0.113.30/32"), ip_network("203.0.113.10/32")}
    (refusal,) = state.refusals
    assert refusal.address == "203.0.113.20"
    assert refusal.peer == CORE
    assert "prefix cap of 2" in refusal.reason


def test_graceful_shutdown_adds_the_community_once():
    attrs = RouteAttributes(next_hop=NH4, communities=("65000:1",))
    routes = {CORE: {ip_network("203.0.113.10/32"): attrs}}
    drained = desired.with_graceful_shutdown(routes, community=GRACEFUL_SHUTDOWN)
    again = desired.with_graceful_shutdown(drained, community=GRACEFUL_SHUTDOWN)
    assert drained[CORE][ip_network("203.0.113.10/32")].communities == ("65000:1", "65535:0")
    assert again == drained


def test_communities_are_a_canonical_set_so_the_speakers_answer_compares_equal():
    pol = policy(defaults=AttributeOverrides(communities=("65000:20", "65000:3", "065000:3")))
    state = desired.compute(candidates=[cand("203.0.113.10")], policy=pol, next_hops=NextHops(ipv4=NH4))
    attrs = state.routes[CORE][ip_network("203.0.113.10/32")]
    assert attrs.communities == ("65000:3", "65000:20")
    assert attrs.with_community(GRACEFUL_SHUTDOWN).communities == ("65000:3", "65000:20", "65535:0")
