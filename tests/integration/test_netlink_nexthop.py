"""The interconnect watcher against a real kernel: a namespace of our own with a veth named
net1, changed with iproute2 while the watcher follows it over netlink."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import suppress
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Any

import pytest

from bgp_speaker.adapters.netlink import InterconnectWatcher, first_ipv4
from bgp_speaker.aiokit import Trigger
from bgp_speaker.core.model import NextHops
from tests.polling import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

POOLS = (ip_network("203.0.113.0/24"), ip_network("2001:db8:e1e::/64"))
V4 = IPv4Address
V6 = IPv6Address


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True)

    def sysctl(self, setting: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.name, "sysctl", "-qw", setting], check=True, capture_output=True
        )

    def add_net1(self, *addresses: str) -> None:
        """net1 as one end of a veth pair (its peer up too, so net1 has carrier)."""
        self.ip("link", "add", "net1", "type", "veth", "peer", "name", "peer1")
        self.ip("link", "set", "peer1", "up")
        self.ip("link", "set", "net1", "up")
        for address in addresses:
            self.add(address)

    def add(self, address: str, *extra: str) -> None:
        nodad = ("nodad",) if ":" in address else ()
        self.ip("addr", "add", address, "dev", "net1", *nodad, *extra)

    def delete(self, address: str) -> None:
        self.ip("addr", "del", address, "dev", "net1")


@pytest.fixture
def netns() -> Iterator[Netns]:
    name = f"bgps-nh-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield Netns(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


Watch = Callable[..., Awaitable[tuple[InterconnectWatcher, Trigger]]]


@pytest.fixture
async def watch(netns: Netns) -> AsyncIterator[Watch]:
    tasks: list[asyncio.Task[None]] = []

    async def start(**kwargs: Any) -> tuple[InterconnectWatcher, Trigger]:
        kwargs.setdefault("netns", netns.name)
        watcher = InterconnectWatcher("net1", pools=POOLS, **kwargs)
        trigger = Trigger()
        tasks.append(asyncio.create_task(watcher.run(trigger=trigger)))
        return watcher, trigger

    yield start
    for task in tasks:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def seen(watcher: InterconnectWatcher, text: str) -> bool:
    addresses = watcher.status()["addresses"]
    assert isinstance(addresses, list)
    return any(str(a).startswith(text) for a in addresses)


def address_count(watcher: InterconnectWatcher) -> int:
    addresses = watcher.status()["addresses"]
    assert isinstance(addresses, list)
    return len(addresses)


def family_status(watcher: InterconnectWatcher, family: str) -> dict[str, Any]:
    families = watcher.status()["next_hops"]
    assert isinstance(families, dict)
    entry = families[family]
    assert isinstance(entry, dict)
    return entry


async def test_initial_next_hops_skip_eips_secondaries_and_link_local(netns: Netns, watch: Watch) -> None:
    netns.add_net1("203.0.113.10/24", "10.0.0.2/24", "10.0.0.9/24", "2001:db8:1::2/64")
    netns.add("2001:db8:1::5/64", "preferred_lft", "0")  # deprecated
    netns.add("2001:db8:e1e::10/64")  # an EIP, listed first by the kernel
    watcher, trigger = await watch()

    expected = NextHops(ipv4=V4("10.0.0.2"), ipv6=V6("2001:db8:1::2"))
    await eventually(lambda: watcher.current() == expected, what=f"next hops {expected}")
    assert trigger.pending
    status = watcher.status()
    assert status["state"] == "following"
    assert status["stale"] is False
    assert seen(watcher, "203.0.113.10/24 eip-pool")
    assert seen(watcher, "10.0.0.9/24 secondary")
    assert seen(watcher, "2001:db8:1::5/64 deprecated")
    assert seen(watcher, "fe80::")


async def test_primary_change_pulls_trigger(netns: Netns, watch: Watch) -> None:
    netns.add_net1("10.0.0.2/24", "10.0.0.9/24")
    netns.sysctl("net.ipv4.conf.net1.promote_secondaries=1")
    watcher, trigger = await watch()
    await eventually(lambda: watcher.current().ipv4 == V4("10.0.0.2"), what="initial next hop")
    await trigger.wait(0)
    pulls = trigger.pulls

    # Deleting the primary promotes the secondary: the new primary is the next hop.
    netns.delete("10.0.0.2/24")
    await eventually(lambda: watcher.current().ipv4 == V4("10.0.0.9"), what="promoted address as next hop")
    assert trigger.pulls > pulls
    assert watcher.status()["stale"] is False

    # A different interconnect address altogether.
    pulls = trigger.pulls
    netns.add("10.0.1.7/24")
    netns.delete("10.0.0.9/24")
    await eventually(lambda: watcher.current().ipv4 == V4("10.0.1.7"), what="new address as next hop")
    assert trigger.pulls > pulls
    assert watcher.status()["changes"] == 3


async def test_eip_on_net1_is_ignored(netns: Netns, watch: Watch) -> None:
    netns.add_net1("10.0.0.2/24")
    watcher, trigger = await watch()
    await eventually(lambda: watcher.current().ipv4 == V4("10.0.0.2"), what="initial next hop")
    pulls = trigger.pulls

    # What Kube-OVN's eip-add does: the EIP with its subnet's mask, a primary of its own subnet.
    netns.add("203.0.113.10/24")
    netns.add("203.0.113.11/24")
    await eventually(lambda: seen(watcher, "203.0.113.11/24"), what="EIPs seen")
    assert watcher.current().ipv4 == V4("10.0.0.2")
    assert trigger.pulls == pulls
    assert watcher.status()["stale"] is False


async def test_removed_address_is_sticky_and_reported_stale(netns: Netns, watch: Watch) -> None:
    netns.add_net1("10.0.0.2/24", "203.0.113.10/24", "2001:db8:1::2/64")
    watcher, trigger = await watch()
    await eventually(lambda: watcher.current().ipv4 == V4("10.0.0.2"), what="initial next hop")
    pulls = trigger.pulls

    netns.delete("10.0.0.2/24")
    await eventually(lambda: watcher.status()["stale"] is True, what="stale reported")
    # Sticky: still the last known one, never the EIP that is now the only IPv4 primary.
    assert watcher.current() == NextHops(ipv4=V4("10.0.0.2"), ipv6=V6("2001:db8:1::2"))
    assert trigger.pulls == pulls
    v4 = family_status(watcher, "ipv4")
    assert v4["stale"] is True
    assert isinstance(v4["stale_since"], float)
    assert "10.0.0.2 is no longer a usable address of net1" in v4["reason"]
    assert family_status(watcher, "ipv6")["stale"] is False
    assert "10.0.0.2" in str(watcher.status()["reason"])

    netns.add("10.0.0.2/24")
    await eventually(lambda: watcher.status()["stale"] is False, what="stale cleared")
    assert watcher.current().ipv4 == V4("10.0.0.2")
    assert trigger.pulls == pulls


async def test_link_down_up_and_interface_recreated(netns: Netns, watch: Watch) -> None:
    netns.add_net1("10.0.0.2/24")
    watcher, trigger = await watch()
    await eventually(lambda: watcher.current().ipv4 == V4("10.0.0.2"), what="initial next hop")
    pulls = trigger.pulls

    netns.ip("link", "set", "net1", "down")
    await eventually(lambda: watcher.status()["state"] == "link-down", what="link down reported")
    status = watcher.status()
    link = status["link"]
    assert isinstance(link, dict)
    assert (link["present"], link["up"], link["operstate"]) == (True, False, "down")
    assert status["stale"] is True
    assert "down" in str(status["reason"])
    assert watcher.current().ipv4 == V4("10.0.0.2")

    netns.ip("link", "set", "net1", "up")
    await eventually(lambda: watcher.status()["state"] == "following", what="link up again")
    assert watcher.status()["stale"] is False
    assert trigger.pulls == pulls

    # Deleted and created again (a new ifindex), with another address.
    netns.ip("link", "del", "net1")
    await eventually(lambda: watcher.status()["state"] == "interface-gone", what="interface gone")
    assert watcher.current().ipv4 == V4("10.0.0.2")
    assert watcher.status()["stale"] is True
    netns.add_net1("10.0.0.3/24")
    await eventually(lambda: watcher.current().ipv4 == V4("10.0.0.3"), what="next hop on the new net1")
    assert watcher.status()["stale"] is False
    assert trigger.pulls > pulls


async def test_interface_that_appears_late_is_waited_for(netns: Netns, watch: Watch) -> None:
    watcher, trigger = await watch()
    await eventually(lambda: watcher.status()["state"] == "waiting", what="waiting reported")
    status = watcher.status()
    assert isinstance(status["waiting_since"], float)
    assert "does not exist yet" in str(status["reason"])
    assert status["stale"] is False
    assert watcher.current() == NextHops()

    netns.add_net1("10.0.0.2/24", "2001:db8:1::2/64")
    expected = NextHops(ipv4=V4("10.0.0.2"), ipv6=V6("2001:db8:1::2"))
    await eventually(lambda: watcher.current() == expected, what="next hops once net1 exists")
    assert trigger.pulls > 0
    assert watcher.status()["waiting_since"] is None


async def test_override_is_honoured(netns: Netns, watch: Watch) -> None:
    netns.add_net1("10.0.0.2/24", "2001:db8:1::2/64")
    watcher, _ = await watch(override_ipv4=V4("192.0.2.1"))
    await eventually(lambda: watcher.current().ipv6 == V6("2001:db8:1::2"), what="IPv6 from net1")
    assert watcher.current().ipv4 == V4("192.0.2.1")
    assert family_status(watcher, "ipv4")["source"] == "override"
    netns.delete("10.0.0.2/24")
    netns.add("10.0.0.3/24")
    await eventually(lambda: seen(watcher, "10.0.0.3/24"), what="address change seen")
    assert watcher.current().ipv4 == V4("192.0.2.1")
    assert family_status(watcher, "ipv4")["stale"] is False


async def test_both_overrides_need_no_netlink(watch: Watch) -> None:
    # A namespace that does not exist: any netlink use would fail.
    overrides = NextHops(ipv4=V4("192.0.2.1"), ipv6=V6("2001:db8::1"))
    watcher, _ = await watch(
        override_ipv4=overrides.ipv4, override_ipv6=overrides.ipv6, netns=f"absent-{secrets.token_hex(4)}"
    )
    await eventually(lambda: watcher.status()["state"] == "override", what="override state")
    assert watcher.current() == overrides
    assert watcher.status()["last_error"] is None


async def test_first_ipv4(netns: Netns) -> None:
    assert await first_ipv4("net1", exclude=POOLS, netns=netns.name) is None
    netns.add_net1("203.0.113.10/24", "10.0.0.2/24", "10.0.0.9/24")
    assert await first_ipv4("net1", exclude=POOLS, netns=netns.name) == V4("10.0.0.2")
    assert await first_ipv4("net1", exclude=(), netns=netns.name) == V4("203.0.113.10")


async def test_eip_storm_is_followed_without_losing_events(netns: Netns, watch: Watch, tmp_path: Any) -> None:
    netns.add_net1("10.0.0.2/24")
    watcher, trigger = await watch()
    await eventually(lambda: watcher.current().ipv4 == V4("10.0.0.2"), what="initial next hop")
    pulls = trigger.pulls

    commands = [f"addr add 203.0.113.{i}/24 dev net1" for i in range(250)]
    commands += [f"addr add 2001:db8:e1e::{i:x}/64 dev net1 nodad" for i in range(1, 1751)]
    batch = tmp_path / "eips.batch"
    batch.write_text("\n".join(commands) + "\n")
    netns.ip("-batch", str(batch))
    await eventually(lambda: address_count(watcher) >= 1 + len(commands), what="all EIPs seen")
    assert watcher.current().ipv4 == V4("10.0.0.2")
    assert watcher.current().ipv6 is None
    assert trigger.pulls == pulls
    assert watcher.status()["last_error"] is None


async def test_netlink_failure_is_reported_and_retried(watch: Watch) -> None:
    absent = f"absent-{secrets.token_hex(4)}"
    watcher, _ = await watch(netns=absent)
    await eventually(lambda: watcher.status()["last_error"] is not None, what="error reported")
    assert watcher.status()["state"] == "reconnecting"
    assert watcher.current() == NextHops()
    assert not any(name.startswith(absent) for name in os.listdir("/run/netns"))
