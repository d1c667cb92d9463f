"""BIRD 2 as the core router in a lab namespace: passive neighbors, import all, export to the kernel."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from tests.lab.base import Neighbor, PeerState, Route, RouterError, RouterRunner, kernel_routes
from tests.lab.netns import Netns

_PROTO_RE = re.compile(
    r"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+"
    r"(?P<since>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\s*(?P<info>.*)$"
)
_ROUTE_HEAD_RE = re.compile(
    r"^(?P<prefix>\S+)?\s+(?P<kind>unicast|unreachable|blackhole|prohibit)\s+\[(?P<proto>\S+)"
)
_PAIR_RE = re.compile(r"\(([^)]*)\)")


class Bird(RouterRunner):
    """One BIRD 2 daemon in ``ns`` (``bird -f``), with its control socket in ``workdir``.

    Neighbors are named after their address (:attr:`Neighbor.ident`). Routes learned from them are
    exported to the kernel main table, so ``ip -n <core> route`` lists them with ``proto bird``.
    """

    kind = "bird"
    daemon = "bird"
    config_name = "bird.conf"
    start_timeout = 15.0

    def __init__(
        self,
        ns: Netns,
        *,
        router_id: str,
        local_as: int,
        neighbors: Sequence[Neighbor] = (),
        workdir: Path | None = None,
        kernel_export: bool = True,
        extra_config: str = "",
    ) -> None:
        super().__init__(ns, router_id=router_id, local_as=local_as, neighbors=neighbors, workdir=workdir)
        self.kernel_export = kernel_export
        self.extra_config = extra_config
        self.socket = self.workdir / "bird.ctl"
        self.log_path = self.workdir / "bird.log"

    # -- config ----------------------------------------------------------------------------------------

    def render(self) -> str:
        lines = [
            f'log "{self.log_path}" all;',
            f"router id {self.router_id};",
            "timeformat protocol iso long ms;",
            "timeformat route iso long ms;",
            "protocol device { scan time 5; }",
        ]
        if self.kernel_export:
            for fam in ("ipv4", "ipv6"):
                lines.append(
                    f"protocol kernel kernel_{fam} {{ learn off; persist off; scan time 5; "
                    f"{fam} {{ import none; export all; }}; }}"
                )
        lines.extend(self._render_neighbor(n) for n in self.neighbors)
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def _render_neighbor(self, n: Neighbor) -> str:
        local = (
            f"local {n.local_address} as {self.local_as};"
            if n.local_address
            else f"local as {self.local_as};"
        )
        body = [
            local,
            f"neighbor {n.address} as {n.remote_as};",
            f"passive {'on' if n.passive else 'off'};",
            f"hold time {n.hold_time};",
            f"keepalive time {max(1, n.hold_time // 3)};",
            "connect delay time 1;",
            "connect retry time 1;",
            "error wait time 1, 2;",
            "error forget time 10;",
        ]
        if n.multihop:
            body.append("multihop;")
        if n.password:
            body.append(f'password "{n.password}";')
        if n.ipv4:
            body.append("ipv4 { import all; export none; };")
        if n.ipv6:
            body.append("ipv6 { import all; export none; };")
        return f"protocol bgp {n.ident} {{\n  " + "\n  ".join(body) + "\n}"

    # -- lifecycle -------------------------------------------------------------------------------------

    def _launch(self, *, timeout: float) -> None:
        self.ns.run(["bird", "-p", "-c", str(self.config_path)])  # parse only: clear error on a bad config
        argv = ["bird", "-f", "-c", str(self.config_path), "-s", str(self.socket)]
        self._spawn("bird", [*argv, "-P", str(self.workdir / "bird.pid")])

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        return "Daemon is up and running" in self.birdc("show", "status", check=False)

    def reconfigure(self, neighbors: Sequence[Neighbor]) -> None:
        """Replace the neighbor list and apply it with ``birdc configure`` (untouched sessions stay up)."""
        self.neighbors = list(neighbors)
        self.config_path.write_text(self.render())
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise RouterError(f"bird reconfigure failed: {out}")

    # -- queries ---------------------------------------------------------------------------------------

    def birdc(self, *args: str, check: bool = True) -> str:
        proc = self.ns.run(["birdc", "-s", str(self.socket), *args], check=check, timeout=20)
        return proc.stdout

    def protocols(self) -> dict[str, PeerState]:
        """State of every BGP protocol, keyed by neighbor address."""
        by_ident = {n.ident: n for n in self.neighbors}
        states: dict[str, PeerState] = {}
        for line in self.birdc("show", "protocols").splitlines():
            m = _PROTO_RE.match(line)
            if not m or m["proto"] != "BGP" or m["name"] not in by_ident:
                continue
            info = m["info"].strip()
            address = by_ident[m["name"]].address
            states[address] = PeerState(
                address=address,
                state=m["state"],
                established=info.startswith("Established"),
                since=m["since"],
                info=info,
            )
        return states

    def peer_state(self, address: str) -> PeerState:
        try:
            return self.protocols()[address]
        except KeyError:
            raise RouterError(f"bird has no neighbor {address}") from None

    def routes(self, *, family: int | None = None, peer: str | None = None) -> list[Route]:
        """Routes learned over BGP, from ``birdc show route all`` (optionally of one neighbor)."""
        argv = ["show", "route", "all"]
        if family is not None:
            argv += ["table", "master4" if family == 4 else "master6"]
        if peer is not None:
            argv += ["protocol", Neighbor(address=peer, remote_as=0).ident]
        return parse_show_route_all(self.birdc(*argv), neighbors={n.ident: n.address for n in self.neighbors})

    def kernel_routes(self, *, family: int = 4) -> dict[str, str]:
        return kernel_routes(self.ns, family=family, proto="bird")


def parse_show_route_all(text: str, *, neighbors: dict[str, str]) -> list[Route]:
    """Parse ``birdc show route all``: one :class:`Route` per path, BGP attributes included."""
    routes: list[Route] = []
    current: dict[str, object] | None = None
    prefix = ""

    def flush() -> None:
        if current is not None and current.get("bgp"):
            routes.append(Route(**{k: v for k, v in current.items() if k != "bgp"}))  # type: ignore[arg-type]

    for raw in text.splitlines():
        head = _ROUTE_HEAD_RE.match(raw)
        if head and not raw.startswith("\t"):
            flush()
            prefix = head["prefix"] or prefix
            proto = head["proto"]
            current = {
                "prefix": prefix,
                "next_hop": None,
                "peer": neighbors.get(proto, proto),
                "best": " * " in raw,
                "bgp": False,
            }
            continue
        if current is None:
            continue
        line = raw.strip()
        if line.startswith("via ") and current["next_hop"] is None:
            current["next_hop"] = line.split()[1]
        elif line.startswith("Type: BGP"):
            current["bgp"] = True
        elif line.startswith("BGP.as_path:"):
            current["as_path"] = tuple(int(a) for a in re.findall(r"\d+", line.split(":", 1)[1]))
        elif line.startswith("BGP.next_hop:") and current["next_hop"] is None:
            current["next_hop"] = line.split()[1]
        elif line.startswith("BGP.community:"):
            current["communities"] = tuple(
                p.replace(",", ":").replace(" ", "") for p in _PAIR_RE.findall(line)
            )
        elif line.startswith("BGP.large_community:"):
            current["large_communities"] = tuple(
                ":".join(x.strip() for x in p.split(",")) for p in _PAIR_RE.findall(line)
            )
        elif line.startswith("BGP.med:"):
            current["med"] = int(line.split()[1])
        elif line.startswith("BGP.local_pref:"):
            current["local_pref"] = int(line.split()[1])
        elif line.startswith("BGP.origin:"):
            current["origin"] = line.split()[1]
    flush()
    return routes
