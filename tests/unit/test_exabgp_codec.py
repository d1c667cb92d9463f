"""The ExaBGP line codec: rendering, refusals, classification, events and show parsers.

Sample lines below were captured from a real ExaBGP 5.0.15 (the round trip through a running
ExaBGP is in tests/integration/test_exabgp_speaker.py).
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from bgp_speaker.core import exabgp_codec as codec
from bgp_speaker.core.model import Announce, PeerState, RouteAttributes, Withdraw

PEER = ip_address("192.0.2.1")
NH4 = ip_address("10.99.0.11")
NH6 = ip_address("fd00:99::11")


def announce(*prefixes: str, **attrs: object) -> Announce:
    next_hop = NH6 if ip_network(prefixes[0]).version == 6 else NH4
    attributes = RouteAttributes(next_hop=attrs.pop("next_hop", next_hop), **attrs)  # type: ignore[arg-type]
    return Announce(peer=PEER, attributes=attributes, prefixes=tuple(ip_network(p) for p in prefixes))


def test_announce_renders_attributes_in_one_command() -> None:
    step = announce(
        "203.0.113.1/32",
        "203.0.113.2/32",
        communities=("65000:100",),
        large_communities=("65000:0:7",),
        med=10,
        local_preference=200,
    )
    assert codec.render_step(step, local_as=65001, peer_as=65000) == [
        "neighbor 192.0.2.1 announce attributes next-hop 10.99.0.11 origin igp med 10 local-preference 200 "
        "community [65000:100] large-community [65000:0:7] nlri 203.0.113.1/32 203.0.113.2/32"
    ]


def test_without_prepend_the_as_path_is_left_to_exabgp() -> None:
    (line,) = codec.render_step(announce("203.0.113.1/32"), local_as=65001, peer_as=65000)
    assert "as-path" not in line


@pytest.mark.parametrize(
    ("peer_as", "expected"),
    [(65000, "as-path [65001 65001 65001]"), (65001, "as-path [65001 65001]")],
    ids=["ebgp-includes-our-as", "ibgp-only-the-prepends"],
)
def test_prepend_writes_the_whole_path(peer_as: int, expected: str) -> None:
    (line,) = codec.render_step(
        announce("203.0.113.1/32", as_path_prepend=2), local_as=65001, peer_as=peer_as
    )
    assert line.endswith(f"{expected} nlri 203.0.113.1/32")


def test_communities_are_written_sorted_and_unique() -> None:
    step = announce(
        "203.0.113.1/32",
        communities=("65000:20", "65000:3", "65000:20"),
        large_communities=("1:2:3", "1:0:9"),
    )
    (line,) = codec.render_step(step, local_as=65001, peer_as=65000)
    assert "community [65000:3 65000:20] large-community [1:0:9 1:2:3]" in line


def test_ipv6_announce_uses_the_ipv6_next_hop() -> None:
    (line,) = codec.render_step(announce("2001:db8:e1b::1/128"), local_as=65001, peer_as=65000)
    assert (
        line
        == "neighbor 192.0.2.1 announce attributes next-hop fd00:99::11 origin igp nlri 2001:db8:e1b::1/128"
    )


def test_withdraw_is_split_per_family_with_a_next_hop_of_that_family() -> None:
    step = Withdraw(peer=PEER, prefixes=(ip_network("2001:db8:e1b::1/128"), ip_network("203.0.113.1/32")))
    assert codec.render_step(step, local_as=65001, peer_as=65000) == [
        "neighbor 192.0.2.1 withdraw attributes next-hop 0.0.0.0 nlri 203.0.113.1/32",
        "neighbor 192.0.2.1 withdraw attributes next-hop :: nlri 2001:db8:e1b::1/128",
    ]


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (announce("2001:db8:e1b::1/128", next_hop=NH4), "IPv6 prefix"),
        (announce("203.0.113.1/32", next_hop=NH6), "IPv4 prefix"),
        (announce("203.0.113.1/32", next_hop=ip_address("0.0.0.0")), "cannot be announced"),
        (announce("203.0.113.1/32", communities=("65000:70000",)), "standard community"),
        (announce("203.0.113.1/32", communities=("no-export",)), "standard community"),
        (announce("203.0.113.1/32", large_communities=("1:2",)), "large community"),
        (announce("203.0.113.1/32", med=2**32), "med"),
        (announce("203.0.113.1/32", local_preference=-1), "local-preference"),
        (announce("203.0.113.1/32", as_path_prepend=65), "prepend"),
        (announce(*(f"2001:db8:e1b::{i:x}/128" for i in range(3000))), "over the"),
    ],
    ids=[
        "v6-prefix-v4-nh",
        "v4-prefix-v6-nh",
        "unspecified-nh",
        "community-range",
        "community-name",
        "large-shape",
        "med-range",
        "lp-range",
        "prepend-range",
        "too-long",
    ],
)
def test_refused_steps_raise_instead_of_rendering(step: Announce, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        codec.render_step(step, local_as=65001, peer_as=65000)


def test_empty_steps_render_nothing() -> None:
    assert codec.render_step(Withdraw(peer=PEER, prefixes=()), local_as=1, peer_as=2) == []


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("done", codec.LineKind.DONE),
        ("error", codec.LineKind.ERROR),
        ('{ "exabgp": "5.0.0", "type": "state" }', codec.LineKind.EVENT),
        ("neighbor 192.0.2.1 local-ip 10.99.0.11 local-as 65001 ...", codec.LineKind.TEXT),
        ("[]", codec.LineKind.TEXT),
        ("done ", codec.LineKind.TEXT),
    ],
)
def test_classify(line: str, kind: codec.LineKind) -> None:
    assert codec.classify(line) is kind


HEAD = (
    '{ "exabgp": "5.0.0", "time": 1795540401.27, "host" : "vm", "pid" : 7430, "ppid" : 7427, "counter": 1, '
)
NEIGHBOR = (
    '"neighbor": { "address": { "local": "127.0.0.1", "peer": "127.0.0.2" }, "asn": { "local": 65001, '
    '"peer": 65000 }, "router-id": "127.0.0.1" , '
)


def test_parse_state_events() -> None:
    up = codec.parse_event(HEAD + '"type": "state", ' + NEIGHBOR + '"state": "up" } }')
    assert up == codec.StateEvent(peer=ip_address("127.0.0.2"), state="up")
    down = codec.parse_event(
        HEAD + '"type": "state", ' + NEIGHBOR + '"state": "down", "reason": "notification received (3,1)" } }'
    )
    assert down == codec.StateEvent(
        peer=ip_address("127.0.0.2"), state="down", reason="notification received (3,1)"
    )
    assert codec.STATE_OF_EVENT[down.state] is PeerState.DOWN


def test_parse_notification_event() -> None:
    line = (
        HEAD
        + '"type": "notification", '
        + NEIGHBOR
        + '"direction": "receive", '
        + '"notification": { "code": 3, "subcode": 1, "data": "0x", "message": "" }  } }'
    )
    assert codec.parse_event(line) == codec.NotificationEvent(
        peer=ip_address("127.0.0.2"), code=3, subcode=1, message="", direction="receive"
    )


def test_parse_negotiated_and_global_events() -> None:
    negotiated = codec.parse_event(
        HEAD
        + '"type": "negotiated", '
        + NEIGHBOR
        + '"negotiated": { "hold_time": 9, "families": [ "ipv4 unicast", "ipv6 unicast" ] } } }'
    )
    assert negotiated == codec.NegotiatedEvent(
        peer=ip_address("127.0.0.2"), hold_time=9, families=("ipv4 unicast", "ipv6 unicast")
    )
    assert (
        codec.parse_event(HEAD + '"type": "notification", "notification": "shutdown"}')
        == codec.ShutdownEvent()
    )
    assert codec.parse_event(HEAD + '"type": "fsm", ' + NEIGHBOR + '"state": "x" } }') == codec.OtherEvent(
        type="fsm"
    )


@pytest.mark.parametrize(
    "line", ["{not json", "[1, 2]", HEAD + '"type": "state", "neighbor": {"state": "up"} }']
)
def test_unreadable_events_raise(line: str) -> None:
    with pytest.raises(ValueError):
        codec.parse_event(line)


RIB_HEAD = (
    "neighbor 127.0.0.2 local-ip 127.0.0.1 local-as 65001 peer-as {peer_as} router-id 127.0.0.1 "
    "family-allowed in-open "
)


def rib_line(rest: str, *, peer_as: int = 65000) -> str:
    return RIB_HEAD.format(peer_as=peer_as) + rest


def test_parse_rib_out_full_line() -> None:
    line = rib_line(
        "ipv4 unicast 198.51.100.1/32 next-hop 192.0.2.1 origin igp as-path ( 65001 65001 ) med 10 "
        "local-preference 200 community [ 65000:1 65000:2 ] large-community 65000:0:7"
    )
    assert codec.parse_rib_out([line]) == {
        ip_address("127.0.0.2"): {
            ip_network("198.51.100.1/32"): RouteAttributes(
                next_hop=ip_address("192.0.2.1"),
                communities=("65000:1", "65000:2"),
                large_communities=("65000:0:7",),
                med=10,
                local_preference=200,
                as_path_prepend=1,
            )
        }
    }


def test_parse_rib_out_ipv6_plain_and_well_known_names() -> None:
    rib = codec.parse_rib_out(
        [
            rib_line("ipv6 unicast 2001:db8:1::1/128 next-hop 2001:db8::1 origin igp"),
            rib_line(
                "ipv4 unicast 198.51.100.20/32 next-hop 192.0.2.1 origin igp community [ 65000:1 no-export ]"
            ),
            "",
        ]
    )[ip_address("127.0.0.2")]
    assert rib[ip_network("2001:db8:1::1/128")] == RouteAttributes(next_hop=ip_address("2001:db8::1"))
    assert rib[ip_network("198.51.100.20/32")].communities == ("65000:1", "65535:65281")


@pytest.mark.parametrize(
    ("rest", "peer_as", "prepend"),
    [
        ("as-path ( 65001 65001 65001 )", 65001, 3),
        ("as-path ( 65001 )", 65000, 0),
        ("as-path ( 65001 64999 )", 65000, codec.FOREIGN_AS_PATH),
        ("as-path (  )", 65000, codec.FOREIGN_AS_PATH),
        ("as-path ( 65001 65001 ) extended-community [ target:65000:9 ]", 65000, codec.FOREIGN_AS_PATH),
    ],
    ids=["ibgp", "ebgp-plain", "foreign-as", "ebgp-empty", "foreign-attribute"],
)
def test_as_path_back_to_prepend(rest: str, peer_as: int, prepend: int) -> None:
    line = rib_line(f"ipv4 unicast 198.51.100.1/32 next-hop 192.0.2.1 origin igp {rest}", peer_as=peer_as)
    _, _, attributes = codec.parse_rib_line(line)
    assert attributes.as_path_prepend == prepend


def test_non_igp_origin_counts_as_foreign() -> None:
    _, _, attributes = codec.parse_rib_line(
        rib_line("ipv4 unicast 198.51.100.1/32 next-hop 192.0.2.1 origin egp")
    )
    assert attributes.as_path_prepend == codec.FOREIGN_AS_PATH


@pytest.mark.parametrize(
    "line",
    [
        "127.0.0.2 ipv4 unicast 198.51.100.1/32 next-hop 192.0.2.1",
        rib_line("ipv4 unicast 198.51.100.1/32 origin igp"),
        rib_line("ipv4 unicast 198.51.100.1/32 next-hop 192.0.2.1 community [ 1:1"),
        rib_line("ipv4 unicast 198.51.100.1/24 next-hop 192.0.2.1"),
    ],
    ids=["not-extensive", "no-next-hop", "unclosed", "host-bits"],
)
def test_bad_rib_lines_raise(line: str) -> None:
    with pytest.raises(ValueError):
        codec.parse_rib_line(line)


def test_canonical_is_what_the_parser_returns() -> None:
    attributes = RouteAttributes(
        next_hop=NH4, communities=("65000:020", "1:1"), large_communities=("3:2:1", "3:2:1", "1:2:3")
    )
    assert codec.canonical(attributes) == RouteAttributes(
        next_hop=NH4, communities=("1:1", "65000:20"), large_communities=("1:2:3", "3:2:1")
    )


NEIGHBOR_JSON = (
    '[{"state": "up", "duration": 4, "fsm": "ESTABLISHED", "local": {"address": "127.0.0.1", "as": 65001}, '
    '"peer": {"address": "127.0.0.2", "as": 65000}}, '
    '{"state": "down", "duration": 0, "fsm": "ACTIVE", "local": {}, "peer": {"address": "2001:db8::2"}}, '
    '{"state": "down", "fsm": "OPENCONFIRM", "peer": {"address": "127.0.0.3"}}]'
)


def test_parse_neighbors() -> None:
    assert codec.parse_neighbors([NEIGHBOR_JSON]) == {
        ip_address("127.0.0.2"): PeerState.ESTABLISHED,
        ip_address("2001:db8::2"): PeerState.IDLE,
        ip_address("127.0.0.3"): PeerState.CONNECTED,
    }
    with pytest.raises(ValueError):
        codec.parse_neighbors(["please specify summary, extensive or configuration"])
