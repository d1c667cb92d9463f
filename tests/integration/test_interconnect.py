"""Interconnect routing with real namespaces, real packets and a core router.

Topology (BGP-less stand-in: the core has static /32 routes for each EIP via its owning gateway,
which is what the speakers announce in the full stack)::

    pod1 (10.1.0.5) -- eth0 [gw1] net1 10.99.0.11 --+
                                                    br-ic [core] 10.99.0.1   203.0.113.10/32 via .11
    pod2 (10.2.0.5) -- eth0 [gw2] net1 10.99.0.12 --+                        203.0.113.20/32 via .12

gw1 holds EIP 203.0.113.10/24 (FIP for pod1), gw2 holds 203.0.113.20/24 (FIP for pod2): one /24
pool, added by the nat-gateway.sh stand-in exactly as Kube-OVN adds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.natgw import Backend, NatGateway
from tests.lab.netns import Lab, Netns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

ROOT = Path(__file__).resolve().parents[2]
POOL = "203.0.113.0/24"
EIP1, EIP2 = "203.0.113.10", "203.0.113.20"
CORE = "10.99.0.1"
DEADLINE = 30.0
OURS = 201

RUNNER = """
import asyncio, json, logging, sys
from ipaddress import IPv4Address
from bgp_speaker.adapters.interconnect import InterconnectRouting

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
routing = InterconnectRouting(interface="net1", gateway=IPv4Address(sys.argv[1]), pools=[sys.argv[2]],
                              recheck_seconds=5.0)
if sys.argv[3] == "once":
    try:
        asyncio.run(routing.reconcile())
    except Exception as exc:
        print(type(exc).__name__, exc, file=sys.stderr)
    print(json.dumps(routing.status().as_dict()))
else:
    asyncio.run(routing.run())
