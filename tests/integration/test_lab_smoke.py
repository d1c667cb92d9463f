"""The lab works with real daemons and real packets, without any bgp_speaker code.

- ExaBGP (static routes) in gw1 peers with BIRD, FRR or GoBGP in core, and the EIP /32 and /128 land
  in the core's kernel table (BIRD, FRR) or RIB (GoBGP) via gw1's net1 addresses.
- GoBGP as a reference speaker announces through ``global rib add`` and through an MRT file.
- Data plane: a static /32 on the core and iptables DNAT/SNAT on gw1 carry ping and TCP between the
  external host and the pod, with the EIP on no interface.
- The lab removes its namespaces and processes, also after an exception, and sweeps stale ones.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.lab import mrt, routers, topology
from tests.lab.exaspeaker import ExaBgp, StaticRoute, render_config
from tests.lab.netns import MARKER, Lab, netns_names, sweep_stale

pytestmark = pytest.mark.integration

DEADLINE = 30.0


def _exabgp_in_gw1(
    topo: topology.Topology, exabgp_bin: Path, *, eip4: str, eip6: str, password: str | None = None
) -> ExaBgp:
    gw = topo.gateway(1)
    config = render_config(
        peer=topo.core_v4,
        local_address=gw.net1_v4,
        local_as=topo.gateway_as,
        peer_as=topo.core_as,
        password=password,
        routes=[
            StaticRoute(
                f"{eip4}/32", gw.net1_v4, "community [ 65000:100 ] large-community [ 65000:0:7 ] med 10"
            ),
            StaticRoute(f"{eip6}/128", gw.net1_v6),
        ],
    )
    return ExaBgp(gw.ns, executable=exabgp_bin, config=config).start()


@pytest.mark.parametrize("kind", ["bird", "frr", "gobgp"])
def test_exabgp_routes_reach_the_core_router(lab: Lab, exabgp_bin: Path, kind: routers.RouterKind) -> None:
    topo = topology.build(lab, gateways=1, router=None)
    gw = topo.gateway(1)
    core = topo.start_router(kind, neighbors=[topo.neighbor(gw, password="lab-md5-key")])
    eip4, eip6 = topo.eip(10), topo.eip(10, family=6)
    speaker = _exabgp_in_gw1(topo, exabgp_bin, eip4=eip4, eip6=eip6, password="lab-md5-key")

    def established() -> bool:
        speaker.check_running()
        return core.peer_state(gw.net1_v4).established

    routers.wait_for(established, timeout=DEADLINE, message="session Established")
    assert speaker.proc is not None
    owner = Path(f"/proc/{speaker.proc.pid}").stat()
    assert (owner.st_uid, owner.st_gid) == (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)

    if isinstance(core, routers.GoBgp):
        learned = routers.wait_for(
            lambda: (
                {r.prefix: r for r in core.routes(family=4) + core.routes(family=6)}
                if len(core.routes(family=4)) + len(core.routes(family=6)) >= 2
                else None
            ),
            timeout=DEADLINE,
            message="both routes in the GoBGP RIB",
        )
        assert learned[f"{eip4}/32"].next_hop == gw.net1_v4
        assert learned[f"{eip4}/32"].communities == ("65000:100",)
        assert learned[f"{eip4}/32"].large_communities == ("65000:0:7",)
        assert learned[f"{eip6}/128"].next_hop == gw.net1_v6
        return

    routers.wait_for(
        lambda: f"{eip4}/32" in core.kernel_routes(), timeout=DEADLINE, message="v4 kernel route"
    )
    routers.wait_for(
        lambda: f"{eip6}/128" in core.kernel_routes(family=6), timeout=DEADLINE, message="v6 kernel route"
    )
    assert core.kernel_routes()[f"{eip4}/32"] == gw.net1_v4
    assert core.kernel_routes(family=6)[f"{eip6}/128"] == gw.net1_v6
    listing = topo.core.ip("route", "show", f"{eip4}/32").stdout
    assert f"via {gw.net1_v4}" in listing
    assert f"proto {'bird' if kind == 'bird' else 'bgp'}" in listing

    if isinstance(core, routers.Bird):
        (route,) = [r for r in core.routes(family=4) if r.prefix == f"{eip4}/32"]
        assert (route.next_hop, route.peer, route.as_path) == (gw.net1_v4, gw.net1_v4, (topo.gateway_as,))
        assert (route.communities, route.large_communities, route.med) == (("65000:100",), ("65000:0:7",), 10)
    else:
        (route,) = core.routes_detail(f"{eip4}/32")
        assert (route.communities, route.large_communities, route.med) == (("65000:100",), ("65000:0:7",), 10)


def test_bird_session_since_is_stable_without_resets(lab: Lab, exabgp_bin: Path) -> None:
    topo = topology.build(lab, gateways=1, router="bird")
    core = topo.router
    assert isinstance(core, routers.Bird)
    gw, eip = topo.gateway(1), f"{topo.eip(11)}/32"
    speaker = _exabgp_in_gw1(topo, exabgp_bin, eip4=topo.eip(11), eip6=topo.eip(11, family=6))
    first = core.wait_established(gw.net1_v4, timeout=DEADLINE)
    routers.wait_for(lambda: eip in core.kernel_routes(), timeout=DEADLINE, message="route installed")
    assert core.peer_state(gw.net1_v4).since == first.since

    speaker.stop()
    routers.wait_for(lambda: not core.peer_state(gw.net1_v4).established, timeout=DEADLINE, message="down")
    routers.wait_for(lambda: eip not in core.kernel_routes(), timeout=DEADLINE, message="route withdrawn")
    speaker.start()
    second = core.wait_established(gw.net1_v4, timeout=DEADLINE)
    assert second.since != first.since


def test_gobgp_reference_speaker_rib_add_and_mrt_inject(lab: Lab) -> None:
    topo = topology.build(lab, gateways=1, router=None)
    gw = topo.gateway(1)
    # GoBGP's own first connect waits 5-10 s whatever connect-retry says; an active core connects at once.
    core = topo.start_router("bird", neighbors=[topo.neighbor(gw, passive=False)])
    assert isinstance(core, routers.Bird)
    speaker = routers.GoBgp(
        gw.ns,
        router_id=gw.net1_v4,
        local_as=topo.gateway_as,
        neighbors=[routers.Neighbor(topo.core_v4, topo.core_as, passive=False, local_address=gw.net1_v4)],
    ).start()
    core.wait_established(gw.net1_v4, timeout=DEADLINE)

    speaker.add_route(f"{topo.eip(5)}/32", next_hop=gw.net1_v4, communities=["65000:5"])
    count = 2000
    first = int(ipaddress.IPv4Address("100.64.0.0"))
    prefixes = [f"{ipaddress.IPv4Address(first + i)}/32" for i in range(count)]
    routes = [
        *mrt.host_routes(prefixes, next_hop=gw.net1_v4),
        mrt.MrtRoute(f"{topo.eip(6, family=6)}/128", gw.net1_v6, communities=("65000:6",)),
    ]
    injections = speaker.announce_mrt(routes)
    assert injections >= 1
    assert speaker.rib_count(family=4) == count + 1
    assert speaker.rib_count(family=6) == 1

    def all_installed() -> dict[str, str] | None:
        kernel = core.kernel_routes()
        return kernel if len(kernel) >= count + 1 else None

    kernel = routers.wait_for(all_installed, timeout=DEADLINE, message="all MRT routes in the core kernel")
    assert set(prefixes) <= set(kernel)
    assert {kernel[p] for p in prefixes} == {gw.net1_v4}
    assert kernel[f"{topo.eip(5)}/32"] == gw.net1_v4
    eip6 = f"{topo.eip(6, family=6)}/128"
    routers.wait_for(
        lambda: eip6 in core.kernel_routes(family=6), timeout=DEADLINE, message="v6 route in kernel"
    )


@pytest.mark.parametrize("family", [4, 6])
def test_data_plane_dnat_snat_without_eip_on_any_interface(lab: Lab, family: int) -> None:
    topo = topology.build(lab, gateways=2, router=None)
    gw = topo.gateway(1)
    eip = topo.eip(10, family=family)
    pod_ip = gw.pod_v4 if family == 4 else gw.pod_v6
    ext_ip = topo.ext_v4 if family == 4 else topo.ext_v6
    topo.route_eip(eip, gw)
    topo.install_nat(gw, eip=eip)

    for ns in lab.namespaces.values():
        assert eip not in ns.ip("addr", "show").stdout, f"{eip} is on an interface of {ns.short}"
    before = topo.counters(gw.ns)["net1"]

    assert topo.ping(topo.ext, eip)
    reply, seen_by_pod = topo.tcp_roundtrip(topo.ext, gw.pod, eip, payload="hello")
    assert (reply, seen_by_pod) == ("hello", ext_ip)
    # And from the pod out: the external host sees the EIP as source (SNAT).
    reply, seen_by_ext = topo.tcp_roundtrip(gw.pod, topo.ext, ext_ip, payload="out", port=8081)
    assert (reply, seen_by_ext) == ("out", eip)

    after = topo.counters(gw.ns)["net1"]
    assert after["rx_packets"] > before["rx_packets"]
    assert after["tx_packets"] > before["tx_packets"]
    assert pod_ip not in topo.core.ip("route", "show").stdout


def test_lab_cleans_up_after_an_exception(lab: Lab) -> None:
    made: dict[str, Any] = {}

    def build_then_fail() -> None:
        with Lab() as inner:
            made["ns"] = ns = inner.add_ns("x")
            made["proc"] = ns.popen(["sleep", "300"])
            made["workdir"] = inner.tmpdir("w")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_then_fail()
    ns, proc, workdir = made["ns"], made["proc"], made["workdir"]
    assert proc.poll() is not None
    assert ns.name not in netns_names()
    assert not workdir.exists()


def test_sweep_stale_removes_only_dead_owners(lab: Lab) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{MARKER}-{dead.pid}-beef-x"
    live = lab.add_ns("alive")
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        removed = sweep_stale()
        assert stale in removed
        assert stale not in netns_names()
        assert live.name in netns_names()
        assert str(os.getpid()) in live.name
    finally:
        subprocess.run(["ip", "netns", "del", stale], check=False, capture_output=True)
