"""The standard lab: a core router, an interconnect bridge, N NAT gateways with a pod each, an external host.

See ``tests/lab/README.md`` for the diagram and the IP plan. :func:`build` returns plain dataclasses with
every name and address, so tests never hard-code them.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

from tests.lab import routers
from tests.lab.base import Neighbor, wait_for
from tests.lab.netns import Lab, LabError, Netns

logger = logging.getLogger(__name__)

CORE_AS = 65000
GATEWAY_AS = 65001
INTERCONNECT_V4 = "10.99.0.0/24"
INTERCONNECT_V6 = "fd00:99::/64"
EXTERNAL_V4 = "198.51.100.0/24"
EXTERNAL_V6 = "2001:db8:5e::/64"
EIP_POOL_V4 = "203.0.113.0/24"
EIP_POOL_V6 = "2001:db8:e1b::/64"
BRIDGE = "br0"


def _host(net: str, index: int) -> str:
    return str(ipaddress.ip_network(net)[index])


@dataclass(frozen=True)
class Gateway:
    """NAT gateway ``gw<index>``: ``net1`` on the interconnect, ``eth0`` towards its pod (VPC subnet)."""

    index: int
    ns: Netns
    pod: Netns
    net1_v4: str
    net1_v6: str
    subnet_v4: str
    subnet_v6: str
    eth0_v4: str
    eth0_v6: str
    pod_v4: str
    pod_v6: str

    @property
    def name(self) -> str:
        return self.ns.short


@dataclass
class Topology:
    """Everything :func:`build` created. ``router`` is the started core router (or None)."""

    lab: Lab
    core: Netns
    switch: Netns
    ext: Netns
    gateways: tuple[Gateway, ...]
    core_v4: str = _host(INTERCONNECT_V4, 1)
    core_v6: str = _host(INTERCONNECT_V6, 1)
    core_ext_v4: str = _host(EXTERNAL_V4, 1)
    core_ext_v6: str = _host(EXTERNAL_V6, 1)
    ext_v4: str = _host(EXTERNAL_V4, 2)
    ext_v6: str = _host(EXTERNAL_V6, 2)
    core_as: int = CORE_AS
    gateway_as: int = GATEWAY_AS
    interconnect_v4: str = INTERCONNECT_V4
    interconnect_v6: str = INTERCONNECT_V6
    eip_pool_v4: str = EIP_POOL_V4
    eip_pool_v6: str = EIP_POOL_V6
    router: routers.Router | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def gateway(self, index: int) -> Gateway:
        return self.gateways[index - 1]

    def eip(self, n: int, *, family: int = 4) -> str:
        """The ``n``-th address of the EIP pool (documentation ranges only)."""
        return _host(self.eip_pool_v4 if family == 4 else self.eip_pool_v6, n)

    def neighbor(self, gw: Gateway, **overrides: object) -> Neighbor:
        """The core router's view of ``gw`` (passive, IPv4 session carrying IPv4 and IPv6)."""
        spec: dict[str, object] = {"address": gw.net1_v4, "remote_as": self.gateway_as, "local_address": None}
        spec.update(overrides)
        return Neighbor(**spec)  # type: ignore[arg-type]

    def start_router(
        self,
        kind: routers.RouterKind = "bird",
        *,
        neighbors: list[Neighbor] | None = None,
        timeout: float = 20.0,
    ) -> routers.Router:
        """Start the core router with one passive neighbor per gateway unless ``neighbors`` is given."""
        if self.router is not None:
            raise LabError("the core router is already running")
        nbrs = neighbors if neighbors is not None else [self.neighbor(gw) for gw in self.gateways]
        router = routers.make_router(
            kind, self.core, router_id=self.core_v4, local_as=self.core_as, neighbors=nbrs
        )
        self.router = router.start(timeout=timeout)
        return self.router

    # -- data plane ------------------------------------------------------------------------------------

    def route_eip(self, eip: str, gw: Gateway) -> None:
        """A static host route on the core: ``eip via <gw net1>`` (what BGP would install)."""
        v6 = ipaddress.ip_address(eip).version == 6
        self.core.add_route(f"{eip}/{128 if v6 else 32}", via=gw.net1_v6 if v6 else gw.net1_v4)

    def install_nat(self, gw: Gateway, *, eip: str, pod_ip: str | None = None) -> None:
        """iptables DNAT (eip -> pod) and SNAT (pod -> eip) in ``gw``. The EIP is put on no interface."""
        v6 = ipaddress.ip_address(eip).version == 6
        target = pod_ip or (gw.pod_v6 if v6 else gw.pod_v4)
        tool = "ip6tables" if v6 else "iptables"
        gw.ns.run(
            [tool, "-w", "-t", "nat", "-A", "PREROUTING", "-d", eip, "-j", "DNAT", "--to-destination", target]
        )
        gw.ns.run(
            [
                tool,
                "-w",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                target,
                "-o",
                "net1",
                "-j",
                "SNAT",
                "--to-source",
                eip,
            ]
        )

    def ping(self, src: Netns, dst: str, *, count: int = 3, timeout: float = 10.0) -> bool:
        """True when at least one echo reply came back."""
        proc = src.run(
            ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2", dst],
            check=False,
            timeout=timeout + 5,
        )
        return proc.returncode == 0

    def tcp_roundtrip(
        self,
        client: Netns,
        server: Netns,
        dst: str,
        *,
        port: int = 8080,
        payload: str = "ping",
        timeout: float = 10.0,
    ) -> tuple[str, str]:
        """Echo ``payload`` over TCP from ``client`` to ``dst:port`` served in ``server``.

        Returns ``(reply, peer)``: the reply the client read (``"<payload>|<peer>"`` from the server), and
        the client address as the server saw it (proof of the SNAT/DNAT path).
        """
        ready = server.lab.tmpdir("echo") / "ready"
        srv = server.popen(
            [sys.executable, "-c", _ECHO_SERVER, str(port), str(ready), str(timeout)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(
                lambda: ready.exists() or srv.poll() is not None,
                timeout=timeout,
                message="echo server listening",
            )
            if srv.poll() is not None:
                raise LabError(f"echo server exited with {srv.returncode}")
            out = client.run(
                [sys.executable, "-c", _ECHO_CLIENT, dst, str(port), payload, str(timeout)],
                timeout=timeout + 5,
            ).stdout.strip()
        finally:
            server.lab.stop_process(srv)
        reply, _, peer = out.partition("|")
        return reply, peer

    def counters(self, ns: Netns) -> dict[str, dict[str, int]]:
        return ns.link_stats()


_ECHO_SERVER = textwrap.dedent("""
    import socket, sys, pathlib
    port, ready, timeout = int(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3])
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", port)); srv.listen(1); srv.settimeout(timeout)
    ready.touch()
    conn, addr = srv.accept(); conn.settimeout(timeout)
    data = conn.recv(1024).decode()
    peer = addr[0].removeprefix("::ffff:")
    conn.sendall(f"{data}|{peer}".encode()); conn.close()
""")

_ECHO_CLIENT = textwrap.dedent("""
    import socket, sys
    host, port, payload, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload.encode()); s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(1024):
            chunks.append(chunk)
    print(b"".join(chunks).decode())
""")


def build(
    lab: Lab, *, gateways: int = 2, router: routers.RouterKind | None = "bird", router_timeout: float = 20.0
) -> Topology:
    """Create the standard topology in ``lab`` and (unless ``router`` is None) start the core router."""
    switch, core, ext = lab.add_ns("sw"), lab.add_ns("core"), lab.add_ns("ext")
    lab.bridge(switch, BRIDGE)
    core.enable_forwarding()
    topo = Topology(lab=lab, core=core, switch=switch, ext=ext, gateways=())
    v4len, v6len = (
        ipaddress.ip_network(INTERCONNECT_V4).prefixlen,
        ipaddress.ip_network(INTERCONNECT_V6).prefixlen,
    )

    # core <-> switch
    lab.veth(core, "ic0", switch, "p-core")
    lab.attach(switch, "p-core", BRIDGE)
    core.add_addr("ic0", f"{topo.core_v4}/{v4len}")
    core.add_addr("ic0", f"{topo.core_v6}/{v6len}")

    # core <-> ext
    lab.veth(core, "ext0", ext, "eth0")
    core.add_addr("ext0", f"{topo.core_ext_v4}/24")
    core.add_addr("ext0", f"{topo.core_ext_v6}/64")
    ext.add_addr("eth0", f"{topo.ext_v4}/24")
    ext.add_addr("eth0", f"{topo.ext_v6}/64")
    ext.add_route("default", via=topo.core_ext_v4)
    ext.add_route("default", via=topo.core_ext_v6)

    gws = []
    for i in range(1, gateways + 1):
        gws.append(_add_gateway(lab, topo, switch, i, v4len=v4len, v6len=v6len))
    topo.gateways = tuple(gws)
    # The core reaches every VPC subnet through its gateway only via NAT: no routes to pods on purpose.
    if router is not None:
        topo.start_router(router, timeout=router_timeout)
    logger.info("topology built", extra={"op": "build", "prefix": lab.prefix, "gateways": gateways})
    return topo


def _add_gateway(lab: Lab, topo: Topology, switch: Netns, i: int, *, v4len: int, v6len: int) -> Gateway:
    gw_ns, pod = lab.add_ns(f"gw{i}"), lab.add_ns(f"pod{i}")
    gw_ns.enable_forwarding()
    subnet_v4, subnet_v6 = f"10.0.{i}.0/24", f"fd00:10:0:{i:x}::/64"
    gw = Gateway(
        index=i,
        ns=gw_ns,
        pod=pod,
        net1_v4=_host(INTERCONNECT_V4, 10 + i),
        net1_v6=_host(INTERCONNECT_V6, 0x10 + i),
        subnet_v4=subnet_v4,
        subnet_v6=subnet_v6,
        eth0_v4=_host(subnet_v4, 1),
        eth0_v6=_host(subnet_v6, 1),
        pod_v4=_host(subnet_v4, 2),
        pod_v6=_host(subnet_v6, 2),
    )
    lab.veth(gw_ns, "net1", switch, f"p-gw{i}")
    lab.attach(switch, f"p-gw{i}", BRIDGE)
    gw_ns.add_addr("net1", f"{gw.net1_v4}/{v4len}")
    gw_ns.add_addr("net1", f"{gw.net1_v6}/{v6len}")
    gw_ns.add_route("default", via=topo.core_v4, dev="net1", onlink=True)
    gw_ns.add_route("default", via=topo.core_v6, dev="net1", onlink=True)
    lab.veth(gw_ns, "eth0", pod, "eth0")
    gw_ns.add_addr("eth0", f"{gw.eth0_v4}/24")
    gw_ns.add_addr("eth0", f"{gw.eth0_v6}/64")
    pod.add_addr("eth0", f"{gw.pod_v4}/24")
    pod.add_addr("eth0", f"{gw.pod_v6}/64")
    pod.add_route("default", via=gw.eth0_v4)
    pod.add_route("default", via=gw.eth0_v6)
    return gw
