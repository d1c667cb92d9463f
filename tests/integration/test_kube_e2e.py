"""End to end: Kube-OVN objects in an API server -> the real daemon in gw1 -> BIRD -> the core's kernel.

The daemon (``python -m bgp_speaker run``, ExaBGP as its child) runs inside gw1's namespace with
``source.kind: kubernetes``; the API server double runs in this process with its listening socket in
gw1's namespace (tests/lab/kubelab.py). Objects are written in kube-ovn-controller's order by the
scripted controller (tests/kubeapi/kubeovn.py). The core's kernel table is recorded by a streamed
``ip monitor route`` for the whole module, so "never withdrawn" is checked against every change the
kernel reported, not against samples.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.kubeapi import kubeovn as ko
from tests.lab.base import kernel_routes, wait_for
from tests.lab.kubelab import KubeApi
from tests.lab.netns import Lab
from tests.lab.routemonitor import RouteMonitor
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology, build

pytestmark = pytest.mark.integration

GW = "gw1"
HOLD_DOWN = 6.0  # generous: the re-add must be seen well within it on a loaded machine
OUTSIDE_POOLS = "198.18.0.10"  # benchmarking range, not in the lab's pools
DEADLINE = 30.0


@dataclass
class Env:
    topo: Topology
    gw1: Gateway
    api: KubeApi
    speaker: SpeakerProcess
    monitor: RouteMonitor

    def bind(self, eip_name: str, address: str, *, gateway: str = GW) -> None:
        """User creates an EIP and a FIP rule on it; the controller readies both, in its order."""
        ctl = self.api.controller
        self.api.run(ctl.create_eip(eip_name, gateway=gateway, v4ip=address))
        self.api.run(ctl.create_rule("fip", f"fip-{eip_name}", eip_name=eip_name, internal=self.gw1.pod_v4))

    def core_has(self, address: str) -> bool:
        return kernel_routes(self.topo.core).get(f"{address}/32") == self.gw1.net1_v4

    def wait_route(self, address: str) -> None:
        wait_for(
            lambda: self.core_has(address), timeout=DEADLINE, message=f"{address}/32 via gw1 at the core"
        )

    def bird_since(self, address: str) -> str:
        """The time BIRD last changed its route to ``address`` (header of ``show route``)."""
        text = self.topo.router.birdc("show", "route", f"{address}/32")  # type: ignore[union-attr]
        for line in text.splitlines():
            if line.startswith(f"{address}/32"):
                return line.split("[", 1)[1].split("]", 1)[0]
        raise AssertionError(f"BIRD has no route to {address}/32:\n{text}")

    def refusal(self, doc: dict[str, Any], address: str) -> str | None:
        for row in doc["refused"]:
            if row["address"] == address:
                return str(row["reason"])
        return None

    def held(self, doc: dict[str, Any], address: str) -> str | None:
        for note in doc["source"]["details"].get("held", []):
            if note["address"] == address:
                return str(note["reason"])
        return None


@pytest.fixture(scope="module")
def env(lab_requirements: None) -> Iterator[Env]:
    with Lab() as lab:
        topo = build(lab, gateways=2, router="bird")
        gw1 = topo.gateway(1)
        with KubeApi(gw1.ns) as api, RouteMonitor(topo.core) as monitor:
            for gw in topo.gateways:
                api.run(api.controller.create_gateway(gw.name, lan_ip=gw.eth0_v4))
            speaker = SpeakerProcess.create(
                gw1.ns,
                local_as=topo.gateway_as,
                peers=[{"address": topo.core_v4, "asn": topo.core_as, "description": "core"}],
                pools=[topo.eip_pool_v4, topo.eip_pool_v6],
                source=api.source_config(gateway=GW, policy="bound", hold_down_seconds=HOLD_DOWN),
            )
            speaker.start()
            try:
                speaker.wait_status(lambda d: speaker.established(d) and d["source"]["synced"], timeout=60)
                yield Env(topo=topo, gw1=gw1, api=api, speaker=speaker, monitor=monitor)
            finally:
                speaker.stop()


def wait_events(env: Env, name: str, reasons: set[str]) -> dict[str, dict[str, Any]]:
    def posted() -> dict[str, dict[str, Any]] | None:
        events = {e["reason"]: e for e in env.api.events(name=name)}
        return events if reasons <= set(events) else None

    return wait_for(posted, timeout=DEADLINE, message=f"Events {sorted(reasons)} on {name}")


def test_bound_eip_announced_then_withdrawn_after_the_hold_down_with_events(env: Env) -> None:
    address = env.topo.eip(10)
    mark = env.monitor.mark()
    env.bind("eip-a", address)
    added = env.monitor.wait(f"{address}/32", since=mark, timeout=DEADLINE)
    assert added.via == env.gw1.net1_v4
    doc = env.speaker.wait_status(lambda d: any(r["prefix"] == f"{address}/32" for r in d["routes"]))
    assert env.refusal(doc, address) is None

    deleted_at = time.time()
    env.api.run(env.api.controller.delete_rule("fip", "fip-eip-a"))
    doc = env.speaker.wait_status(lambda d: env.held(d, address) is not None)
    assert "not bound" in (env.held(doc, address) or "")
    withdrawn = env.monitor.wait(f"{address}/32", added=False, since=mark, timeout=DEADLINE)
    # Kept for the hold-down, counted from a selection that can only come after the delete.
    assert withdrawn.at - deleted_at >= HOLD_DOWN
    doc = env.speaker.wait_status(lambda d: env.refusal(d, address) is not None)
    assert env.refusal(doc, address) == "not bound: no FIP/SNAT/DNAT rule references it (spec.eip)"

    uid = env.api.get("iptables-eips", "eip-a")["metadata"]["uid"]
    events = wait_events(env, "eip-a", {"Announced", "Withdrawn"})
    assert events["Announced"]["message"] == f"announced {address}/32 over BGP by {GW}"
    assert events["Announced"]["type"] == "Normal"
    assert events["Announced"]["involvedObject"]["uid"] == uid
    assert events["Announced"]["source"]["component"] == "bgp-speaker"
    assert events["Withdrawn"]["message"] == f"withdrawn from BGP by {GW}"
    assert events["Withdrawn"]["involvedObject"]["uid"] == uid


def _set_ready_for_gateway(env: Env, *, ready: bool, redo: str | None = None) -> None:
    """kube-ovn-controller's redo write on every EIP and rule of gw1 (status only)."""

    def write() -> None:
        server = env.api.server
        for plural in ("iptables-eips", *ko.PLURAL_OF.values()):
            for obj in server.list(plural):
                owner = (
                    obj["spec"].get("natGwDp") if plural == "iptables-eips" else obj["status"].get("natGwDp")
                )
                if owner == GW:
                    status: dict[str, Any] = {"ready": ready}
                    if redo is not None:
                        status["redo"] = redo
                    server.patch(plural, obj["metadata"]["name"], {"status": status}, status=True)

    env.api.call(write)


