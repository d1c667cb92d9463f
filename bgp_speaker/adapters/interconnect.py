"""Interconnect routing inside the gateway's network namespace (``interconnect.manage_routes``).

Kube-OVN adds every EIP to net1 with its pool's prefix length (``ip addr replace EIP/24 dev net1``),
so the kernel adds an on-link route for the whole pool on net1. In the routed (interconnect)
architecture that route is wrong: traffic from this gateway to another gateway's EIP in the same
pool is sent straight onto the interconnect segment by ARP instead of through the core router,
which knows (from BGP) which gateway owns which EIP. This manager keeps the namespace right:

(a) it deletes the kernel's on-link (``proto kernel scope link``) routes on net1 whose destination
    overlaps an EIP pool. The EIP addresses themselves stay (they live in the ``local`` table, which
    we never touch), so the NAT rules keep working. Routes covering the interconnect gateway or a
    protected address (the BGP peers) are never deleted;
(b) it keeps a default route via the interconnect gateway ``onlink`` on net1, unless one via the
    same gateway and interface already exists (Kube-OVN's ``eip-add`` writes the same route). Ours
    carries our route protocol number and is written with ``replace``;
(c) it sets ``arp_ignore=2``, ``arp_announce=2`` and ``arp_filter=1`` on net1, so the gateway never
    answers ARP for an EIP (``arp_ignore=1`` would not do: the EIPs are configured on net1) and
    never uses an EIP as the sender address of its own ARP requests;
(d) it re-checks on every netlink link/address/route event and periodically.

Only routes with our protocol number are ever deleted besides the on-link pool routes of (a).
Every change is logged; config/dataplane.md documents each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, ip_network
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_LINK

from bgp_speaker.errors import NetlinkError

logger = logging.getLogger(__name__)

#: Our route protocol number (``ip route ... proto 201``); unassigned in iproute2's rt_protos.
ROUTE_PROTOCOL = 201
RTPROT_KERNEL = 2
RT_SCOPE_LINK = 253
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
AF_INET = 2
IFF_UP = 1
#: sysctl -> value we keep on the interconnect interface (net.ipv4.conf.<if>.<name>).
ARP_SYSCTLS: Mapping[str, str] = {"arp_ignore": "2", "arp_announce": "2", "arp_filter": "1"}
TOLERATED = {errno.EEXIST, errno.ENOENT, errno.ESRCH}
EVENT_COALESCE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class InterconnectStatus:
    interface: str
    gateway: str
    #: None until the first pass.
    present: bool | None = None
    up: bool = False
    addresses: tuple[str, ...] = ()
    #: ``ours``, ``existing`` (already via the gateway: Kube-OVN's), or None when missing.
    default_route: str | None = None
    sysctls: Mapping[str, str] = field(default_factory=dict)
    removed_total: int = 0
    last_removed: tuple[str, ...] = ()
    passes: int = 0
    checked_at: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "interface": self.interface,
            "gateway": self.gateway,
            "present": self.present,
            "up": self.up,
            "addresses": list(self.addresses),
            "default_route": self.default_route,
            "sysctls": dict(self.sysctls),
            "removed_total": self.removed_total,
            "last_removed": list(self.last_removed),
            "passes": self.passes,
            "checked_at": self.checked_at,
            "error": self.error,
        }


def _translate(exc: PyrouteNetlinkError, what: str) -> NetlinkError:
    return NetlinkError(f"{what}: {exc.args[1] if len(exc.args) > 1 else exc} (errno {exc.code})")


async def _route(ipr: Any, op: str, **spec: Any) -> None:
    """One idempotent route write: EEXIST on add/replace and ENOENT/ESRCH on delete are success."""
    try:
        await ipr.route(op, **spec)
    except PyrouteNetlinkError as exc:
        if exc.code not in TOLERATED:
            raise


class InterconnectRouting:
    """Keeps net1's routes and ARP settings right for the routed interconnect architecture."""

    def __init__(
        self,
        *,
        interface: str,
        gateway: IPv4Address,
        pools: Sequence[str | IPv4Network],
        protect: Sequence[IPv4Address] = (),
        route_protocol: int = ROUTE_PROTOCOL,
        sysctl_dir: Path = Path("/proc/sys/net/ipv4/conf"),
        recheck_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ifname = interface
        self._gateway = gateway
        self._pools = tuple(n for n in (ip_network(p) for p in pools) if isinstance(n, IPv4Network))
        self._protect = (gateway, *protect)
        self._proto = route_protocol
        self._sysctl_dir = sysctl_dir
        self._recheck = recheck_seconds
        self._clock = clock
        self._status = InterconnectStatus(interface=interface, gateway=str(gateway))

    def status(self) -> InterconnectStatus:
        return self._status

    # --- one pass ---------------------------------------------------------------------------

    async def reconcile(self) -> InterconnectStatus:
        """One idempotent pass; raises :class:`NetlinkError` (also recorded in the status)."""
        try:
            async with AsyncIPRoute() as ipr:
                status = await self._pass(ipr)
        except PyrouteNetlinkError as exc:
            error = _translate(exc, f"interconnect routing on {self._ifname}")
            self._status = replace(self._status, error=str(error), checked_at=self._clock())
            raise error from None
        except NetlinkError as exc:
            self._status = replace(self._status, error=str(exc), checked_at=self._clock())
            raise
        self._status = status
        return status

    async def _pass(self, ipr: Any) -> InterconnectStatus:
        status = replace(self._status, passes=self._status.passes + 1, checked_at=self._clock(), error=None)
        links = [link async for link in await ipr.link("dump") if link.get("ifname") == self._ifname]
        if not links:
            return replace(status, present=False, up=False, addresses=(), default_route=None)
        link = links[0]
        index = int(link["index"])
        addresses: list[str] = [
            f"{a.get('address')}/{a['prefixlen']}"
            async for a in await ipr.addr("dump", family=AF_INET)
            if a["index"] == index
        ]
        sysctls = self._ensure_sysctls()
        routes = [r async for r in await ipr.route("dump", family=AF_INET, table=RT_TABLE_MAIN)]
        removed = [await self._delete(ipr, r) for r in routes if self._is_pool_onlink(r, index)]
        default = await self._ensure_default(ipr, routes, index)
        return replace(
            status,
            present=True,
            up=bool(link["flags"] & IFF_UP),
            addresses=tuple(addresses),
            default_route=default,
            sysctls=sysctls,
            removed_total=status.removed_total + len(removed),
            last_removed=tuple(removed) or status.last_removed,
        )

    def _ensure_sysctls(self) -> dict[str, str]:
        found: dict[str, str] = {}
        base = self._sysctl_dir / self._ifname
        for name, value in ARP_SYSCTLS.items():
            path = base / name
            try:
                current = path.read_text(encoding="ascii").strip()
                if current != value:
                    path.write_text(value + "\n", encoding="ascii")
                    logger.info(
                        "set interconnect ARP sysctl",
                        extra={"op": "sysctl", "key": f"net.ipv4.conf.{self._ifname}.{name}",
                               "value": value, "previous": current},
                    )  # fmt: skip
                    current = value
            except OSError as exc:
                raise NetlinkError(f"cannot set net.ipv4.conf.{self._ifname}.{name}={value}: {exc}") from None
            found[name] = current
        return found

    def _is_pool_onlink(self, route: Any, index: int) -> bool:
        if route.get("oif") != index or route["proto"] != RTPROT_KERNEL or route["scope"] != RT_SCOPE_LINK:
            return False
        if route["type"] != RTN_UNICAST or route["dst_len"] == 0 or route.get("dst") is None:
            return False
        network = IPv4Network(f"{route.get('dst')}/{route['dst_len']}", strict=False)
        if not any(network.overlaps(pool) for pool in self._pools):
            return False
        # Never cut this gateway off from the core router or a BGP peer.
        return not any(address in network for address in self._protect)

    async def _delete(self, ipr: Any, route: Any) -> str:
        prefix = f"{route.get('dst')}/{route['dst_len']}"
        await _route(
            ipr,
            "del",
            dst=route.get("dst"),
            dst_len=route["dst_len"],
            oif=route.get("oif"),
            proto=RTPROT_KERNEL,
            scope=RT_SCOPE_LINK,
            table=RT_TABLE_MAIN,
        )
        logger.info(
            "removed on-link EIP pool route from the interconnect interface",
            extra={"op": "route-del", "prefix": prefix, "interface": self._ifname,
                   "reason": "EIPs of other gateways must be reached through the core router"},
        )  # fmt: skip
        return prefix

    async def _ensure_default(self, ipr: Any, routes: list[Any], index: int) -> str:
        defaults = [r for r in routes if r["dst_len"] == 0 and r["type"] == RTN_UNICAST]
        for route in defaults:
            if route.get("oif") == index and route.get("gateway") == str(self._gateway):
                # Kube-OVN's own ``default via GATEWAY dev net1`` (or ours from an earlier run).
                await self._delete_stale_own(ipr, routes, keep=route)
                return "ours" if route["proto"] == self._proto else "existing"
        await self._replace_default(ipr, index)
        return "ours"

    async def _replace_default(self, ipr: Any, index: int) -> None:
        await _route(
            ipr,
            "replace",
            dst="0.0.0.0/0",
            gateway=str(self._gateway),
            oif=index,
            flags=RTNH_F_ONLINK,
            proto=self._proto,
            table=RT_TABLE_MAIN,
        )
        logger.info(
            "set default route via the interconnect gateway",
            extra={"op": "route-replace", "prefix": "0.0.0.0/0", "gateway": str(self._gateway),
                   "interface": self._ifname, "proto": self._proto},
        )  # fmt: skip

    async def _delete_stale_own(self, ipr: Any, routes: list[Any], *, keep: Any) -> None:
        """Our routes other than the one in use (e.g. via a previous gateway address)."""
        for route in routes:
            if route["proto"] != self._proto or route is keep:
                continue
            await _route(
                ipr,
                "del",
                dst=route.get("dst") or "0.0.0.0",
                dst_len=route["dst_len"],
                gateway=route.get("gateway"),
                oif=route.get("oif"),
                proto=self._proto,
                table=RT_TABLE_MAIN,
            )
            logger.info(
                "removed a stale route of ours", extra={"op": "route-del", "gateway": route.get("gateway")}
            )

    # --- following ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile now, on every link/address/route event, and every ``recheck_seconds``."""
        wake = asyncio.Event()
        events = AsyncIPRoute()
        try:
            await events.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE)
        except PyrouteNetlinkError as exc:
            events.close()
            raise _translate(exc, "cannot subscribe to netlink events") from None
        reader = asyncio.create_task(self._events(events, wake), name="interconnect-events")
        last_error: str | None = None
        try:
            while True:
                try:
                    await self.reconcile()
                except NetlinkError as exc:
                    if str(exc) != last_error:  # once per distinct failure, not every pass
                        logger.warning("interconnect routing pass failed", extra={"reason": str(exc)})
                    last_error = str(exc)
                else:
                    if last_error is not None:
                        logger.info("interconnect routing recovered", extra={"interface": self._ifname})
                    last_error = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._recheck)
                await asyncio.sleep(EVENT_COALESCE_SECONDS)
                wake.clear()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            events.close()

    async def _events(self, events: Any, wake: asyncio.Event) -> None:
        async for _msg in events.get():
            wake.set()
