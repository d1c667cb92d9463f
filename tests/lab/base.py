"""Shared pieces of the router runners: neighbor spec, route and peer records, polling, kernel routes."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from tests.lab.netns import LabError, Netns

T = TypeVar("T")


class RouterError(LabError):
    """A router did not start, did not become ready, or answered something we cannot parse."""


@dataclass(frozen=True)
class Neighbor:
    """One BGP neighbor of a router running in the lab.

    ``passive`` routers only accept the connection (the core router's role); active ones connect out
    (the speaker's role). ``local_address`` binds the session to one of the router's addresses.
    """

    address: str
    remote_as: int
    password: str | None = None
    hold_time: int = 9
    ipv4: bool = True
    ipv6: bool = True
    passive: bool = True
    local_address: str | None = None
    multihop: bool = False

    @property
    def ident(self) -> str:
        """A name usable as a BIRD protocol name: ``n_10_99_0_11``."""
        return "n_" + re.sub(r"[^0-9A-Za-z]", "_", self.address)

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class Route:
    """One path a router learned: prefix, next hop and the attributes tests compare."""

    prefix: str
    next_hop: str | None
    peer: str | None = None
    as_path: tuple[int, ...] = ()
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    origin: str | None = None
    best: bool = True


@dataclass(frozen=True)
class PeerState:
    """Session state of one neighbor. ``since`` changes whenever the session (re)establishes or drops."""

    address: str
    state: str
    established: bool
    since: str
    info: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def wait_for(
    predicate: Callable[[], T | Literal[False] | None],
    *,
    timeout: float,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    ``None`` and ``False`` mean "not yet", so ``lambda: cond and value`` returns ``value``.

    Raises :class:`TimeoutError` after ``timeout`` seconds; exceptions of the predicate propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def kernel_routes(
    ns: Netns, *, family: int = 4, proto: str | None = None, table: str = "main"
) -> dict[str, str]:
    """Routes of ``ns`` as ``{prefix: gateway}`` from ``ip -j route show``.

    Host routes appear with their length (``203.0.113.10/32``). A route without a gateway maps to
    ``"dev <ifname>"``; a multipath route maps to its gateways joined by ``,``.
    """
    argv = [f"-{family}", "route", "show", "table", table]
    if proto is not None:
        argv += ["proto", proto]
    result: dict[str, str] = {}
    for entry in ns.ip_json(*argv):
        dst = str(entry["dst"])
        if dst != "default" and "/" not in dst:
            dst = f"{dst}/{32 if family == 4 else 128}"
        if "gateway" in entry:
            result[dst] = str(entry["gateway"])
        elif "nexthops" in entry:
            result[dst] = ",".join(str(h.get("gateway", h.get("dev", ""))) for h in entry["nexthops"])
        else:
            result[dst] = f"dev {entry.get('dev', '')}"
    return result