def test_redo_cycle_within_the_hold_down_does_not_flap_at_the_core(env: Env) -> None:
    address = env.topo.eip(11)
    env.bind("eip-redo", address)
    env.wait_route(address)
    since = env.bird_since(address)
    mark = env.monitor.mark()

    # The gateway pod was re-created: everything of gw1 goes ready=false with a new redo ...
    _set_ready_for_gateway(env, ready=False, redo=ko.redo_stamp())
    doc = env.speaker.wait_status(lambda d: env.held(d, address) is not None)
    assert "not ready" in (env.held(doc, address) or "")
    assert env.core_has(address)
    # ... is re-applied, and goes ready=true again, within the hold-down.
    _set_ready_for_gateway(env, ready=True)
    doc = env.speaker.wait_status(lambda d: env.held(d, address) is None and env.refusal(d, address) is None)
    # Past the moment the hold-down would have ended: still there, never changed.
    time.sleep(HOLD_DOWN + 0.5)
    assert env.core_has(address)
    assert env.monitor.changes(f"{address}/32", since=mark) == []
    assert env.bird_since(address) == since


def test_other_gateway_claim_and_outside_pools_are_not_announced_with_reasons(env: Env) -> None:
    gw2 = env.topo.gateway(2)
    theirs, claimed = env.topo.eip(20), env.topo.eip(21)
    mark = env.monitor.mark()
    env.bind("eip-gw2", theirs, gateway=gw2.name)
    env.bind("eip-outside", OUTSIDE_POOLS)
    # natGwDp names gw1 but the controller's label says gw2: claims another gateway.
    env.api.call(
        env.api.server.apply, ko.eip("eip-claimed", gateway=GW, v4ip=claimed, label_gateway=gw2.name)
    )
    env.api.call(
        env.api.server.apply, ko.rule("fip", "fip-claimed", eip_name="eip-claimed", gateway=GW, v4ip=claimed)
    )
    doc = env.speaker.wait_status(
        lambda d: env.refusal(d, OUTSIDE_POOLS) is not None and env.refusal(d, claimed) is not None
    )
    assert "outside the allowed pools" in (env.refusal(doc, OUTSIDE_POOLS) or "")
    assert (env.refusal(doc, claimed) or "").startswith("claims another gateway: spec.natGwDp is 'gw1'")
    # Another gateway's EIP is that gateway's business: not announced here, and not reported.
    assert env.refusal(doc, theirs) is None
    text = env.speaker.status_text()
    for shown in ("iptables-eip/eip-outside", "outside the allowed pools", "iptables-eip/eip-claimed"):
        assert shown in text
    routes = kernel_routes(env.topo.core)
    for address in (theirs, claimed, OUTSIDE_POOLS):
        assert f"{address}/32" not in routes
        assert env.monitor.changes(f"{address}/32", since=mark) == []
    events = wait_events(env, "eip-outside", {"Refused"})
    assert events["Refused"]["type"] == "Warning"
    assert "outside the allowed pools" in events["Refused"]["message"]


def test_api_server_outage_keeps_the_routes_and_shows_staleness(env: Env) -> None:
    address, later = env.topo.eip(12), env.topo.eip(13)
    env.bind("eip-outage", address)
    env.wait_route(address)
    mark = env.monitor.mark()

    env.api.go_down()
    try:

        def stale(d: dict[str, Any]) -> bool:
            source = d["source"]
            return bool(source["error"]) and (source["stale_seconds"] or 0) >= 3.0

        doc = env.speaker.wait_status(stale)
        assert "cannot reach the API server" in doc["source"]["error"]
        assert doc["health"]["ready"] is True
        assert any(n.startswith("source error:") for n in doc["health"]["notes"])
        assert env.core_has(address)
    finally:
        env.api.come_up()

    def connected(d: dict[str, Any]) -> bool:
        resources = d["source"]["details"]["resources"].values()
        return d["source"]["error"] is None and all(r["connected"] for r in resources)

    env.speaker.wait_status(connected, timeout=60)
    env.bind("eip-after-outage", later)
    env.wait_route(later)
    assert env.core_has(address)
    assert env.monitor.changes(f"{address}/32", since=mark) == []
