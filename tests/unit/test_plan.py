from ipaddress import ip_address, ip_network

from bgp_speaker.core import plan
from bgp_speaker.core.model import Announce, RouteAttributes, Withdraw

PEER = ip_address("172.31.255.1")
NH = ip_address("172.31.255.11")
NH2 = ip_address("172.31.255.12")


def net(i):
    return ip_network(f"203.0.113.{i}/32")


def test_converged_plan_is_empty():
    rib = {PEER: {net(1): RouteAttributes(next_hop=NH)}}
    assert plan.diff(desired=rib, actual=rib).empty


def test_withdrawals_come_before_grouped_announcements():
    a = RouteAttributes(next_hop=NH)
    b = RouteAttributes(next_hop=NH, communities=("65000:1",))
    desired = {PEER: {net(3): a, net(2): a, net(4): b}}
    actual = {PEER: {net(1): a}}
    result = plan.diff(desired=desired, actual=actual)
    assert isinstance(result.steps[0], Withdraw)
    assert result.steps[0].prefixes == (net(1),)
    announces = [s for s in result.steps if isinstance(s, Announce)]
    assert {(s.attributes, s.prefixes) for s in announces} == {(a, (net(2), net(3))), (b, (net(4),))}
    assert result.count() == (3, 1)


def test_attribute_change_is_a_reannounce_not_a_withdraw():
    result = plan.diff(
        desired={PEER: {net(1): RouteAttributes(next_hop=NH2)}},
        actual={PEER: {net(1): RouteAttributes(next_hop=NH)}},
    )
    assert result.steps == (
        Announce(peer=PEER, attributes=RouteAttributes(next_hop=NH2), prefixes=(net(1),)),
    )


def test_peer_missing_from_desired_is_withdrawn_entirely():
    result = plan.diff(desired={}, actual={PEER: {net(1): RouteAttributes(next_hop=NH)}})
    assert result.steps == (Withdraw(peer=PEER, prefixes=(net(1),)),)


def test_apply_step_records_in_place_and_split_preserves_order():
    actual = {}
    step = Announce(
        peer=PEER, attributes=RouteAttributes(next_hop=NH), prefixes=tuple(net(i) for i in range(5))
    )
    parts = plan.split(step, size=2)
    assert [len(p.prefixes) for p in parts] == [2, 2, 1]
    assert tuple(p for s in parts for p in s.prefixes) == step.prefixes
    for part in parts:
        plan.apply_step(actual, part)
    assert set(actual[PEER]) == set(step.prefixes)
    plan.apply_step(actual, Withdraw(peer=PEER, prefixes=(net(0),)))
    assert net(0) not in actual[PEER]
