"""The drop-in end to end: the daemon started the way Kube-OVN starts kube-ovn-speaker, then
reconfigured live through its ConfigMap.

``python -m bgp_speaker kube-ovn-compat --nat-gw-mode --cluster-as=... --neighbor-address=...``
with env ``GATEWAY_NAME``/``POD_IP``/``POD_IPS`` runs in gw1's namespace with only a default
container's capabilities (no NET_ADMIN, as upstream's sidecar), against BIRD in the core namespace
over an IPv4 and an IPv6 session, and the API server double listening inside gw1's namespace
(tests/lab/kubelab.py). BIRD's per-protocol ``since`` proves which sessions were (not) reset.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.base import Neighbor, kernel_routes, wait_for
from tests.lab.kubelab import KubeApi
from tests.lab.netns import Lab
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology, build

pytestmark = pytest.mark.integration

GW = "gw1"
NS = "kube-system"
CM = "bgp-speaker"
DEADLINE = 30.0
ANNOTATION = "ovn.kubernetes.io/bgp"
#: Docker's and containerd's default capability set: what upstream's sidecar runs with.
DEFAULT_CAPS = (
    "chown,dac_override,fowner,fsetid,kill,setgid,setuid,setpcap,net_bind_service,net_raw,"
    "sys_chroot,mknod,audit_write,setfcap"
)
CAP_NET_ADMIN = 12


@dataclass
class Env:
    topo: Topology
    gw1: Gateway
    api: KubeApi
    speaker: SpeakerProcess

    @property
    def bird(self) -> Any:
        return self.topo.router

    def since(self) -> dict[str, str]:
        """BIRD's session timestamp per gateway address: unchanged means never reset."""
        return {a: self.bird.peer_state(a).since for a in (self.gw1.net1_v4, self.gw1.net1_v6)}

    def settled_since(self) -> dict[str, str]:
        """The baseline for "never reset": both sessions established and their timestamps steady
        (BIRD moves it by a millisecond or so while a session finishes coming up)."""
        addresses = (self.gw1.net1_v4, self.gw1.net1_v6)
        wait_for(
            lambda: all(self.bird.peer_state(a).established for a in addresses),
            timeout=DEADLINE,
            message="both BGP sessions established at BIRD",
        )
        last: dict[str, str] = {}

        def steady() -> bool:
            nonlocal last
            now = self.since()
            same, last = now == last, now
            return same

        wait_for(steady, timeout=DEADLINE, interval=0.5, message="steady session timestamps at BIRD")
        return last

    def set_configmap(self, data: dict[str, str]) -> None:
        def write() -> None:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CM, "namespace": NS}}
            self.api.server.apply({**body, "data": data})

        self.api.call(write)

    def route(self, address: str) -> Any:
        for route in self.bird.routes(family=4):
            if route.prefix == f"{address}/32":
                return route
        return None

    def gateway_events(self, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.api.events(kind="VpcNatGateway", name=GW) if e["reason"] == reason]

    def metrics(self) -> str:
        url = f"{self.speaker.url}/metrics"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        return self.gw1.ns.run([sys.executable, "-c", code]).stdout


@pytest.fixture(scope="module")
def env(lab_requirements: None) -> Iterator[Env]:
    with Lab() as lab:
        topo = build(lab, gateways=1, router=None)
        gw1 = topo.gateway(1)
        topo.start_router(
            "bird",
            neighbors=[
                topo.neighbor(gw1, ipv6=False),
                Neighbor(address=gw1.net1_v6, remote_as=topo.gateway_as, ipv4=False),
            ],
        )
        with KubeApi(gw1.ns) as api:
            api.run(api.controller.create_gateway(GW, lan_ip=gw1.eth0_v4))
            speaker = SpeakerProcess(ns=gw1.ns, workdir=lab.tmpdir("compat"), config={})
            env = Env(topo=topo, gw1=gw1, api=api, speaker=speaker)
            env.set_configmap({"defaults.yaml": f"pools: [{topo.eip_pool_v4}, {topo.eip_pool_v6}]\n"})
            argv = [
                # the default container capabilities, nothing more (bounding set of the exec'd daemon)
                "setpriv",
                "--bounding-set",
                "-all," + ",".join(f"+{c}" for c in DEFAULT_CAPS.split(",")),
                "--",
                sys.executable,
                "-m",
                "bgp_speaker",
                "kube-ovn-compat",
                # exactly what kube-ovn-controller generates, plus the documented --kubeconfig
                "--nat-gw-mode",
                f"--cluster-as={topo.gateway_as}",
                f"--neighbor-as={topo.core_as}",
                f"--neighbor-address={topo.core_v4}",
                f"--neighbor-ipv6-address={topo.core_v6}",
                "--holdtime=9s",
                f"--kubeconfig={api.kubeconfig}",
            ]
            environ = {
                "GATEWAY_NAME": GW,
                "POD_IP": gw1.eth0_v4,
                "POD_IPS": gw1.eth0_v4,
                "POD_NAMESPACE": NS,
                "KUBE_NODE_NAME": "node-1",
                "BGP_SPEAKER_SHUTDOWN__DRAIN_SECONDS": "0.5",
            }
            with speaker.log_path.open("ab") as log:
                speaker.proc = gw1.ns.popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environ)
            try:
                speaker.wait_status(
                    lambda d: len(d["peers"]) == 2 and speaker.established(d) and d["source"]["synced"],
                    timeout=60,
                )
                yield env
            finally:
                speaker.stop()


