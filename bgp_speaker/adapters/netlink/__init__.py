"""The netlink adapter: the interconnect next hop, followed live from the kernel.

- :mod:`.rtnl`: a typed rtnetlink client over pyroute2 (links, addresses, their events).
- :mod:`.watcher`: the next-hop choice and :class:`InterconnectWatcher`, the
  :class:`bgp_speaker.ports.NextHopSource` following the interconnect interface.
"""

from bgp_speaker.adapters.netlink.rtnl import Address, Event, Link, Rtnl, in_pools
from bgp_speaker.adapters.netlink.watcher import InterconnectWatcher, choose, first_ipv4

__all__ = ["Address", "Event", "InterconnectWatcher", "Link", "Rtnl", "choose", "first_ipv4", "in_pools"]
