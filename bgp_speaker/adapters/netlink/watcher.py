"""The interconnect next hop, followed live from netlink (pyroute2's asyncio API).

Routes are announced with the gateway's interconnect address (``net1``) as next hop. The
:class:`InterconnectWatcher` picks that address and follows it:

- IPv4: the interface's primary address, i.e. not secondary, scope global.
- IPv6: a global address that is not deprecated, tentative, DAD-failed or temporary.
- Addresses inside an EIP pool are never next hops: Kube-OVN puts every EIP on net1 with
  its subnet's mask, so an EIP can be the primary address of its own subnet. Link-local
  and host-scope addresses never are either. When several addresses qualify, the one in
  use is kept while it stays usable; otherwise the first the kernel lists wins.
- An explicit override (``interconnect.next_hop_ipv4`` / ``next_hop_ipv6``) is used as
  it is; with both set, netlink is not used at all.

It subscribes to the link and address multicast groups (RTM_NEWLINK/DELLINK,
RTM_NEWADDR/DELADDR) before dumping the interface, keeps the view up to date from the
events, and pulls the trigger only when a chosen next hop changes. If the socket fails or
overflows it reopens it with back-off and dumps again.

Degradation is reported, never acted on blindly: when the address disappears, the link
goes down or the interface is deleted, the LAST KNOWN next hop stays in use (nothing is
withdrawn or re-announced; if the link is really dead the peer drops the session anyway)
and :meth:`InterconnectWatcher.status` shows ``stale`` with the reason and since when,
along with the link state and every address seen. An interface that does not exist yet
(the pod's net1 can appear late) is waited for, and reported as such.

The watcher reads the network namespace it runs in (the gateway pod's, in production);
``netns`` names another one, which tests use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from bgp_speaker.adapters.netlink.rtnl import (
    RT_SCOPE_UNIVERSE,
    UNUSABLE,
    Address,
    Event,
    Link,
    Rtnl,
    in_pools,
)
from bgp_speaker.aiokit import Backoff, Trigger
from bgp_speaker.core.model import Family, IPAddress, IPNetwork, NextHops
from bgp_speaker.errors import NetlinkError

logger = logging.getLogger(__name__)

_EVENT_RCVBUF = 8 * 1024 * 1024  # an EIP storm on net1 must not overflow the socket


# --- choosing the next hop ------------------------------------------------------------


def _usable(address: Address, *, pools: Sequence[IPNetwork]) -> bool:
    return (
        address.scope == RT_SCOPE_UNIVERSE
        and not address.flags & UNUSABLE
        and not address.address.is_link_local
        and not address.address.is_loopback
        and not in_pools(address.address, pools)
    )


def choose(
    addresses: Iterable[Address], *, family: Family, pools: Sequence[IPNetwork], keep: IPAddress | None
) -> IPAddress | None:
    """The next hop for ``family`` among ``addresses`` (kernel order): ``keep`` if it is
    still usable, else the first usable one."""
    version = 4 if family is Family.IPV4 else 6
    usable = [a.address for a in addresses if a.address.version == version and _usable(a, pools=pools)]
    if keep is not None and keep in usable:
        return keep
    return usable[0] if usable else None


async def first_ipv4(
    interface: str, *, exclude: Sequence[IPNetwork], netns: str | None = None
) -> IPv4Address | None:
    """The address the watcher would pick as IPv4 next hop now (the default router-id);
    None if the interface is missing or has no usable IPv4 address."""
    async with Rtnl(netns=netns) as rtnl:
        link = await rtnl.link(interface)
        if link is None:
            return None
        chosen = choose(await rtnl.addresses(link.index), family=Family.IPV4, pools=exclude, keep=None)
    return chosen if isinstance(chosen, IPv4Address) else None


# --- the watcher -------------------------------------------------------------------


@dataclass(slots=True)
class _Hold:
    """One family's next hop: the value in use and whether the interface still backs it."""

    value: IPAddress | None = None
    override: bool = False
    stale_since: float | None = None
    reason: str | None = None


