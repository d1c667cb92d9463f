"""Build the ``/status`` document from what the running parts report.

No I/O: the app gathers the inputs and this module only arranges them. The shape is the
contract of ``bgp-speaker status`` (``core/statusview.py`` renders it) and of the JSON
endpoint; keys are only ever added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bgp_speaker.core.desired import prefix_sort_key
from bgp_speaker.core.model import IPNetwork, NextHops, PeerId, PeerStatus, RouteAttributes, host_prefix
from bgp_speaker.ports import SourceSnapshot
from bgp_speaker.reconciler import PassReport


@dataclass(frozen=True, slots=True)
class PeerInfo:
    address: PeerId
    asn: int
    description: str = ""


def _attrs(attributes: RouteAttributes) -> dict[str, Any]:
    return {
        "next_hop": str(attributes.next_hop),
        "communities": list(attributes.communities),
        "large_communities": list(attributes.large_communities),
        "med": attributes.med,
        "local_preference": attributes.local_preference,
        "as_path_prepend": attributes.as_path_prepend,
    }


def routes_section(
    *,
    desired: Mapping[PeerId, Mapping[IPNetwork, RouteAttributes]],
    actual: Mapping[PeerId, Mapping[IPNetwork, RouteAttributes]],
    origins: Mapping[IPNetwork, str],
) -> list[dict[str, Any]]:
    prefixes: set[IPNetwork] = set()
    for rib in (*desired.values(), *actual.values()):
        prefixes.update(rib)
    rows = []
    for prefix in sorted(prefixes, key=prefix_sort_key):
        per_peer: dict[str, str] = {}
        shown: RouteAttributes | None = None
        for peer in sorted(set(desired) | set(actual), key=lambda p: (p.version, int(p))):
            want = desired.get(peer, {}).get(prefix)
            have = actual.get(peer, {}).get(prefix)
            if want is None and have is None:
                continue
            shown = shown or want or have
            if want is None:
                per_peer[str(peer)] = "withdrawing"
            elif have == want:
                per_peer[str(peer)] = "announced"
            else:
                per_peer[str(peer)] = "pending"
        assert shown is not None
        rows.append(
            {"prefix": str(prefix), "origin": origins.get(prefix, ""), **_attrs(shown), "peers": per_peer}
        )
    return rows


def build(
    *,
    version: str,
    gateway: str | None,
    now: float,
    source_name: str,
    snapshot: SourceSnapshot | None,
    next_hops: NextHops,
    interface: str,
    next_hop_detail: Mapping[str, object],
    exabgp: Mapping[str, object],
    peers: Sequence[PeerInfo],
    peer_statuses: Mapping[PeerId, PeerStatus],
    report: PassReport | None,
    actual: Mapping[PeerId, Mapping[IPNetwork, RouteAttributes]],
    health: Mapping[str, object],
    extra: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    desired = report.desired.routes if report is not None and report.desired is not None else {}
    refusals = report.desired.refusals if report is not None and report.desired is not None else ()
    origins: dict[IPNetwork, str] = {}
    if snapshot is not None:
        for candidate in snapshot.candidates:
            origins.setdefault(host_prefix(candidate.address), candidate.origin)
    fresh_at = snapshot.fresh_at if snapshot is not None else None
    peer_rows = []
    for info in peers:
        status = peer_statuses.get(info.address, PeerStatus(peer=info.address))
        peer_rows.append(
            {
                "address": str(info.address),
                "asn": info.asn,
                "description": info.description,
                "state": status.state.value,
                "since": status.since,
                "last_error": status.last_error,
                "flaps": status.flaps,
                "announced": len(actual.get(info.address, {})),
                "desired": len(desired.get(info.address, {})),
            }
        )
    document: dict[str, Any] = {
        "version": version,
        "now": now,
        "gateway": gateway,
        "source": {
            "name": source_name,
            "synced": snapshot.synced if snapshot is not None else False,
            "fresh_at": fresh_at,
            "stale_seconds": round(max(0.0, now - fresh_at), 3) if fresh_at is not None else None,
            "error": snapshot.error if snapshot is not None else None,
            "details": dict(snapshot.details) if snapshot is not None else {},
        },
        "next_hops": {
            "ipv4": str(next_hops.ipv4) if next_hops.ipv4 else None,
            "ipv6": str(next_hops.ipv6) if next_hops.ipv6 else None,
            "interface": interface,
            "stale": bool(next_hop_detail.get("stale", False)),
            "detail": dict(next_hop_detail),
        },
        "exabgp": dict(exabgp),
        "peers": peer_rows,
        "routes": routes_section(desired=desired, actual=actual, origins=origins),
        "refused": [
            {
                "address": r.address,
                "origin": r.origin,
                "reason": r.reason,
                "peer": str(r.peer) if r.peer is not None else None,
            }
            for r in refusals
        ],
        "last_reconcile": None,
        "health": dict(health),
    }
    if report is not None:
        document["last_reconcile"] = {
            "at": report.at,
            "duration_seconds": round(report.duration, 6),
            "announced": report.announced,
            "withdrawn": report.withdrawn,
            "result": report.result,
            "error": report.reason or None,
            "latency_seconds": report.latency,
        }
    if extra:
        document.update(extra)
    return document
