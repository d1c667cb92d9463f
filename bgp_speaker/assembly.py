"""Build the daemon's parts from the settings: the source, the data-plane gate, the
interconnect routing manager, and the router id. Part of the composition root."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_network
from typing import TYPE_CHECKING, Any

from bgp_speaker.adapters import netlink
from bgp_speaker.adapters.dataplane import DataplaneWatcher, has_net_admin
from bgp_speaker.adapters.filesource import FileSource
from bgp_speaker.adapters.interconnect import InterconnectRouting
from bgp_speaker.aiokit import Trigger
from bgp_speaker.errors import ConfigError
from bgp_speaker.gatekeeper import DataplaneGate
from bgp_speaker.ports import CandidateSource
from bgp_speaker.settings import Settings

if TYPE_CHECKING:
    from bgp_speaker.adapters.kube import EventRecorder, KubeSource

logger = logging.getLogger(__name__)

ROUTER_ID_WAIT_SECONDS = 120.0
#: Allocations between young collections (CPython's default is 700). A pass over 10k EIPs makes
#: tens of thousands of short-lived containers; with the default many outlive a young collection,
#: get promoted and, every few passes, cost a full collection of ~20 ms in the middle of a change.
GC_YOUNG_THRESHOLD = 10_000


def not_next_hops(pools: tuple[str, ...]) -> tuple[IPv4Network | IPv6Network, ...]:
    """Pools whose addresses can never be the next hop. An open pool (0.0.0.0/0, ::/0: compat
    mode's default) excludes nothing: EIPs on net1 are secondary addresses, skipped anyway."""
    return tuple(n for n in (ip_network(p) for p in pools) if n.prefixlen > 0)


@dataclass(frozen=True, slots=True)
class BuiltSource:
    source: CandidateSource
    gateway: str | None = None
    kube_source: KubeSource | None = None
    recorder: EventRecorder | None = None


def build_source(settings: Settings) -> BuiltSource:
    source = settings.source
    if source.kind == "file":
        assert source.file is not None
        return BuiltSource(source=FileSource(path=source.file.path))
    # Imported here: the Kubernetes client is heavy and only this source needs it.
    from bgp_speaker.adapters import kube

    config = source.kubernetes
    kube_source = kube.KubeSource.from_settings(config)
    recorder = None
    if config.events:
        recorder = kube.EventRecorder(
            client_config=kube.load_configuration(config.kubeconfig),
            gateway=kube_source.gateway,
            source=kube_source,
            events_per_minute=config.events_per_minute,
        )
    return BuiltSource(
        source=kube_source, gateway=kube_source.gateway, kube_source=kube_source, recorder=recorder
    )


async def build_dataplane(settings: Settings, *, trigger: Trigger) -> DataplaneGate | None:
    config = settings.dataplane
    if config.mode == "off":
        return None
    watcher = DataplaneWatcher(poll_seconds=config.poll_seconds)
    # Read once before the first pass: `require` must not announce before it saw the tables.
    await watcher.read()
    return DataplaneGate(
        watcher=watcher, mode=config.mode, hold_down=config.hold_down_seconds, trigger=trigger
    )


def build_routing(settings: Settings, *, environ: Mapping[str, str]) -> InterconnectRouting | None:
    config = settings.interconnect
    if not config.manage_routes:
        return None
    gateway = config.gateway_ipv4
    if gateway is None and environ.get("GATEWAY_V4"):
        try:
            gateway = IPv4Address(environ["GATEWAY_V4"])
        except ValueError:
            raise ConfigError(
                f"interconnect.gateway_ipv4: not set, and env GATEWAY_V4={environ['GATEWAY_V4']!r} "
                "is not an IPv4 address"
            ) from None
    if gateway is None:
        raise ConfigError(
            "interconnect.gateway_ipv4: required with interconnect.manage_routes (or env GATEWAY_V4)"
        )
    return InterconnectRouting(
        interface=config.interface,
        gateway=gateway,
        pools=settings.pools,
        protect=[p.address for p in settings.peers if isinstance(p.address, IPv4Address)],
    )


async def router_id(settings: Settings) -> IPv4Address:
    """The configured router id, else the IPv4 next-hop override, else the interconnect address
    (waiting for it: the pod's net1 can appear late)."""
    if settings.router_id is not None:
        return settings.router_id
    if settings.interconnect.next_hop_ipv4 is not None:
        return settings.interconnect.next_hop_ipv4
    interface = settings.interconnect.interface
    deadline = time.monotonic() + ROUTER_ID_WAIT_SECONDS
    warned = False
    while True:
        address = await netlink.first_ipv4(interface, exclude=not_next_hops(settings.pools))
        if address is not None:
            return address
        if time.monotonic() > deadline:
            raise ConfigError(
                f"router_id: not set, and interface {interface} has no IPv4 address to derive it "
                f"from after {ROUTER_ID_WAIT_SECONDS:.0f}s; set router_id in the config"
            )
        if not warned:
            logger.warning(
                "waiting for an IPv4 address on the interconnect interface to use as router-id",
                extra={"interface": interface},
            )
            warned = True
        await asyncio.sleep(1.0)


def capabilities(settings: Settings) -> dict[str, Any]:
    """What runs without NET_ADMIN (kube-ovn-speaker's sidecar has the default capabilities):
    BGP, TCP-MD5, next-hop following and the endpoint do; the features listed in ``degraded``
    do not, and report it in their own status instead of failing."""
    net_admin = has_net_admin()
    wanted = [
        name
        for name, on in (
            ("dataplane", settings.dataplane.mode != "off"),
            ("interconnect.manage_routes", settings.interconnect.manage_routes),
        )
        if on
    ]
    return {"net_admin": net_admin, "degraded": wanted if net_admin is False else []}


def settle_heap() -> None:
    """Process-wide collector policy, once everything is imported: the objects alive now (modules,
    classes, functions: two thirds of what a full collection would scan) are frozen out of the
    collector's sight, and young collections are spaced by :data:`GC_YOUNG_THRESHOLD`."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
