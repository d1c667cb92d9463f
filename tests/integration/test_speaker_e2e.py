"""The real daemon in gateway namespaces against real core routers (issue: speaker core).

Each test builds its own lab (unique namespaces, removed even on failure) and asserts on what
the core router learned and installed in its kernel table.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.lab.base import kernel_routes, wait_for
from tests.lab.bird import Bird
from tests.lab.netns import Lab
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology, build

pytestmark = pytest.mark.integration


def speaker_for(topo: Topology, gw: Gateway, eips, **extra) -> SpeakerProcess:
    peer = {"address": topo.core_v4, "asn": topo.core_as, "description": "core"}
    peer.update(extra.pop("peer", {}))
    return SpeakerProcess.create(
        gw.ns,
        local_as=topo.gateway_as,
        peers=[peer],
        pools=[topo.eip_pool_v4, topo.eip_pool_v6],
        eips=eips,
        extra=extra,
    ).start()


def route_via(topo: Topology, prefix: str, *, family: int = 4) -> str | None:
    return kernel_routes(topo.core, family=family).get(prefix)


def wait_route(
    topo: Topology, prefix: str, via: str | None, *, family: int = 4, timeout: float = 30.0
) -> None:
    wait_for(
        lambda: route_via(topo, prefix, family=family) == via,
        timeout=timeout,
        message=f"{prefix} via {via} in the core's kernel table",
    )


def steady_since(router: Bird, address: str) -> str:
    """BIRD's session timestamp once the session is up and the value is steady (it moves by a
    millisecond while a session finishes coming up): the baseline for "never reset"."""
    last = ""

    def steady() -> bool:
        nonlocal last
        state = router.peer_state(address)
        same, last = state.established and state.since == last, state.since
        return same

    wait_for(steady, timeout=30, interval=0.5, message=f"a steady established session with {address}")
    return last


@pytest.mark.parametrize("router", ["bird", "frr"])
def test_routes_reach_the_core_kernel_with_the_gateway_next_hop(router):
    with Lab() as lab:
        topo = build(lab, gateways=1, router=router)
        gw = topo.gateways[0]
        eip, eip6 = topo.eip(10), topo.eip(0x10, family=6)
        speaker = speaker_for(topo, gw, [{"ip": eip, "communities": ["65001:10"]}, {"ip": eip6}])
        wait_route(topo, f"{eip}/32", gw.net1_v4)
        wait_route(topo, f"{eip6}/128", gw.net1_v6, family=6)
        learned = {r.prefix: r for r in topo.router.routes(family=4)}
        assert learned[f"{eip}/32"].next_hop == gw.net1_v4
        if router == "bird":
            assert "(65001,10)" in learned[f"{eip}/32"].communities or "65001:10" in " ".join(
                learned[f"{eip}/32"].communities
            )
        doc = speaker.wait_status(lambda d: speaker.established(d) and d["health"]["ready"])
        assert doc["peers"][0]["announced"] == 2
        assert {r["prefix"]: r["peers"][topo.core_v4] for r in doc["routes"]} == {
            f"{eip}/32": "announced",
            f"{eip6}/128": "announced",
        }
        assert doc["next_hops"]["ipv4"] == gw.net1_v4
        assert speaker.stop() == 0


def test_each_eip_goes_to_its_gateway_and_moves_make_before_break():
    with Lab() as lab:
        topo = build(lab, gateways=2, router="bird")
        gw1, gw2 = topo.gateways
        eip1, eip2 = topo.eip(10), topo.eip(20)
        s1 = speaker_for(topo, gw1, [{"ip": eip1}])
        s2 = speaker_for(topo, gw2, [{"ip": eip2}])
        wait_route(topo, f"{eip1}/32", gw1.net1_v4)
        wait_route(topo, f"{eip2}/32", gw2.net1_v4)
        assert isinstance(topo.router, Bird)
        since = steady_since(topo.router, gw1.net1_v4)

        monitor = subprocess.Popen(
            [*topo.core.exec_prefix, "ip", "-4", "monitor", "route"], stdout=subprocess.PIPE, text=True
        )
        lab.track(monitor)  # type: ignore[arg-type]
        try:
            # Make before break: gw2 announces first, then gw1 withdraws.
            s2.write_eips([{"ip": eip2}, {"ip": eip1}])
            wait_for(
                lambda: len([r for r in topo.router.routes(family=4) if r.prefix == f"{eip1}/32"]) == 2,
                timeout=30,
                message="both gateways announcing the moving EIP",
            )
            s1.write_eips([])
            wait_route(topo, f"{eip1}/32", gw2.net1_v4)
            time.sleep(0.5)
        finally:
            monitor.terminate()
            events, _ = monitor.communicate(timeout=10)
        assert not [line for line in events.splitlines() if line.startswith("Deleted") and eip1 in line], (
            events
        )
        # File changes never reset the session.
        assert topo.router.peer_state(gw1.net1_v4).since == since
        assert topo.router.peer_state(gw1.net1_v4).established


def test_exabgp_killed_with_sigkill_is_restarted_and_the_routes_come_back():
    with Lab() as lab:
        topo = build(lab, gateways=1, router="bird")
        gw = topo.gateways[0]
        eip = topo.eip(10)
        speaker = speaker_for(topo, gw, [{"ip": eip}])
        wait_route(topo, f"{eip}/32", gw.net1_v4)
        doc = speaker.wait_status(lambda d: d["exabgp"].get("pid"))
        old_pid = doc["exabgp"]["pid"]
        gw.ns.run(["kill", "-9", str(old_pid)])
        doc = speaker.wait_status(
            lambda d: (
                d["exabgp"].get("restarts", 0) >= 1
                and d["exabgp"].get("pid") not in (None, old_pid)
                and speaker.established(d)
            ),
            timeout=60,
        )
        wait_route(topo, f"{eip}/32", gw.net1_v4, timeout=60)
        assert doc["routes"][0]["peers"][topo.core_v4] == "announced"


def test_sigterm_drains_with_graceful_shutdown_then_withdraws():
    with Lab() as lab:
        topo = build(lab, gateways=1, router="bird")
        gw = topo.gateways[0]
        eip = topo.eip(10)
        speaker = speaker_for(topo, gw, [{"ip": eip}], shutdown={"drain_seconds": 3})
        wait_route(topo, f"{eip}/32", gw.net1_v4)
        speaker.signal(signal.SIGTERM)

        def drained() -> bool:
            return any(
                r.prefix == f"{eip}/32" and any("65535" in c and "0" in c for c in r.communities)
                for r in topo.router.routes(family=4)
            )

        wait_for(drained, timeout=15, message="the route re-announced with GRACEFUL_SHUTDOWN (65535:0)")
        wait_route(topo, f"{eip}/32", None, timeout=30)
        assert speaker.proc is not None
        assert speaker.proc.wait(timeout=30) == 0
        assert "withdrew every route" in speaker.log_path.read_text()


def test_next_hop_change_on_the_interconnect_interface_is_followed():
    with Lab() as lab:
        topo = build(lab, gateways=1, router=None)
        gw = topo.gateways[0]
        dynamic = (
            "protocol bgp gateways {\n"
            f"  local as {topo.core_as};\n"
            f"  neighbor range {topo.interconnect_v4} as {topo.gateway_as};\n"
            "  passive on; hold time 9; keepalive time 3;\n"
            "  error wait time 1, 2;\n"
            "  ipv4 { import all; export none; };\n"
            "}"
        )
        topo.router = Bird(
            topo.core, router_id=topo.core_v4, local_as=topo.core_as, extra_config=dynamic
        ).start()
        eip = topo.eip(10)
        speaker = speaker_for(topo, gw, [{"ip": eip}], peer={"families": ["ipv4"]})
        wait_route(topo, f"{eip}/32", gw.net1_v4)
        new = "10.99.0.111"
        gw.ns.sysctl("net.ipv4.conf.net1.promote_secondaries", 1)
        gw.ns.ip("address", "add", f"{new}/24", "dev", "net1")
        gw.ns.ip("address", "del", f"{gw.net1_v4}/24", "dev", "net1")
        wait_route(topo, f"{eip}/32", new, timeout=60)
        doc = speaker.wait_status(lambda d: d["next_hops"]["ipv4"] == new)
        assert doc["routes"][0]["next_hop"] == new


def test_wrong_md5_password_means_no_session_and_a_clear_status():
    with Lab() as lab:
        topo = build(lab, gateways=1, router=None)
        gw = topo.gateways[0]
        topo.start_router("bird", neighbors=[topo.neighbor(gw, password="right-secret")])
        secret = lab.tmpdir("secret") / "core"
        secret.write_text("wrong-secret\n")
        eip = topo.eip(10)
        speaker = speaker_for(topo, gw, [{"ip": eip}], peer={"password_file": str(secret)})
        time.sleep(5)  # several connection attempts; none may succeed
        doc = speaker.status()
        assert doc["peers"][0]["state"] != "established"
        assert not doc["health"]["ready"]
        assert any("BGP sessions established" in r for r in doc["health"]["reasons"])
        assert doc["health"]["live"]
        assert route_via(topo, f"{eip}/32") is None
        assert not topo.router.peer_state(gw.net1_v4).established
        text = speaker.status_text()
        assert "NOT READY" in text
        log = speaker.log_path.read_text()
        assert "wrong-secret" not in log
        assert "wrong-secret" not in json.dumps(doc)


def test_an_address_outside_the_pools_is_refused_and_never_announced():
    with Lab() as lab:
        topo = build(lab, gateways=1, router="bird")
        gw = topo.gateways[0]
        good, bad = topo.eip(10), "198.18.0.1"
        speaker = speaker_for(topo, gw, [{"ip": good}, {"ip": bad}])
        wait_route(topo, f"{good}/32", gw.net1_v4)
        doc = speaker.wait_status(lambda d: d["refused"])
        (refused,) = doc["refused"]
        assert refused["address"] == bad
        assert "outside the allowed pools" in refused["reason"]
        assert route_via(topo, f"{bad}/32") is None
        fetch = (
            f"import urllib.request; print(urllib.request.urlopen('{speaker.url}/metrics').read().decode())"
        )
        metrics = gw.ns.run([sys.executable, "-c", fetch]).stdout
        assert 'bgp_speaker_refused_addresses{reason="outside_pools"} 1.0' in metrics
        assert "address refused" in speaker.log_path.read_text()


def test_packets_reach_an_eip_on_no_interface_through_dnat_and_snat():
    with Lab() as lab:
        topo = build(lab, gateways=1, router="bird")
        gw = topo.gateways[0]
        eip = topo.eip(10)
        topo.install_nat(gw, eip=eip)
        speaker_for(topo, gw, [{"ip": eip}])
        wait_route(topo, f"{eip}/32", gw.net1_v4)
        assert eip not in gw.ns.ip("address").stdout
        assert topo.ping(topo.ext, eip)
        reply, seen = topo.tcp_roundtrip(topo.ext, gw.pod, eip, payload="in")
        assert (reply, seen) == ("in", topo.ext_v4)  # DNAT in, reply back through conntrack
        reply, seen = topo.tcp_roundtrip(gw.pod, topo.ext, topo.ext_v4, payload="out")
        assert (reply, seen) == ("out", eip)  # SNAT out: the world sees the EIP
