"""Frozen value types shared by the whole speaker.

Everything here is plain data: no I/O, no logging, no clocks. Adapters turn the outside
world into these values; the pure functions in ``desired`` and ``plan`` compute on them.

Vocabulary:

- a *candidate* is an address some source would like announced (an EIP), with optional
  per-address attribute overrides;
- a *route* is a prefix (/32 or /128) plus the attributes it is announced with;
- a *RIB* (``RibOut``) is what one peer is told: prefix -> attributes;
- a *refusal* is a candidate we will not announce, with the reason as data.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Peers are keyed by their address: ExaBGP addresses neighbors the same way.
PeerId = IPAddress

#: RFC 8326 GRACEFUL_SHUTDOWN well-known community.
GRACEFUL_SHUTDOWN = "65535:0"


class Family(enum.StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


def family_of(value: IPAddress | IPNetwork) -> Family:
    return Family.IPV4 if value.version == 4 else Family.IPV6


@functools.lru_cache(maxsize=1 << 18)
def host_prefix(address: IPAddress) -> IPNetwork:
    """The /32 or /128 that announces exactly one address.

    Cached: every reconcile pass maps every candidate, and ``ip_network`` costs ~3 us a call
    (a third of a pass's CPU at 10k EIPs). Both types are immutable values, so sharing is safe.
    """
    return ip_network(address)


def _community_sort_key(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(":"))
    except ValueError:
        return (1 << 40,)  # malformed text sorts last; validation rejects it earlier


def canonical_communities(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Communities are a set: unique, numerically sorted, numbers unpadded (as routers store them)."""
    unique = {
        ":".join(str(int(p)) for p in v.split(":")) if v.replace(":", "").isdigit() else v for v in values
    }
    return tuple(sorted(unique, key=_community_sort_key))


@dataclass(frozen=True, slots=True)
class RouteAttributes:
    """What a prefix is announced with. Equality is what drift detection compares."""

    next_hop: IPAddress
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    med: int | None = None
    local_preference: int | None = None
    #: How many extra times our AS is put in front of the AS path.
    as_path_prepend: int = 0

    def with_community(self, community: str) -> RouteAttributes:
        if community in self.communities:
            return self
        return RouteAttributes(
            next_hop=self.next_hop,
            communities=canonical_communities((*self.communities, community)),
            large_communities=self.large_communities,
            med=self.med,
            local_preference=self.local_preference,
            as_path_prepend=self.as_path_prepend,
        )


RibOut = Mapping[IPNetwork, RouteAttributes]


@dataclass(frozen=True, slots=True)
class AttributeOverrides:
    """Per-address attribute choices. ``None`` means "use the configured default"."""

    communities: tuple[str, ...] | None = None
    large_communities: tuple[str, ...] | None = None
    med: int | None = None
    local_preference: int | None = None
    as_path_prepend: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """An address a source wants announced."""

    address: IPAddress
    #: Where it came from, for status and logs: ``file:eips.yaml[3]``, ``iptables-eip/eip-a``.
    origin: str
    overrides: AttributeOverrides = field(default_factory=AttributeOverrides)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A candidate (or a whole source entry) we will not announce, and why."""

    #: The address as text; may be unparsable (that can be the reason).
    address: str
    origin: str
    reason: str
    #: Set when the refusal concerns one peer only (prefix cap, family not enabled).
    peer: PeerId | None = None


@dataclass(frozen=True, slots=True)
class NextHops:
    """The next hop per family: the interconnect addresses, or explicit overrides."""

    ipv4: IPv4Address | None = None
    ipv6: IPv6Address | None = None

    def for_family(self, family: Family) -> IPAddress | None:
        return self.ipv4 if family is Family.IPV4 else self.ipv6


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Per-peer announce policy (the session parameters live in the speaker config)."""

    peer: PeerId
    local_as: int
    peer_as: int
    families: frozenset[Family] = frozenset({Family.IPV4, Family.IPV6})
    #: Outbound prefix cap; ``None`` means unlimited.
    max_prefixes: int | None = None

    @property
    def is_ebgp(self) -> bool:
        return self.local_as != self.peer_as


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Everything the pure selection needs besides the candidates and the next hops."""

    peers: tuple[PeerPolicy, ...]
    #: Allow-list: an address outside every pool is refused. Empty means nothing is allowed.
    pools: tuple[IPNetwork, ...]
    defaults: AttributeOverrides = field(default_factory=AttributeOverrides)


@dataclass(frozen=True, slots=True)
class DesiredState:
    routes: Mapping[PeerId, RibOut]
    refusals: tuple[Refusal, ...] = ()


@dataclass(frozen=True, slots=True)
class Announce:
    """Announce ``prefixes`` to ``peer``, all with the same ``attributes``."""

    peer: PeerId
    attributes: RouteAttributes
    prefixes: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class Withdraw:
    peer: PeerId
    prefixes: tuple[IPNetwork, ...]


Step = Announce | Withdraw


@dataclass(frozen=True, slots=True)
class Plan:
    """Ordered steps: every withdrawal of a peer comes before its announcements."""

    steps: tuple[Step, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.steps

    def count(self) -> tuple[int, int]:
        """(prefixes announced, prefixes withdrawn)."""
        announced = sum(len(s.prefixes) for s in self.steps if isinstance(s, Announce))
        withdrawn = sum(len(s.prefixes) for s in self.steps if isinstance(s, Withdraw))
        return announced, withdrawn


class PeerState(enum.StrEnum):
    """BGP session state as far as the speaker can tell."""

    UNKNOWN = "unknown"
    IDLE = "idle"
    CONNECTED = "connected"  # TCP up, OPEN not yet accepted
    ESTABLISHED = "established"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class PeerStatus:
    peer: PeerId
    state: PeerState = PeerState.UNKNOWN
    #: Monotonic-free wall-clock seconds (time.time()) of the last state change.
    since: float | None = None
    last_error: str | None = None
    flaps: int = 0
