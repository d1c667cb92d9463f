"""A typed rtnetlink client: the few link and address operations we need, over pyroute2.

pyroute2's asyncio API speaks in untyped messages and kwargs; this module turns them into frozen
values (:class:`Link`, :class:`Address`, :class:`Event`) and its exceptions into
:class:`bgp_speaker.errors.NetlinkError`. :class:`Rtnl` opens one ``AsyncIPRoute`` socket (in
this process's network namespace, or in a named one), reads a link and its addresses, and
follows the link and address multicast groups. Nothing here decides anything: choosing the
next hop is :mod:`bgp_speaker.adapters.netlink.watcher`'s job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK

from bgp_speaker.core.model import IPAddress, IPNetwork
from bgp_speaker.errors import NetlinkError

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
#: Address flags that disqualify a next hop (0x01 is IFA_F_SECONDARY, and for IPv6 the
#: same bit is IFA_F_TEMPORARY: privacy addresses are no next hops either).
UNUSABLE_FLAGS = {0x01: "secondary", 0x08: "dadfailed", 0x20: "deprecated", 0x40: "tentative"}
UNUSABLE = sum(UNUSABLE_FLAGS)
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
ENODEV = 19
_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR


# --- typed values and their translation from pyroute2 messages -------------------------


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    flags: int
    operstate: str

    @property
    def up(self) -> bool:
        """Administratively up with carrier."""
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)


@dataclass(frozen=True, slots=True)
class Address:
    index: int
    address: IPAddress
    prefixlen: int
    flags: int
    scope: int

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    def tags(self, *, pools: Sequence[IPNetwork]) -> list[str]:
        tags = [name for bit, name in UNUSABLE_FLAGS.items() if self.flags & bit]
        if self.scope != RT_SCOPE_UNIVERSE:
            tags.append("link" if self.scope == RT_SCOPE_LINK else f"scope-{self.scope}")
        if in_pools(self.address, pools):
            tags.append("eip-pool")
        return tags


def in_pools(address: IPAddress, pools: Sequence[IPNetwork]) -> bool:
    return any(address.version == pool.version and address in pool for pool in pools)


def _link_from(msg: Any) -> Link:
    return Link(
        index=int(msg["index"]),
        name=str(msg.get("ifname") or ""),
        flags=int(msg["flags"]),
        operstate=str(msg.get("state") or "unknown"),
    )


def _address_from(msg: Any) -> Address | None:
    # IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS otherwise.
    text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    if not text:
        return None
    flags = msg.get_attr("IFA_FLAGS")  # 32 bits; the header field has only 8
    return Address(
        index=int(msg["index"]),
        address=ip_address(str(text).split("%")[0]),
        prefixlen=int(msg["prefixlen"]),
        flags=int(flags if flags is not None else msg["flags"]),
        scope=int(msg["scope"]),
    )


@dataclass(frozen=True, slots=True)
class Event:
    """One RTM_NEW*/RTM_DEL* notification about a link or an address."""

    subject: Link | Address
    removed: bool


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    """pyroute2's and the socket's exceptions become our :class:`NetlinkError`."""
    try:
        yield
    except PyrouteNetlinkError as exc:
        raise NetlinkError(f"{doing}: netlink error {exc.code}: {exc}") from exc
    except OSError as exc:
        raise NetlinkError(f"{doing}: {exc}") from exc


class Rtnl:
    """The few rtnetlink operations we need, typed, over one ``AsyncIPRoute`` socket."""

    def __init__(self, *, netns: str | None = None, rcvbuf: int = 1024 * 1024) -> None:
        self._netns = netns
        self._rcvbuf = rcvbuf
        self._ipr: Any = None

    async def __aenter__(self) -> Rtnl:
        with _translated(f"open a netlink socket (netns {self._netns or 'of this process'})"):
            # flags=0: open an existing namespace only, never create one.
            self._ipr = AsyncIPRoute(netns=self._netns, rcvbuf=self._rcvbuf, flags=0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def subscribe(self) -> None:
        """Join the link and address multicast groups; then read them with :meth:`events`."""
        with _translated("subscribe to link/address events"):
            await self._ipr.bind(groups=_GROUPS)

    async def link(self, name: str) -> Link | None:
        try:
            with _translated(f"get link {name}"):
                messages = await self._ipr.link("get", ifname=name)
        except NetlinkError as exc:
            if isinstance(exc.__cause__, PyrouteNetlinkError) and exc.__cause__.code == ENODEV:
                return None
            raise
        return next((_link_from(msg) for msg in messages), None)

    async def addresses(self, index: int) -> list[Address]:
        with _translated(f"dump the addresses of link {index}"):
            found = [_address_from(msg) async for msg in await self._ipr.addr("dump", index=index)]
        return [a for a in found if a is not None]

    async def events(self) -> list[Event]:
        """Wait for the next datagram of link/address notifications."""
        batch: list[Event] = []
        with _translated("read link/address events"):
            async for msg in self._ipr.get():
                kind = msg.get("event")
                if kind in ("RTM_NEWLINK", "RTM_DELLINK"):
                    batch.append(Event(_link_from(msg), removed=kind == "RTM_DELLINK"))
                elif kind in ("RTM_NEWADDR", "RTM_DELADDR") and (address := _address_from(msg)):
                    batch.append(Event(address, removed=kind == "RTM_DELADDR"))
        return batch