def test_announces_annotated_eips_without_net_admin(env: Env) -> None:
    assert env.speaker.proc is not None
    proc_status = Path(f"/proc/{env.speaker.proc.pid}/status").read_text(encoding="ascii")
    cap_line = next(line for line in proc_status.splitlines() if line.startswith("CapEff:"))
    assert not int(cap_line.split()[1], 16) & (1 << CAP_NET_ADMIN), "the daemon must run without NET_ADMIN"

    annotated, plain = env.topo.eip(10), env.topo.eip(11)
    env.api.run(
        env.api.controller.create_eip("eip-a", gateway=GW, v4ip=annotated, annotations={ANNOTATION: "true"})
    )
    env.api.run(env.api.controller.create_eip("eip-b", gateway=GW, v4ip=plain))
    wait_for(
        lambda: kernel_routes(env.topo.core).get(f"{annotated}/32") == env.gw1.net1_v4,
        timeout=DEADLINE,
        message=f"{annotated}/32 via gw1's net1 at the core",
    )
    doc = env.speaker.wait_status(lambda d: any(r["address"] == plain for r in d["refused"]))
    assert env.route(plain) is None
    assert doc["capabilities"]["net_admin"] is False
    assert doc["capabilities"]["degraded"] == []
    assert doc["config"]["valid"] is True
    assert doc["config"]["overlays"] == ["defaults.yaml"]

    env.speaker.wait_status(lambda d: all(p["state"] == "established" for p in d["peers"]))
    metrics = env.metrics()
    for address in (env.topo.core_v4, env.topo.core_v6):
        labels = f'node="node-1",peer="{address}",peer_asn="{env.topo.core_as}"'
        assert f"kube_ovn_speaker_bgp_peer_up{{{labels}}} 1.0" in metrics
        assert f"kube_ovn_speaker_bgp_peer_session_state{{{labels}}} 6.0" in metrics
        assert f"kube_ovn_speaker_bgp_peer_flap_count{{{labels}}} 0.0" in metrics
    assert "bgp_speaker_config_valid 1.0" in metrics


def test_a_new_community_reaches_the_core_without_a_session_reset(env: Env) -> None:
    address = env.topo.eip(10)
    wait_for(lambda: env.route(address), timeout=DEADLINE, message="the annotated EIP at BIRD")
    before = env.settled_since()
    env.set_configmap(
        {
            "defaults.yaml": f"pools: [{env.topo.eip_pool_v4}, {env.topo.eip_pool_v6}]\n"
            "announce: {communities: ['65001:100']}\n"
        }
    )
    route = wait_for(
        lambda: (r := env.route(address)) is not None and "65001:100" in r.communities and r,
        timeout=DEADLINE,
        message="the community on the route at BIRD",
    )
    assert route.next_hop == env.gw1.net1_v4
    assert env.since() == before, "no BGP session may reset for a route-level change"
    doc = env.speaker.wait_status(
        lambda d: d["config"]["last_changes"].get("route") == ["announce.communities"]
    )
    assert doc["config"]["last_changes"]["peers"] == []
    wait_for(lambda: env.gateway_events("ConfigApplied"), timeout=DEADLINE, message="a ConfigApplied Event")


def test_a_hold_time_change_resets_only_that_peer_with_an_event(env: Env) -> None:
    address = env.topo.eip(10)
    core_v4, core_v6 = env.topo.core_v4, env.topo.core_v6
    before = env.settled_since()
    env.set_configmap(
        {
            "defaults.yaml": f"pools: [{env.topo.eip_pool_v4}, {env.topo.eip_pool_v6}]\n"
            "announce: {communities: ['65001:100']}\n",
            f"gateway.{GW}.yaml": "peers:\n"
            f"- {{address: {core_v4}, asn: {env.topo.core_as}, hold_time: 9, families: [ipv4]}}\n"
            f"- {{address: '{core_v6}', asn: {env.topo.core_as}, hold_time: 12, families: [ipv6]}}\n",
        }
    )
    v6 = env.gw1.net1_v6
    wait_for(
        lambda: (s := env.bird.peer_state(v6)).established and s.since != before[v6],
        timeout=DEADLINE,
        message="the IPv6 session re-established",
    )
    after = env.since()
    assert after[env.gw1.net1_v4] == before[env.gw1.net1_v4], "the IPv4 session must not reset"
    events = wait_for(lambda: env.gateway_events("PeerReset"), timeout=DEADLINE, message="a PeerReset Event")
    assert any(core_v6 in e["message"] and "hold_time" in e["message"] for e in events)
    assert all(core_v4 not in e["message"] for e in events)
    log = env.speaker.log_path.read_text(errors="replace")
    announced = log.index("resetting the BGP session")
    # ExaBGP logs this at start too: the reload's is the first one after our announcement.
    assert log.find("loaded new configuration successfully", announced) > announced, "logged, then reloaded"
    route = env.route(address)
    assert route is not None
    assert "65001:100" in route.communities


def test_a_bad_configmap_keeps_the_last_good_config_and_says_why(env: Env) -> None:
    address = env.topo.eip(10)
    before = env.settled_since()
    env.set_configmap({"defaults.yaml": "announce: {med: many}\n"})
    doc = env.speaker.wait_status(lambda d: d["config"]["valid"] is False)
    assert "announce.med" in doc["config"]["error"]
    assert "many" in doc["config"]["error"]
    events = wait_for(lambda: env.gateway_events("ConfigInvalid"), timeout=DEADLINE, message="ConfigInvalid")
    assert "announce.med" in events[0]["message"]
    assert "bgp_speaker_config_valid 0.0" in env.metrics()
    route = env.route(address)
    assert route is not None
    assert "65001:100" in route.communities, "the last good configuration keeps running"
    assert env.since() == before
    text = env.speaker.status_text()
    assert "config: ConfigMap version" in text
    assert "REJECTED: " in text
    assert "announce.med" in text
