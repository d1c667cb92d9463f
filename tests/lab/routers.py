"""Real routers for the lab: BIRD 2, FRR 8.4 and GoBGP 3.10, plus the shared helpers.

One import gives everything a test, the demo or a benchmark needs::

    from tests.lab import routers
    core = routers.Bird(ns, router_id="10.99.0.1", local_as=65000,
                        neighbors=[routers.Neighbor("10.99.0.11", 65001)]).start()
    core.wait_established("10.99.0.11", timeout=30)
    routers.wait_for(lambda: "203.0.113.10/32" in core.kernel_routes(), timeout=30)

Every runner has ``start()`` (renders the config, starts the daemon and waits until it answers),
``stop()``, ``peer_state(address)``, ``wait_established(address, timeout=...)`` and ``routes(...)``.
BIRD and FRR also have ``kernel_routes()``; GoBGP installs nothing in the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tests.lab.base import Neighbor, PeerState, Route, RouterError, kernel_routes, wait_for
from tests.lab.bird import Bird
from tests.lab.frr import Frr
from tests.lab.gobgp import GoBgp
from tests.lab.netns import Netns

RouterKind = Literal["bird", "frr", "gobgp"]
Router = Bird | Frr | GoBgp

__all__ = [
    "Bird",
    "Frr",
    "GoBgp",
    "Neighbor",
    "PeerState",
    "Route",
    "Router",
    "RouterError",
    "RouterKind",
    "kernel_routes",
    "make_router",
    "wait_for",
]


def make_router(
    kind: RouterKind, ns: Netns, *, router_id: str, local_as: int, neighbors: Sequence[Neighbor] = ()
) -> Router:
    """A (not yet started) runner of the given kind."""
    if kind == "bird":
        return Bird(ns, router_id=router_id, local_as=local_as, neighbors=neighbors)
    if kind == "frr":
        return Frr(ns, router_id=router_id, local_as=local_as, neighbors=neighbors)
    if kind == "gobgp":
        return GoBgp(ns, router_id=router_id, local_as=local_as, neighbors=neighbors)
    raise ValueError(f"unknown router kind {kind!r}")
