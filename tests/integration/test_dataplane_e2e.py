"""The data plane through the real daemon and a real BGP core (issue: gateway data plane).

The gateways' NAT tables are built by the nat-gateway.sh stand-in, exactly as Kube-OVN shapes
them; the speaker gates its announcements on them and, in interconnect mode, fixes the
gateway's routing so traffic between gateways goes through the core.
"""

from __future__ import annotations

import time

import pytest

from tests.lab.base import kernel_routes, wait_for
from tests.lab.natgw import Backend, NatGateway
from tests.lab.netns import Lab
from tests.lab.routemonitor import RouteMonitor
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology, build

pytestmark = pytest.mark.integration

HOLD_DOWN = 6.0  # generous: the re-add must be seen well within it on a loaded machine


def speaker_for(topo: Topology, gw: Gateway, eips, **extra) -> SpeakerProcess:
    return SpeakerProcess.create(
        gw.ns,
        local_as=topo.gateway_as,
        peers=[{"address": topo.core_v4, "asn": topo.core_as, "families": ["ipv4"]}],
        pools=[topo.eip_pool_v4],
        eips=eips,
        extra=extra,
    ).start()


def at_core(topo: Topology, eip: str) -> str | None:
    return kernel_routes(topo.core).get(f"{eip}/32")


def refusal(doc: dict, eip: str) -> str | None:
    return next((r["reason"] for r in doc["refused"] if r["address"] == eip), None)


@pytest.mark.parametrize("backend", [Backend.LEGACY, Backend.NFT])
def test_announce_only_what_the_nat_tables_serve(backend):
    with Lab() as lab:
        topo = build(lab, gateways=1, router="bird")
        gw = topo.gateways[0]
        eip = topo.eip(10)
        nat = NatGateway(netns=gw.ns.name, backend=backend, gateway_v4=topo.core_v4)
        nat.run("init")
        nat.run("eip-add", f"{eip}/24")  # on net1 with the pool's mask, as Kube-OVN does
        speaker = speaker_for(
            topo,
            gw,
            [{"ip": eip}],
            dataplane={"mode": "require", "hold_down_seconds": HOLD_DOWN, "poll_seconds": 0.5},
        )
        # Bound (in the source) but no rule installed: refused, never announced.
        doc = speaker.wait_status(lambda d: refusal(d, eip) is not None)
        assert "no NAT rule installed" in refusal(doc, eip)
        assert doc["dataplane"]["capable"] is True
        assert doc["dataplane"]["backend"] == backend.value
        assert at_core(topo, eip) is None

        # The FIP is installed: announced, and real packets flow through the gateway's NAT.
        nat.run("floating-ip-add", f"{eip},{gw.pod_v4}")
        wait_for(lambda: at_core(topo, eip) == gw.net1_v4, timeout=30, message="the EIP at the core")
        assert topo.ping(topo.ext, eip)
        reply, seen = topo.tcp_roundtrip(topo.ext, gw.pod, eip, payload="gated")
        assert (reply, seen) == ("gated", topo.ext_v4)

        # Redo: rules removed and re-added within the hold-down never reach the core.
        with RouteMonitor(topo.core) as monitor:
            mark = monitor.mark()
            nat.run("floating-ip-del", eip)
            speaker.wait_status(
                lambda d: any(
                    o["address"] == eip and o.get("held_until") for o in d["dataplane"]["observations"]
                )
            )
            nat.run("floating-ip-add", f"{eip},{gw.pod_v4}")
            speaker.wait_status(lambda d: not d["dataplane"]["observations"])
            time.sleep(HOLD_DOWN + 1)  # past the hold-down that would have withdrawn it
            assert monitor.find(f"{eip}/32", added=False, since=mark) is None, monitor.events
        assert at_core(topo, eip) == gw.net1_v4

        # Removed for good: held first (still at the core), withdrawn once the hold-down ends.
        nat.run("floating-ip-del", eip)
        speaker.wait_status(
            lambda d: any(o["address"] == eip and o.get("held_until") for o in d["dataplane"]["observations"])
        )
        assert at_core(topo, eip) == gw.net1_v4
        wait_for(
            lambda: at_core(topo, eip) is None, timeout=30, message="the EIP withdrawn after the hold-down"
        )
        doc = speaker.wait_status(lambda d: refusal(d, eip) is not None)
        assert "no NAT rule installed" in refusal(doc, eip)


def test_interconnect_mode_sends_traffic_between_gateways_through_the_core():
    with Lab() as lab:
        topo = build(lab, gateways=2, router="bird")
        gw1, gw2 = topo.gateways
        eips = {gw1.name: topo.eip(10), gw2.name: topo.eip(20)}
        for gw in (gw1, gw2):
            nat = NatGateway(netns=gw.ns.name, gateway_v4=topo.core_v4)
            nat.run("init")
            nat.run("eip-add", f"{eips[gw.name]}/24")
            nat.run("floating-ip-add", f"{eips[gw.name]},{gw.pod_v4}")
            # Kube-OVN's mask made the whole pool on-link on net1.
            assert "203.0.113.0/24 dev net1" in gw.ns.ip("route").stdout
        interconnect = {"manage_routes": True, "gateway_ipv4": topo.core_v4}
        speakers = [
            speaker_for(
                topo, gw, [{"ip": eips[gw.name]}], interconnect=interconnect, dataplane={"mode": "require"}
            )
            for gw in (gw1, gw2)
        ]
        for gw in (gw1, gw2):
            wait_for(
                lambda gw=gw: at_core(topo, eips[gw.name]) == gw.net1_v4,
                timeout=30,
                message="EIPs at the core",
            )
            wait_for(
                lambda gw=gw: "203.0.113.0/24" not in gw.ns.ip("route").stdout,
                timeout=30,
                message="the pool's on-link route removed from net1",
            )
        for sysctl in ("arp_ignore", "arp_announce"):
            assert gw1.ns.run(["sysctl", "-n", f"net.ipv4.conf.net1.{sysctl}"]).stdout.strip() == "2"

        before = topo.counters(topo.core)["ic0"]
        reply, seen = topo.tcp_roundtrip(gw1.pod, gw2.pod, eips[gw2.name], payload="via-core")
        after = topo.counters(topo.core)["ic0"]
        assert reply == "via-core"
        assert seen == eips[gw1.name]  # gw1 SNATed the pod to its own EIP
        # The core forwarded the packets: it received them on the interconnect and sent them back out.
        assert after["rx_packets"] - before["rx_packets"] >= 6
        assert after["tx_packets"] - before["tx_packets"] >= 6
        # Nobody ARPed for an EIP on the interconnect segment.
        for ns in (topo.core, gw1.ns, gw2.ns):
            neighbours = ns.ip("neigh", "show").stdout
            assert not any(eip in neighbours for eip in eips.values()), neighbours

        # Restarting the sidecar leaves the routes as they were, with no duplicates.
        routes_before = gw1.ns.ip("route", "show").stdout
        assert speakers[0].stop() == 0
        speakers[0].start()
        wait_for(lambda: at_core(topo, eips[gw1.name]) == gw1.net1_v4, timeout=30, message="gw1's EIP back")
        routes_after = gw1.ns.ip("route", "show").stdout
        assert sorted(routes_after.splitlines()) == sorted(routes_before.splitlines())
        assert routes_after.count("default") == 1