"""


@dataclass
class Topology:
    lab: Lab
    core: Netns
    gw1: Netns
    gw2: Netns
    pod1: Netns
    pod2: Netns
    nat1: NatGateway
    nat2: NatGateway


@pytest.fixture
def topology() -> Iterator[Topology]:
    with Lab() as lab:
        core, gw1, gw2, pod1, pod2 = (lab.add_ns(n) for n in ("core", "gw1", "gw2", "pod1", "pod2"))
        lab.bridge(core, "br-ic")
        core.add_addr("br-ic", f"{CORE}/24")
        core.enable_forwarding()
        # With br_netfilter loaded, bridged frames would also hit the ip forward hook and be counted
        # as if routed; the counters below must count only what the core routes.
        for key in ("bridge-nf-call-iptables", "bridge-nf-call-arptables"):
            if Path(f"/proc/sys/net/bridge/{key}").exists():
                core.sysctl(f"net.bridge.{key}", 0)
        nats = []
        for i, (gw, pod, backend) in enumerate(
            ((gw1, pod1, Backend.LEGACY), (gw2, pod2, Backend.NFT)), start=1
        ):
            lab.veth(gw, "net1", core, f"gw{i}p")
            lab.attach(core, f"gw{i}p", "br-ic")
            lab.veth(gw, "eth0", pod, "eth0")
            gw.add_addr("net1", f"10.99.0.1{i}/24")
            gw.add_addr("eth0", f"10.{i}.0.1/24")
            gw.enable_forwarding()
            pod.add_addr("eth0", f"10.{i}.0.5/24")
            pod.add_route("default", via=f"10.{i}.0.1")
            nat = NatGateway(gw.name, backend=backend, gateway_v4=CORE)
            nat.init()
            eip = EIP1 if i == 1 else EIP2
            nat.eip_add(f"{eip}/24")
            nat.floating_ip_add(eip, f"10.{i}.0.5")
            core.add_route(f"{eip}/32", via=f"10.99.0.1{i}")
            nats.append(nat)
        core.run(["nft", "-f", "-"], input=(
            "table ip t5count {\n chain counted {\n  type filter hook forward priority 0; policy accept;\n"
            f"  ip daddr {EIP2} counter\n  ip daddr {EIP1} counter\n }}\n}}\n"
        ))  # fmt: skip
        yield Topology(lab, core, gw1, gw2, pod1, pod2, nats[0], nats[1])


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def core_forwarded(core: Netns) -> dict[str, int]:
    doc = json.loads(core.run(["nft", "-j", "list", "table", "ip", "t5count"]).stdout)
    counts: dict[str, int] = {}
    for obj in doc["nftables"]:
        rule = obj.get("rule")
        if not rule:
            continue
        dst = next(e["match"]["right"] for e in rule["expr"] if "match" in e)
        counts[dst] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return counts


def routes(ns: Netns) -> list[dict[str, object]]:
    return ns.ip_json("-4", "route", "show", "table", "main")


def pool_onlink(ns: Netns) -> list[dict[str, object]]:
    return [r for r in routes(ns) if r.get("dst") == POOL]


def defaults(ns: Netns) -> list[dict[str, object]]:
    return [r for r in routes(ns) if r.get("dst") == "default"]


def ping(pod: Netns, address: str) -> None:
    pod.run(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "3", address])


class Capture:
    """tcpdump of ARP on the interconnect bridge (the segment every gateway's net1 is on)."""

    def __init__(self, topo: Topology, name: str) -> None:
        tmp = topo.lab.tmpdir(name)
        self.out, self.err = tmp / "arp.txt", tmp / "tcpdump.err"
        self.lab = topo.lab
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = topo.core.popen(["tcpdump", "-l", "-n", "-i", "br-ic", "arp"], stdout=out, stderr=err)
        wait_until(lambda: "listening on" in self.err.read_text(), "tcpdump ready")

    def stop(self) -> list[str]:
        time.sleep(0.3)  # let the last frames reach the capture before it stops
        self.lab.stop_process(self.proc)
        return self.out.read_text().splitlines()


def start_manager(topo: Topology, gw: Netns) -> subprocess.Popen[bytes]:
    log = topo.lab.tmpdir("manager") / "log"
    with log.open("w") as out:
        return gw.popen(
            [sys.executable, "-c", RUNNER, CORE, POOL, "run"],
            env={"PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip


def managed(gw: Netns) -> bool:
    sysctl = gw.run(["sysctl", "-n", "net.ipv4.conf.net1.arp_ignore"]).stdout.strip()
    via_core = [r for r in defaults(gw) if r.get("gateway") == CORE and r.get("dev") == "net1"]
    return not pool_onlink(gw) and len(via_core) == 1 and sysctl == "2"


def core_resolves(topo: Topology, address: str, *, restore_via: str | None = None) -> bool:
    """Make the core ARP for ``address`` on the segment (on-link /32); report whether anyone answered."""
    core = topo.core
    core.ip("route", "replace", f"{address}/32", "dev", "br-ic")
    core.ip("neigh", "flush", "dev", "br-ic")
    try:
        core.run(["ping", "-n", "-c", "2", "-i", "0.3", "-W", "1", address], check=False)
        neigh = core.ip_json("neigh", "show", address, "dev", "br-ic")
        return any("lladdr" in n and "FAILED" not in n.get("state", []) for n in neigh)
    finally:
        if restore_via is None:
            core.ip("route", "del", f"{address}/32", "dev", "br-ic")
        else:
            core.ip("route", "replace", f"{address}/32", "via", restore_via)


def test_pool_traffic_goes_through_the_core(topology: Topology) -> None:
    topo = topology
    # Baseline, as Kube-OVN leaves it: the /24 is on-link on net1 and gw1 ARPs for gw2's EIP.
    assert pool_onlink(topo.gw1)
    capture = Capture(topo, "baseline")
    before = core_forwarded(topo.core)
    ping(topo.pod1, EIP2)
    lines = capture.stop()
    assert any(f"who-has {EIP2}" in line for line in lines), lines
    assert core_forwarded(topo.core) == before, "baseline traffic should bypass the core"
    assert core_resolves(topo, EIP2, restore_via="10.99.0.12"), "baseline: gw2 answers ARP for its EIP"

    managers = [start_manager(topo, topo.gw1), start_manager(topo, topo.gw2)]
    for gw in (topo.gw1, topo.gw2):
        wait_until(lambda gw=gw: managed(gw), f"{gw.short} managed")
        gw.ip("neigh", "flush", "dev", "net1")
        gw.run(["conntrack", "-F"], check=False)

    capture = Capture(topo, "managed")
    before = core_forwarded(topo.core)
    ping(topo.pod1, EIP2)
    lines = capture.stop()
    after = core_forwarded(topo.core)
    # Both directions crossed the core: requests to gw2's EIP, replies to gw1's EIP (pod1's FIP).
    assert after[EIP2] >= before[EIP2] + 3
    assert after[EIP1] >= before[EIP1] + 3
    # Nothing was ARPed for, or announced from, an EIP on the interconnect segment.
    assert lines, "the capture saw the gateways resolve the core router"
    assert not [line for line in lines if "203.0.113." in line], lines
    # And the gateway no longer answers ARP for its EIP on the segment.
    assert not core_resolves(topo, EIP2, restore_via="10.99.0.12")
    assert core_resolves(topo, "10.99.0.12"), "the interconnect address still answers"
    for proc in managers:
        assert proc.poll() is None, "managers keep running"


def test_events_restarts_and_no_duplicates(topology: Topology) -> None:
    topo = topology
    gw = topo.gw2
    # Without Kube-OVN's default route the manager writes its own (proto 201, onlink).
    gw.ip("route", "del", "default")
    proc = start_manager(topo, gw)
    wait_until(lambda: managed(gw), "managed")
    [default] = defaults(gw)
    assert default.get("protocol") == str(OURS)
    assert "onlink" in default.get("flags", [])  # type: ignore[operator]

    # Kube-OVN's redo re-adds the EIP: the kernel re-creates the on-link route; the event removes it.
    topo.nat2.eip_del(f"{EIP2}/24")
    topo.nat2.eip_add(f"{EIP2}/24")
    wait_until(lambda: managed(gw), "on-link route removed again after eip re-add")
    # Link down drops every route on net1; up brings the prefix routes back.
    gw.ip("link", "set", "net1", "down")
    gw.ip("link", "set", "net1", "up")
    wait_until(lambda: managed(gw), "recovered after link flap")

    # Restart the manager (and once more): same routes, no duplicates.
    snapshot = sorted(json.dumps(r, sort_keys=True) for r in routes(gw))
    for _ in range(2):
        topo.lab.stop_process(proc)
        proc = start_manager(topo, gw)
        wait_until(lambda: managed(gw), "managed after restart")
        # Give the new process time to finish its first pass before comparing.
        once = gw.run([sys.executable, "-c", RUNNER, CORE, POOL, "once"], env={"PYTHONPATH": str(ROOT)})
        status = json.loads(once.stdout)
        assert status["error"] is None
        assert status["last_removed"] == []
        assert sorted(json.dumps(r, sort_keys=True) for r in routes(gw)) == snapshot
    assert len(defaults(gw)) == 1
    assert [r for r in routes(gw) if r.get("protocol") == str(OURS)] == defaults(gw)
    # The interconnect subnet's own route is never touched.
    assert [r for r in routes(gw) if r.get("dst") == "10.99.0.0/24"]


def test_without_cap_net_admin_reports_and_changes_nothing(topology: Topology) -> None:
    gw = topology.gw1
    before = routes(gw)
    proc = gw.run(
        ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--",
         sys.executable, "-c", RUNNER, CORE, POOL, "once"],
        env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    status = json.loads(proc.stdout)
    assert status["error"], proc.stderr
    assert "NetlinkError" in proc.stderr
    assert routes(gw) == before
