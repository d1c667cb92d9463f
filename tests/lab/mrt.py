"""A small MRT TABLE_DUMP_V2 writer (RFC 6396): enough for ``gobgp mrt inject global <file>``.

The file holds one PEER_INDEX_TABLE record followed by one RIB_IPV4_UNICAST / RIB_IPV6_UNICAST record
per prefix, each with a single RIB entry (peer index 0) carrying ORIGIN, AS_PATH (4-octet ASNs, as
section 4.3.4 requires), NEXT_HOP (IPv4) or MP_REACH_NLRI (IPv6), and optionally MED, COMMUNITIES and
LARGE_COMMUNITY.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

TABLE_DUMP_V2 = 13
PEER_INDEX_TABLE = 1
RIB_IPV4_UNICAST = 2
RIB_IPV6_UNICAST = 4

PEER_TYPE_IPV6 = 0x01
PEER_TYPE_AS4 = 0x02

ATTR_ORIGIN = 1
ATTR_AS_PATH = 2
ATTR_NEXT_HOP = 3
ATTR_MED = 4
ATTR_COMMUNITIES = 8
ATTR_MP_REACH_NLRI = 14
ATTR_LARGE_COMMUNITY = 32

FLAG_OPTIONAL = 0x80
FLAG_TRANSITIVE = 0x40
FLAG_EXTENDED = 0x10

AS_SEQUENCE = 2
ORIGINS = {"igp": 0, "egp": 1, "incomplete": 2}


@dataclass(frozen=True)
class MrtPeer:
    """The peer the RIB entries claim to come from (index 0 of the PEER_INDEX_TABLE)."""

    bgp_id: str
    address: str
    asn: int


@dataclass(frozen=True)
class MrtRoute:
    prefix: str
    next_hop: str
    as_path: tuple[int, ...] = ()
    origin: str = "igp"
    med: int | None = None
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()


def _attr(flags: int, code: int, value: bytes) -> bytes:
    if len(value) > 255:
        return struct.pack("!BBH", flags | FLAG_EXTENDED, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


def encode_attributes(route: MrtRoute, *, abbreviated_mp_reach: bool = False) -> bytes:
    nh = ipaddress.ip_address(route.next_hop)
    out = [_attr(FLAG_TRANSITIVE, ATTR_ORIGIN, bytes([ORIGINS[route.origin]]))]
    path = b""
    if route.as_path:
        path = struct.pack("!BB", AS_SEQUENCE, len(route.as_path)) + b"".join(
            struct.pack("!I", asn) for asn in route.as_path
        )
    out.append(_attr(FLAG_TRANSITIVE, ATTR_AS_PATH, path))
    if nh.version == 4:
        out.append(_attr(FLAG_TRANSITIVE, ATTR_NEXT_HOP, nh.packed))
    elif abbreviated_mp_reach:
        # RFC 6396 4.3.4: in RIB entries MP_REACH_NLRI holds only the next-hop length and address.
        out.append(_attr(FLAG_OPTIONAL, ATTR_MP_REACH_NLRI, bytes([len(nh.packed)]) + nh.packed))
    else:
        # GoBGP 3.x parses RIB entries with its UPDATE decoder, so it needs the full form: AFI, SAFI,
        # next hop, reserved octet and the NLRI itself (which is what its own dumper writes).
        net = ipaddress.ip_network(route.prefix)
        nlri = bytes([net.prefixlen]) + net.network_address.packed[: (net.prefixlen + 7) // 8]
        value = struct.pack("!HBB", 2, 1, len(nh.packed)) + nh.packed + b"\x00" + nlri
        out.append(_attr(FLAG_OPTIONAL, ATTR_MP_REACH_NLRI, value))
    if route.med is not None:
        out.append(_attr(FLAG_OPTIONAL, ATTR_MED, struct.pack("!I", route.med)))
    if route.communities:
        value = b"".join(struct.pack("!HH", *(int(x) for x in c.split(":"))) for c in route.communities)
        out.append(_attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_COMMUNITIES, value))
    if route.large_communities:
        value = b"".join(
            struct.pack("!III", *(int(x) for x in c.split(":"))) for c in route.large_communities
        )
        out.append(_attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_LARGE_COMMUNITY, value))
    return b"".join(out)


def _record(subtype: int, body: bytes, *, timestamp: int) -> bytes:
    return struct.pack("!IHHI", timestamp, TABLE_DUMP_V2, subtype, len(body)) + body


def peer_index_table(peer: MrtPeer, *, collector_id: str, view: str = "") -> bytes:
    addr = ipaddress.ip_address(peer.address)
    peer_type = PEER_TYPE_AS4 | (PEER_TYPE_IPV6 if addr.version == 6 else 0)
    name = view.encode()
    return (
        ipaddress.IPv4Address(collector_id).packed
        + struct.pack("!H", len(name))
        + name
        + struct.pack("!H", 1)
        + bytes([peer_type])
        + ipaddress.IPv4Address(peer.bgp_id).packed
        + addr.packed
        + struct.pack("!I", peer.asn)
    )


def rib_entry(
    seq: int, route: MrtRoute, *, timestamp: int, abbreviated_mp_reach: bool = False
) -> tuple[int, bytes]:
    net = ipaddress.ip_network(route.prefix)
    nbytes = (net.prefixlen + 7) // 8
    attrs = encode_attributes(route, abbreviated_mp_reach=abbreviated_mp_reach)
    body = (
        struct.pack("!IB", seq, net.prefixlen)
        + net.network_address.packed[:nbytes]
        + struct.pack("!H", 1)
        + struct.pack("!HIH", 0, timestamp, len(attrs))
        + attrs
    )
    return (RIB_IPV4_UNICAST if net.version == 4 else RIB_IPV6_UNICAST), body


def write_stream(
    out: BinaryIO,
    routes: Iterable[MrtRoute],
    *,
    peer: MrtPeer,
    timestamp: int | None = None,
    abbreviated_mp_reach: bool = False,
) -> int:
    """Write a TABLE_DUMP_V2 dump of ``routes`` to ``out``; returns the number of RIB records.

    IPv6 next hops use the full MP_REACH_NLRI encoding unless ``abbreviated_mp_reach`` (the RFC 6396
    form, which GoBGP 3.10 cannot read).
    """
    ts = int(time.time()) if timestamp is None else timestamp
    out.write(_record(PEER_INDEX_TABLE, peer_index_table(peer, collector_id=peer.bgp_id), timestamp=ts))
    count = 0
    for seq, route in enumerate(routes):
        subtype, body = rib_entry(seq, route, timestamp=ts, abbreviated_mp_reach=abbreviated_mp_reach)
        out.write(_record(subtype, body, timestamp=ts))
        count += 1
    return count


def write_file(
    path: Path,
    routes: Iterable[MrtRoute],
    *,
    peer: MrtPeer,
    timestamp: int | None = None,
    abbreviated_mp_reach: bool = False,
) -> int:
    with path.open("wb") as out:
        return write_stream(
            out, routes, peer=peer, timestamp=timestamp, abbreviated_mp_reach=abbreviated_mp_reach
        )


def host_routes(prefixes: Sequence[str], *, next_hop: str, **attrs: object) -> list[MrtRoute]:
    """One :class:`MrtRoute` per prefix, all with the same next hop and attributes."""
    return [MrtRoute(prefix=p, next_hop=next_hop, **attrs) for p in prefixes]  # type: ignore[arg-type]
