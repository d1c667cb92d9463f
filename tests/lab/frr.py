"""FRR 8.4 (zebra + bgpd) as a router in a lab namespace, with private sockets and pid files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.lab.base import Neighbor, PeerState, Route, RouterError, RouterRunner, kernel_routes, wait_for
from tests.lab.netns import Netns

FRR_LIBDIR = Path("/usr/lib/frr")
FRR_USER = "frr"


class Frr(RouterRunner):
    """zebra and bgpd in ``ns``; every socket, pid file and log lives in ``workdir``.

    Per-namespace isolation comes from ``-z <workdir>/zserv.api`` (zebra's API socket),
    ``--vty_socket <workdir>`` (what ``vtysh`` talks to) and ``-P 0`` (no TCP vty). eBGP routes are
    accepted without a policy (``no bgp ebgp-requires-policy``) and installed in the kernel by zebra.
    """

    kind = "frr"
    daemon = "bgpd"
    config_name = "bgpd.conf"

    def __init__(
        self,
        ns: Netns,
        *,
        router_id: str,
        local_as: int,
        neighbors: Sequence[Neighbor] = (),
        workdir: Path | None = None,
        kernel_install: bool = True,
        extra_config: str = "",
    ) -> None:
        super().__init__(ns, router_id=router_id, local_as=local_as, neighbors=neighbors, workdir=workdir)
        self.kernel_install = kernel_install
        self.extra_config = extra_config
        self.zserv = self.workdir / "zserv.api"
        # The daemons drop to the packaged "frr" user (root is not in the "frrvty" group they require).
        shutil.chown(self.workdir, user=FRR_USER, group=FRR_USER)

    def render(self) -> str:
        lines = [
            "frr defaults traditional",
            f"hostname {self.ns.short}",
            f"log file {self.workdir / 'bgpd.log'} informational",
            "!",
            f"router bgp {self.local_as}",
            f" bgp router-id {self.router_id}",
            " no bgp ebgp-requires-policy",
            " no bgp default ipv4-unicast",
            " no bgp network import-check",
        ]
        for n in self.neighbors:
            lines += [
                f" neighbor {n.address} remote-as {n.remote_as}",
                f" neighbor {n.address} timers {max(1, n.hold_time // 3)} {n.hold_time}",
                f" neighbor {n.address} timers connect 1",
                f" neighbor {n.address} advertisement-interval 0",
            ]
            if n.passive:
                lines.append(f" neighbor {n.address} passive")
            if n.password:
                lines.append(f" neighbor {n.address} password {n.password}")
            if n.local_address:
                lines.append(f" neighbor {n.address} update-source {n.local_address}")
            if n.multihop:
                lines.append(f" neighbor {n.address} ebgp-multihop 255")
        for fam, flag in (("ipv4", "ipv4"), ("ipv6", "ipv6")):
            active = [n for n in self.neighbors if getattr(n, flag)]
            if active:
                lines.append(f" address-family {fam} unicast")
                lines += [f"  neighbor {n.address} activate" for n in active]
                lines.append(" exit-address-family")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n!\n"

    def _daemon_argv(self, daemon: str, config: Path) -> list[str]:
        return [
            str(FRR_LIBDIR / daemon),
            "-f",
            str(config),
            "-i",
            str(self.workdir / f"{daemon}.pid"),
            "-z",
            str(self.zserv),
            "--vty_socket",
            str(self.workdir),
            "-P",
            "0",
            "--log",
            f"file:{self.workdir / (daemon + '.out.log')}",
        ]

    def _launch(self, *, timeout: float) -> None:
        zebra_conf = self.workdir / "zebra.conf"
        zebra_conf.write_text(f"hostname {self.ns.short}\n!\n")
        self._spawn("zebra", self._daemon_argv("zebra", zebra_conf))

        def zserv_up() -> bool:
            self._check_running()
            return self.zserv.exists()

        wait_for(zserv_up, timeout=timeout, message=f"zebra socket in {self.ns.short}")
        bgpd = self._daemon_argv("bgpd", self.config_path)
        if not self.kernel_install:
            bgpd.append("-n")
        self._spawn("bgpd", bgpd)

    def _answers(self) -> bool:
        if not (self.workdir / "bgpd.vty").exists():
            return False
        out = self.vtysh("show bgp summary json", check=False)
        return out.lstrip().startswith("{")

    # -- queries ---------------------------------------------------------------------------------------

    def vtysh(self, command: str, *, check: bool = True) -> str:
        proc = self.ns.run(
            ["vtysh", "--vty_socket", str(self.workdir), "-c", command], check=check, timeout=20
        )
        return proc.stdout

    def vtysh_json(self, command: str) -> Any:
        out = self.vtysh(command)
        try:
            return json.loads(out)
        except json.JSONDecodeError as exc:
            raise RouterError(f"vtysh {command!r} did not answer JSON: {out[:500]}") from exc

    def peer_state(self, address: str) -> PeerState:
        data = self.vtysh_json(f"show bgp neighbors {address} json")
        info = data.get(address)
        if not isinstance(info, dict):
            raise RouterError(f"frr has no neighbor {address}: {data}")
        state = str(info.get("bgpState", "unknown"))
        established = state == "Established"
        # The epoch has 1 s resolution; the count of establishments makes a quick reset visible too.
        transitions = info.get("connectionsEstablished", "")
        since = f"{info.get('bgpTimerUpEstablishedEpoch', '')} #{transitions}" if established else ""
        return PeerState(
            address=address,
            state=state,
            established=established,
            since=since,
            info="" if established else str(info.get("lastResetDueTo", "")),
            extra={"establishedTransitions": str(transitions)},
        )

    def routes(self, *, family: int = 4) -> list[Route]:
        """Paths in the BGP table, from ``show bgp ipv4|ipv6 unicast json``."""
        data = self.vtysh_json(f"show bgp ipv{family} unicast json")
        return parse_bgp_json(data)

    def routes_detail(self, prefix: str, *, family: int = 4) -> list[Route]:
        """One prefix with communities and large communities (``show bgp ... <prefix> json``)."""
        data = self.vtysh_json(f"show bgp ipv{family} unicast {prefix} json")
        routes = []
        for path in data.get("paths", []):
            nh = next((h.get("ip") for h in path.get("nexthops", []) if h.get("used", True)), None)
            routes.append(
                Route(
                    prefix=str(data.get("prefix", prefix)),
                    next_hop=nh,
                    peer=path.get("peer", {}).get("peerId"),
                    as_path=tuple(
                        int(a) for a in str(path.get("aspath", {}).get("string", "")).split() if a.isdigit()
                    ),
                    communities=tuple(str(path.get("community", {}).get("string", "")).split()),
                    large_communities=tuple(str(path.get("largeCommunity", {}).get("string", "")).split()),
                    med=path.get("metric"),
                    local_pref=path.get("locPrf"),
                    origin=path.get("origin"),
                    best=bool(path.get("bestpath", {}).get("overall", False)),
                )
            )
        return routes

    def kernel_routes(self, *, family: int = 4) -> dict[str, str]:
        return kernel_routes(self.ns, family=family, proto="bgp")


def parse_bgp_json(data: dict[str, Any]) -> list[Route]:
    routes: list[Route] = []
    for prefix, paths in data.get("routes", {}).items():
        for path in paths:
            hops = path.get("nexthops", [])
            nh = next(
                (str(h["ip"]) for h in hops if h.get("scope", "global") == "global" and "ip" in h), None
            )
            routes.append(
                Route(
                    prefix=prefix,
                    next_hop=nh,
                    peer=path.get("peerId"),
                    as_path=tuple(int(a) for a in str(path.get("path", "")).split() if a.isdigit()),
                    med=path.get("metric"),
                    local_pref=path.get("locPrf"),
                    origin=path.get("origin"),
                    best=bool(path.get("bestpath", False)),
                )
            )
    return routes
