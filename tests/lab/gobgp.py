"""GoBGP 3.10 in a lab namespace: as a core router (passive neighbors) or as a reference speaker.

``gobgpd`` serves its gRPC API on ``127.0.0.1:<api_port>`` of its own namespace; the ``gobgp`` CLI is
run inside the same namespace. GoBGP installs nothing in the kernel: query its RIB instead.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.lab import mrt
from tests.lab.base import Neighbor, PeerState, Route, RouterError, RouterRunner
from tests.lab.netns import Netns

logger = logging.getLogger(__name__)

_SESSION_STATES = {
    "1": "idle",
    "2": "connect",
    "3": "active",
    "4": "opensent",
    "5": "openconfirm",
    "6": "established",
}
_SUMMARY_RE = re.compile(r"Destination:\s*(\d+),\s*Path:\s*(\d+)")
_ATTR_ORIGIN, _ATTR_AS_PATH, _ATTR_NEXT_HOP, _ATTR_MED, _ATTR_LOCAL_PREF = 1, 2, 3, 4, 5
_ATTR_COMMUNITIES, _ATTR_MP_REACH, _ATTR_LARGE = 8, 14, 32


class GoBgp(RouterRunner):
    """One ``gobgpd`` in ``ns``. Sessions start fast: ``connect-retry`` is 1 s."""

    kind = "gobgp"
    daemon = "gobgpd"
    config_name = "gobgpd.toml"

    def __init__(
        self,
        ns: Netns,
        *,
        router_id: str,
        local_as: int,
        neighbors: Sequence[Neighbor] = (),
        api_port: int = 50051,
        listen_port: int = 179,
        workdir: Path | None = None,
    ) -> None:
        super().__init__(ns, router_id=router_id, local_as=local_as, neighbors=neighbors, workdir=workdir)
        self.api_port = api_port
        self.listen_port = listen_port

    def render(self) -> str:
        lines = [
            "[global.config]",
            f"  as = {self.local_as}",
            f'  router-id = "{self.router_id}"',
            f"  port = {self.listen_port}",
        ]
        for n in self.neighbors:
            lines += [
                "[[neighbors]]",
                "  [neighbors.config]",
                f'    neighbor-address = "{n.address}"',
                f"    peer-as = {n.remote_as}",
            ]
            if n.password:
                lines.append(f'    auth-password = "{n.password}"')
            lines += [
                "  [neighbors.timers.config]",
                "    connect-retry = 1",
                f"    hold-time = {n.hold_time}",
                f"    keepalive-interval = {max(1, n.hold_time // 3)}",
                "    idle-hold-time-after-reset = 1",
                "  [neighbors.transport.config]",
                f"    passive-mode = {'true' if n.passive else 'false'}",
            ]
            if n.local_address:
                lines.append(f'    local-address = "{n.local_address}"')
            if n.multihop:
                lines += [
                    "  [neighbors.ebgp-multihop.config]",
                    "    enabled = true",
                    "    multihop-ttl = 255",
                ]
            for fam, on in (("ipv4-unicast", n.ipv4), ("ipv6-unicast", n.ipv6)):
                if on:
                    lines += [
                        "  [[neighbors.afi-safis]]",
                        "    [neighbors.afi-safis.config]",
                        f'      afi-safi-name = "{fam}"',
                    ]
        return "\n".join(lines) + "\n"

    # -- lifecycle -------------------------------------------------------------------------------------

    def _launch(self, *, timeout: float) -> None:
        self._spawn(
            "gobgpd",
            [
                "gobgpd",
                "-f",
                str(self.config_path),
                "-t",
                "toml",
                "-p",
                "-l",
                "info",
                f"--api-hosts=127.0.0.1:{self.api_port}",
                "--pprof-disable",
            ],
        )

    def _answers(self) -> bool:
        return self.gobgp("global", check=False).returncode == 0

    # -- CLI -------------------------------------------------------------------------------------------

    def gobgp(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return self.ns.run(
            ["gobgp", "-u", "127.0.0.1", "-p", str(self.api_port), *args], check=check, timeout=timeout
        )

    def gobgp_json(self, *args: str) -> Any:
        out = self.gobgp(*args, "-j").stdout
        try:
            return json.loads(out) if out.strip() else None
        except json.JSONDecodeError as exc:
            raise RouterError(f"gobgp {' '.join(args)} did not answer JSON: {out[:500]}") from exc

    # -- queries ---------------------------------------------------------------------------------------

    def peer_state(self, address: str) -> PeerState:
        data = self.gobgp_json("neighbor", address)
        state = data.get("state", {}) if isinstance(data, dict) else {}
        session = str(state.get("session_state", "unknown")).lower()
        session = _SESSION_STATES.get(session, session)
        established = session == "established"
        timers = data.get("timers", {}).get("state", {}) if isinstance(data, dict) else {}
        since = str(timers.get("uptime", {}).get("seconds", "")) if established else ""
        return PeerState(address=address, state=session, established=established, since=since)

    def routes(self, *, family: int = 4) -> list[Route]:
        """Paths in the global RIB (``gobgp global rib -a ipv4|ipv6 -j``)."""
        data = self.gobgp_json("global", "rib", "-a", f"ipv{family}") or {}
        routes = []
        for prefix, paths in data.items():
            for path in paths:
                routes.append(_route_from_json(prefix, path))
        return routes

    def rib_count(self, *, family: int = 4) -> int:
        """Number of destinations in the global RIB (``gobgp global rib summary``)."""
        out = self.gobgp("global", "rib", "summary", "-a", f"ipv{family}").stdout
        m = _SUMMARY_RE.search(out)
        if not m:
            raise RouterError(f"cannot parse rib summary: {out!r}")
        return int(m[1])

    # -- speaker ---------------------------------------------------------------------------------------

    def add_route(
        self,
        prefix: str,
        *,
        next_hop: str,
        communities: Sequence[str] = (),
        large_communities: Sequence[str] = (),
        med: int | None = None,
    ) -> None:
        """``gobgp global rib add`` of one route (one CLI process per route: slow by design)."""
        family = "ipv6" if ":" in prefix else "ipv4"
        argv = ["global", "rib", "add", prefix, "nexthop", next_hop]
        if communities:
            argv += ["community", ",".join(communities)]
        if large_communities:
            argv += ["large-community", ",".join(large_communities)]
        if med is not None:
            argv += ["med", str(med)]
        self.gobgp(*argv, "-a", family)

    def delete_route(self, prefix: str) -> None:
        family = "ipv6" if ":" in prefix else "ipv4"
        self.gobgp("global", "rib", "del", prefix, "-a", family)

    def write_mrt(self, routes: Sequence[mrt.MrtRoute], *, path: Path | None = None) -> Path:
        """Write ``routes`` as a TABLE_DUMP_V2 file for :meth:`inject_mrt`.

        The peer entry has AS 0: gobgpd 3.10 then treats the paths as locally originated. With a non-zero
        AS it files them as learned from that peer and they never reached the RIB.
        """
        path = path or self.workdir / "routes.mrt"
        peer = mrt.MrtPeer(bgp_id="0.0.0.0", address="0.0.0.0", asn=0)
        mrt.write_file(path, routes, peer=peer)
        return path

    def inject_mrt(self, path: Path) -> None:
        """``gobgp mrt inject global <file>`` (returns when the CLI exits, not when gobgpd has it all)."""
        self.gobgp("mrt", "inject", "global", str(path), timeout=600)

    def announce_mrt(
        self, routes: Sequence[mrt.MrtRoute], *, timeout: float = 120.0, attempts: int = 5
    ) -> int:
        """Inject ``routes`` through an MRT file and make sure the RIB ends up holding all of them.

        ``gobgp mrt inject`` can exit before gobgpd has read the whole stream and silently lose the tail
        (seen: the last ~150 to ~900 of 20,000 records). After the RIB count settles, the prefixes still
        missing are injected again from a new file in which they are repeated so that a lost tail only
        costs duplicates. Returns the number of ``inject`` runs it took (1 when nothing was lost).
        """
        wanted = {r.prefix: r for r in routes}
        target = {f: sum(1 for p in wanted if (":" in p) == (f == 6)) for f in (4, 6)}
        base = {f: self.rib_count(family=f) for f in (4, 6) if target[f]}
        batch = list(wanted.values())
        for attempt in range(1, attempts + 1):
            self.inject_mrt(self.write_mrt(batch, path=self.workdir / f"routes-{attempt}.mrt"))
            if self._settle(target, base, timeout=timeout):
                return attempt
            present = self.rib_prefixes()
            missing = [r for p, r in wanted.items() if p not in present]
            logger.warning(
                "mrt inject lost routes", extra={"op": "inject", "attempt": attempt, "count": len(missing)}
            )
            if not missing:
                return attempt
            batch = missing * max(2, -(-4096 // len(missing)))
        raise RouterError(f"RIB still short of {target} after {attempts} MRT injections")

    def _settle(self, target: dict[int, int], base: dict[int, int], *, timeout: float) -> bool:
        """Wait until every family holds ``base + target`` routes (True) or its count stops growing."""
        last: dict[int, int] = {}
        stable_since = time.monotonic()
        deadline = stable_since + timeout
        while time.monotonic() < deadline:
            counts = {f: self.rib_count(family=f) - base[f] for f in base}
            if all(counts[f] >= target[f] for f in base):
                return True
            if counts != last:
                last, stable_since = counts, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                return False
            time.sleep(0.1)
        return False

    def rib_prefixes(self) -> set[str]:
        """Every prefix in the global RIB, both families."""
        prefixes: set[str] = set()
        for family in (4, 6):
            prefixes.update((self.gobgp_json("global", "rib", "-a", f"ipv{family}") or {}).keys())
        return prefixes


def _route_from_json(prefix: str, path: dict[str, Any]) -> Route:
    attrs = {int(a.get("type", 0)): a for a in path.get("attrs", [])}
    nh = attrs.get(_ATTR_NEXT_HOP, {}).get("nexthop") or attrs.get(_ATTR_MP_REACH, {}).get("nexthop")
    as_path: list[int] = []
    for seg in attrs.get(_ATTR_AS_PATH, {}).get("as_paths", []):
        as_path += [int(a) for a in seg.get("asns", [])]
    comms = tuple(f"{c >> 16}:{c & 0xFFFF}" for c in attrs.get(_ATTR_COMMUNITIES, {}).get("communities", []))
    large = tuple(
        f"{v['ASN']}:{v['LocalData1']}:{v['LocalData2']}" for v in attrs.get(_ATTR_LARGE, {}).get("value", [])
    )
    origin_code = attrs.get(_ATTR_ORIGIN, {}).get("value")
    return Route(
        prefix=prefix,
        next_hop=nh,
        peer=path.get("source-id") or None,
        as_path=tuple(as_path),
        communities=comms,
        large_communities=large,
        med=attrs.get(_ATTR_MED, {}).get("metric"),
        local_pref=attrs.get(_ATTR_LOCAL_PREF, {}).get("value"),
        origin={0: "IGP", 1: "EGP", 2: "Incomplete"}.get(origin_code) if origin_code is not None else None,
        best=bool(path.get("best", False)),
    )
