"""The ExaBGP 5.0.15 process-API line protocol, without I/O (in the manner of h11).

Pinned to ExaBGP 5.0.15 (JSON API version ``5.0.0``). Three parts:

- rendering: :func:`render_step` turns one :class:`Announce`/:class:`Withdraw` into command lines,
  refusing (``ValueError``, nothing sent) what ExaBGP would accept and then send malformed: an
  IPv6 prefix with an IPv4 next hop (it is acknowledged with ``done`` and then resets the
  session in a loop), families mixed in one command, non-ASCII or over-long lines;
- reading: :func:`classify` sorts each received line into ack, JSON event or ``show`` output, and
  :func:`parse_event` types the events we subscribe to;
- ``show`` parsers: :func:`parse_rib_out` reads ``show adj-rib out extensive`` back into
  :class:`RouteAttributes` (the inverse of the renderer for canonical attributes, see
  :func:`canonical`), :func:`parse_neighbors` reads ``show neighbor json``.

Verified against a real 5.0.15: ``withdraw attributes`` needs a next hop of the prefix's family
for IPv4 (without one it answers ``done`` and withdraws nothing), and a next hop of the other
family on an IPv6 withdrawal is put on the wire malformed. We always write ``0.0.0.0`` / ``::``
and one family per command. ExaBGP stores standard and large communities sorted (large ones
also de-duplicated), so the renderer writes them sorted and unique.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from bgp_speaker.core.model import (
    IPNetwork,
    PeerId,
    PeerState,
    RouteAttributes,
    Step,
    Withdraw,
)

#: ExaBGP kills a helper sending a line over 1 MiB; we stay far below.
MAX_LINE_LENGTH = 65536
#: What :func:`parse_rib_out` puts in ``as_path_prepend`` for a path we would never write, so
#: that it differs from every desired route and gets re-announced.
FOREIGN_AS_PATH = -1
_UINT32 = 4294967295
_WELL_KNOWN = {
    "no-export": "65535:65281",
    "no-advertise": "65535:65282",
    "no-export-subconfed": "65535:65283",
    "no-peer": "65535:65284",
    "blackhole": "65535:666",
}
_COMMUNITY = re.compile(r"^(\d{1,5}):(\d{1,5})$")
_LARGE = re.compile(r"^(\d{1,10}):(\d{1,10}):(\d{1,10})$")

# --- rendering ---------------------------------------------------------------------------------


def _community_key(value: str) -> tuple[int, ...]:
    match = _COMMUNITY.match(value)
    if not match or any(int(part) > 0xFFFF for part in match.groups()):
        raise ValueError(f"not a standard community: {value!r}")
    return tuple(int(part) for part in match.groups())


def _large_key(value: str) -> tuple[int, ...]:
    match = _LARGE.match(value)
    if not match or any(int(part) > _UINT32 for part in match.groups()):
        raise ValueError(f"not a large community: {value!r}")
    return tuple(int(part) for part in match.groups())


def canonical(attributes: RouteAttributes) -> RouteAttributes:
    """The form ExaBGP stores: communities sorted numerically and unique, numbers unpadded.

    Raises ValueError for a malformed community."""
    communities = sorted({_community_key(c) for c in attributes.communities})
    large = sorted({_large_key(c) for c in attributes.large_communities})
    return replace(
        attributes,
        communities=tuple(":".join(map(str, c)) for c in communities),
        large_communities=tuple(":".join(map(str, c)) for c in large),
    )


def _as_path(attributes: RouteAttributes, *, local_as: int, peer_as: int) -> str:
    prepend = attributes.as_path_prepend
    if prepend == 0:
        return ""  # ExaBGP writes [local-as] on eBGP and an empty path on iBGP itself
    if not 0 < prepend <= 64:
        raise ValueError(f"as-path prepend must be 0-64, got {prepend}")
    count = prepend + 1 if local_as != peer_as else prepend
    return " as-path [" + " ".join([str(local_as)] * count) + "]"


def _attributes(attributes: RouteAttributes, *, local_as: int, peer_as: int) -> str:
    attrs = canonical(attributes)
    text = f"next-hop {attrs.next_hop} origin igp"
    for keyword, number in (("med", attrs.med), ("local-preference", attrs.local_preference)):
        if number is not None:
            if not 0 <= number <= _UINT32:
                raise ValueError(f"{keyword} must be 0-{_UINT32}, got {number}")
            text += f" {keyword} {number}"
    if attrs.communities:
        text += " community [" + " ".join(attrs.communities) + "]"
    if attrs.large_communities:
        text += " large-community [" + " ".join(attrs.large_communities) + "]"
    return text + _as_path(attrs, local_as=local_as, peer_as=peer_as)


def _checked(line: str) -> str:
    if not line.isascii() or not line.isprintable():
        raise ValueError("command is not printable ASCII")
    if len(line) > MAX_LINE_LENGTH:
        raise ValueError(f"command of {len(line)} characters is over the {MAX_LINE_LENGTH} limit")
    return line


def by_family(prefixes: Iterable[IPNetwork]) -> list[tuple[IPNetwork, ...]]:
    """The prefixes cut into one group per family (IPv4 first), order kept within a family."""
    v4 = tuple(p for p in prefixes if p.version == 4)
    v6 = tuple(p for p in prefixes if p.version == 6)
    return [group for group in (v4, v6) if group]


def render_step(step: Step, *, local_as: int, peer_as: int) -> list[str]:
    """The command lines for one step, one family per line. Raises ValueError instead of
    producing anything ExaBGP would misread or send malformed."""
    target = f"neighbor {step.peer}"
    if isinstance(step, Withdraw):
        return [
            _checked(
                f"{target} withdraw attributes next-hop {'0.0.0.0' if group[0].version == 4 else '::'} "
                "nlri " + " ".join(map(str, group))
            )
            for group in by_family(step.prefixes)
        ]
    next_hop = step.attributes.next_hop
    wrong = [p for p in step.prefixes if p.version != next_hop.version]
    if wrong:
        raise ValueError(
            f"IPv{wrong[0].version} prefix {wrong[0]} with IPv{next_hop.version} next hop {next_hop}: "
            "refused, ExaBGP would send it malformed"
        )
    if next_hop.is_unspecified or next_hop.is_multicast:
        raise ValueError(f"next hop {next_hop} cannot be announced")
    if not step.prefixes:
        return []
    attributes = _attributes(step.attributes, local_as=local_as, peer_as=peer_as)
    return [_checked(f"{target} announce attributes {attributes} nlri " + " ".join(map(str, step.prefixes)))]


# --- reading -----------------------------------------------------------------------------------


class LineKind(enum.Enum):
    DONE = "done"
    ERROR = "error"
    EVENT = "event"
    TEXT = "text"


def classify(line: str) -> LineKind:
    """One received line (without its newline)."""
    if line == "done":
        return LineKind.DONE
    if line == "error":
        return LineKind.ERROR
    if line.startswith("{"):
        return LineKind.EVENT
    return LineKind.TEXT


@dataclass(frozen=True, slots=True)
class StateEvent:
    peer: PeerId
    #: ``connected`` (TCP only), ``up`` (Established) or ``down``.
    state: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    peer: PeerId
    code: int
    subcode: int
    message: str
    #: ``send`` or ``receive``.
    direction: str


@dataclass(frozen=True, slots=True)
class NegotiatedEvent:
    peer: PeerId
    hold_time: int | None
    families: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ShutdownEvent:
    """ExaBGP is stopping (global ``notification: shutdown``)."""


@dataclass(frozen=True, slots=True)
class OtherEvent:
    type: str


Event = StateEvent | NotificationEvent | NegotiatedEvent | ShutdownEvent | OtherEvent


def parse_event(line: str) -> Event:
    """A JSON event line. Raises ValueError when it is not one we can read."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("event is not a JSON object")
    kind = str(data.get("type", ""))
    if kind == "notification" and data.get("notification") == "shutdown":
        return ShutdownEvent()
    neighbor = data.get("neighbor")
    if not isinstance(neighbor, dict) or kind not in ("state", "notification", "negotiated"):
        return OtherEvent(type=kind)
    try:
        peer = ip_address(neighbor["address"]["peer"])
        if kind == "state":
            return StateEvent(peer=peer, state=str(neighbor["state"]), reason=str(neighbor.get("reason", "")))
        if kind == "notification":
            note = neighbor["notification"]
            return NotificationEvent(
                peer=peer,
                code=int(note["code"]),
                subcode=int(note["subcode"]),
                message=str(note.get("message", "")),
                direction=str(neighbor.get("direction", "")),
            )
        negotiated = neighbor["negotiated"]
        hold = negotiated.get("hold_time")
        families = negotiated.get("families", [])
        return NegotiatedEvent(
            peer=peer,
            hold_time=int(hold) if hold is not None else None,
            families=tuple(str(f) for f in families) if isinstance(families, list) else (),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed {kind} event: {exc!r}") from None


STATE_OF_EVENT = {"connected": PeerState.CONNECTED, "up": PeerState.ESTABLISHED, "down": PeerState.DOWN}

# --- show output -------------------------------------------------------------------------------

_RIB_LINE = re.compile(
    r"^neighbor (?P<peer>\S+) local-ip \S+ local-as (?P<local_as>\S+) peer-as (?P<peer_as>\S+) "
    r"router-id \S+ family-allowed \S+ (?P<afi>ipv4|ipv6) unicast (?P<prefix>\S+)(?P<rest>.*)$"
)


def _words(rest: str) -> dict[str, list[str]]:
    """``next-hop X origin igp as-path ( 1 2 ) community [ a b ] med 5`` -> keyword: values."""
    tokens = rest.split()
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(tokens):
        key = tokens[i]
        if i + 1 >= len(tokens):
            raise ValueError(f"attribute {key!r} without a value")
        if tokens[i + 1] in ("(", "["):
            close = ")" if tokens[i + 1] == "(" else "]"
            try:
                end = tokens.index(close, i + 2)
            except ValueError:
                raise ValueError(f"unclosed {tokens[i + 1]} after {key!r}") from None
            out[key] = tokens[i + 2 : end]
            i = end + 1
        else:
            out[key] = [tokens[i + 1]]
            i += 2
    return out


def _prepend_from_path(path: list[str] | None, *, local_as: int, peer_as: int) -> int:
    if path is None:
        return 0
    if not all(asn == str(local_as) for asn in path):
        return FOREIGN_AS_PATH
    if local_as != peer_as:
        return len(path) - 1 if path else FOREIGN_AS_PATH
    return len(path)


def parse_rib_line(line: str) -> tuple[PeerId, IPNetwork, RouteAttributes]:
    """One line of ``show adj-rib out extensive``. Raises ValueError."""
    match = _RIB_LINE.match(line)
    if not match:
        raise ValueError(f"not an adj-rib-out line: {line[:120]!r}")
    peer = ip_address(match["peer"])
    prefix = ip_network(match["prefix"])
    local_as, peer_as = int(match["local_as"]), int(match["peer_as"])
    words = _words(match["rest"])
    if "next-hop" not in words:
        raise ValueError(f"no next hop for {prefix}")
    foreign = set(words) - {
        "next-hop",
        "origin",
        "as-path",
        "med",
        "local-preference",
        "community",
        "large-community",
    }
    prepend = _prepend_from_path(words.get("as-path"), local_as=local_as, peer_as=peer_as)
    if foreign or words.get("origin", ["igp"]) != ["igp"]:
        prepend = FOREIGN_AS_PATH
    med = words.get("med")
    local_pref = words.get("local-preference")
    attributes = RouteAttributes(
        next_hop=ip_address(words["next-hop"][0]),
        communities=tuple(_WELL_KNOWN.get(c, c) for c in words.get("community", [])),
        large_communities=tuple(words.get("large-community", [])),
        med=int(med[0]) if med else None,
        local_preference=int(local_pref[0]) if local_pref else None,
        as_path_prepend=prepend,
    )
    return peer, prefix, attributes


def parse_rib_out(lines: Iterable[str]) -> dict[PeerId, dict[IPNetwork, RouteAttributes]]:
    """The output lines of ``show adj-rib out extensive`` (without the final ``done``)."""
    rib: dict[PeerId, dict[IPNetwork, RouteAttributes]] = {}
    for line in lines:
        if not line.strip():
            continue
        peer, prefix, attributes = parse_rib_line(line)
        rib.setdefault(peer, {})[prefix] = attributes
    return rib


_FSM_STATES: Mapping[str, PeerState] = {
    "ESTABLISHED": PeerState.ESTABLISHED,
    "OPENSENT": PeerState.CONNECTED,
    "OPENCONFIRM": PeerState.CONNECTED,
    "CONNECT": PeerState.IDLE,
    "ACTIVE": PeerState.IDLE,
    "IDLE": PeerState.IDLE,
}


def parse_neighbors(lines: Iterable[str]) -> dict[PeerId, PeerState]:
    """The output of ``show neighbor json``: the state of every configured neighbor."""
    states: dict[PeerId, PeerState] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            for entry in data:
                peer: IPv4Address | IPv6Address = ip_address(entry["peer"]["address"])
                states[peer] = _FSM_STATES.get(str(entry.get("fsm", "")).upper(), PeerState.UNKNOWN)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not `show neighbor json` output: {exc!r}") from None
    return states


def show_rib_out_command() -> str:
    return "show adj-rib out extensive"


def show_neighbors_command() -> str:
    return "show neighbor json"