class InterconnectWatcher:
    """A :class:`~bgp_speaker.ports.NextHopSource` following the interconnect interface."""

    def __init__(
        self,
        interface: str = "net1",
        *,
        pools: Sequence[IPNetwork],
        override_ipv4: IPv4Address | None = None,
        override_ipv6: IPv6Address | None = None,
        netns: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interface = interface
        self.pools = tuple(pools)
        self._netns = netns
        self._clock = clock
        self._holds = {
            Family.IPV4: _Hold(value=override_ipv4, override=override_ipv4 is not None),
            Family.IPV6: _Hold(value=override_ipv6, override=override_ipv6 is not None),
        }
        self._link: Link | None = None
        self._addresses: dict[tuple[IPAddress, int], Address] = {}
        self._seen_link = False
        self._waiting_since: float | None = None
        self._error: str | None = None
        self._changes = 0
        self._state = "starting"

    # --- NextHopSource ---------------------------------------------------------------

    def current(self) -> NextHops:
        v4, v6 = self._holds[Family.IPV4].value, self._holds[Family.IPV6].value
        return NextHops(
            ipv4=v4 if isinstance(v4, IPv4Address) else None,
            ipv6=v6 if isinstance(v6, IPv6Address) else None,
        )

    def status(self) -> Mapping[str, object]:
        link = self._link
        families: dict[str, object] = {}
        stale_since: list[float] = []
        reasons: list[str] = []
        for family, hold in self._holds.items():
            families[family.value] = {
                "next_hop": None if hold.value is None else str(hold.value),
                "source": "override" if hold.override else "interface",
                "stale": hold.stale_since is not None,
                "stale_since": hold.stale_since,
                "reason": hold.reason,
            }
            if hold.stale_since is not None:
                stale_since.append(hold.stale_since)
            if hold.reason:
                reasons.append(f"{family.value}: {hold.reason}")
        return {
            "interface": self.interface,
            "state": self._state,
            "link": {
                "present": link is not None,
                "index": None if link is None else link.index,
                "up": link is not None and link.up,
                "operstate": "absent" if link is None else link.operstate,
            },
            "addresses": [" ".join([str(a), *a.tags(pools=self.pools)]) for a in self._addresses.values()],
            "next_hops": families,
            "stale": bool(stale_since),
            "stale_since": min(stale_since) if stale_since else None,
            "reason": "; ".join(reasons) or None,
            "waiting_since": self._waiting_since,
            "last_error": self._error,
            "changes": self._changes,
        }

    async def run(self, *, trigger: Trigger) -> None:
        """Follow the interface forever; reconnect with back-off on netlink errors."""
        if all(hold.override for hold in self._holds.values()):
            self._state = "override"
            logger.info("next hops are explicit overrides; not following the interface")
            await asyncio.Event().wait()
        backoff = Backoff(initial=0.2, maximum=10.0)
        while True:
            try:
                async with Rtnl(netns=self._netns, rcvbuf=_EVENT_RCVBUF) as rtnl:
                    await rtnl.subscribe()  # before the dump: no change can slip between
                    await self._resync(rtnl)
                    self._error = None
                    backoff.reset()
                    self._publish(trigger)
                    while True:
                        if self._apply(await rtnl.events()):
                            await self._resync(rtnl)
                        self._publish(trigger)
            except NetlinkError as exc:
                self._error = str(exc)
                self._state = "reconnecting"
                logger.warning(
                    "netlink failed; keeping the last known next hops",
                    extra={"interface": self.interface, "reason": str(exc)},
                )
            await asyncio.sleep(backoff.next_delay())

    # --- internals -------------------------------------------------------------------

    async def _resync(self, rtnl: Rtnl) -> None:
        self._link = await rtnl.link(self.interface)
        self._addresses = {}
        if self._link is not None:
            for address in await rtnl.addresses(self._link.index):
                self._addresses[(address.address, address.prefixlen)] = address

    def _apply(self, events: Iterable[Event]) -> bool:
        """Fold events into the view. True when the interface (re)appeared: dump again."""
        resync = False
        for event in events:
            subject, ours = event.subject, self._link
            if isinstance(subject, Link):
                if subject.name == self.interface and not event.removed:
                    resync |= ours is None or ours.index != subject.index
                    self._link = subject
                elif ours is not None and subject.index == ours.index:
                    # Deleted, or renamed away: either way the interface is gone.
                    self._link = None
                    self._addresses = {}
            elif ours is not None and subject.index == ours.index:
                key = (subject.address, subject.prefixlen)
                if event.removed:
                    self._addresses.pop(key, None)
                else:
                    self._addresses[key] = subject
        return resync

    def _publish(self, trigger: Trigger) -> None:
        """Choose, update holds and state; pull the trigger if a next hop changed."""
        now = self._clock()
        link = self._link
        if link is None:
            self._state = "waiting" if not self._seen_link else "interface-gone"
            self._waiting_since = self._waiting_since or now
        else:
            self._seen_link = True
            self._waiting_since = None
            self._state = "following" if link.up else "link-down"
        before = self.current()
        for family, hold in self._holds.items():
            if hold.override:
                continue
            live = choose(self._addresses.values(), family=family, pools=self.pools, keep=hold.value)
            problem = self._problem(family, live=live, held=hold.value)
            if live is not None:
                hold.value = live
            extra = {"interface": self.interface, "family": family.value, "next_hop": str(hold.value)}
            if problem is None or hold.value is None:
                if hold.stale_since is not None:
                    logger.info("next hop confirmed again", extra=extra)
                hold.stale_since = None
                hold.reason = problem  # informative only when there is nothing to hold
            elif hold.stale_since is None or hold.reason != problem:
                hold.stale_since = hold.stale_since or now
                hold.reason = problem
                logger.warning(
                    "next hop not confirmed; keeping the last known one", extra=extra | {"reason": problem}
                )
        after = self.current()
        if after != before:
            self._changes += 1
            logger.info(
                "next hop changed",
                extra={"interface": self.interface, "before": str(before), "after": str(after)},
            )
            trigger.pull("next-hop")

    def _problem(self, family: Family, *, live: IPAddress | None, held: IPAddress | None) -> str | None:
        if self._link is None:
            return f"interface {self.interface} " + ("is gone" if self._seen_link else "does not exist yet")
        if not self._link.up:
            return f"link {self.interface} is down (operstate {self._link.operstate})"
        if live is None:
            if held is not None:
                return f"{held} is no longer a usable address of {self.interface}"
            return f"no usable {family.value} address on {self.interface} (global, primary, not an EIP)"
        return None
