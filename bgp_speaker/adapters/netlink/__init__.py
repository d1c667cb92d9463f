"""The netlink adapter: the interconnect next hop, followed live from the kernel.

- :mod:`.rtnl`: a typed rtnetlink client over pyroute2 (links, addresses, their events).
- :mod:`.light`: pyroute2 imported without the parts we do not use.
- :mod:`.watcher`: the next-hop choice and :class:`InterconnectWatcher`, the
  :class:`bgp_speaker.ports.NextHopSource` following the interconnect interface.
"""

from bgp_speaker.adapters.netlink import light

# Before anything imports pyroute2: only the parts we use are loaded.
light.install()

from bgp_speaker.adapters.netlink.rtnl import Address, Event, Link, Rtnl, in_pools  # noqa: E402
from bgp_speaker.adapters.netlink.watcher import InterconnectWatcher, choose, first_ipv4  # noqa: E402

__all__ = ["Address", "Event", "InterconnectWatcher", "Link", "Rtnl", "choose", "first_ipv4", "in_pools"]
