"""``make demo-kube``: the lab of ``make demo``, with EIPs and NAT rules as Kube-OVN objects.

A Kubernetes API server (the test double, real HTTP) runs in this process with its listening
socket inside gw1's namespace, where gw1's bgp-speaker reaches it, as a NAT gateway pod reaches
the API server over its API attachment. A scripted kube-ovn-controller writes IptablesEIP and
IptablesFIPRule objects in the controller's order and runs the nat-gateway.sh commands in the
gateway (tests/lab/natgw.py), so the gateway's iptables look like Kube-OVN's.

    DEMO_SECONDS=N   stop by itself after N seconds (default: run until Ctrl-C)
    DEMO_ROUTER=frr  use FRR instead of BIRD 2 as the core router

Everything lives in network namespaces created for this run and is removed at the end,
also on Ctrl-C or on an error.
"""

from __future__ import annotations

import ipaddress
import time

from tests.lab.base import kernel_routes
from tests.lab.demo import demo_options, hold, real_packets, say, show, wait
from tests.lab.kubelab import KubeApi
from tests.lab.natgw import NatGateway
from tests.lab.netns import Lab
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology, build

HOLD_DOWN = 5.0
EIP_NAME, FIP_NAME = "eip-web", "fip-web"


def describe_eip(api: KubeApi, name: str) -> str:
    obj = api.get("iptables-eips", name)
    spec, status = obj["spec"], obj.get("status", {})
    return (
        f"{'NAME':<10} {'V4IP':<14} {'NATGWDP':<8} {'READY':<6} NAT\n"
        f"{name:<10} {spec.get('v4ip', ''):<14} {spec.get('natGwDp', ''):<8} "
        f"{str(status.get('ready', False)).lower():<6} {status.get('nat', '')}"
    ).rstrip()


def describe_events(api: KubeApi, name: str) -> str:
    rows = [
        f"  {e['type']:<8} {e['reason']:<10} {e.get('count', 1):>3}x  "
        f"{e['source']['component']}  {e['message']}"
        for e in api.events(name=name)
    ]
    return "\n".join(["Events:", *rows]) if rows else "Events: <none>"


def nat_chains(natgw: NatGateway) -> str:
    keep = ("-A EXCLUSIVE_DNAT", "-A EXCLUSIVE_SNAT")
    return "\n".join(line for line in natgw.save().splitlines() if line.startswith(keep))


def start_speaker(topo: Topology, gw: Gateway, api: KubeApi) -> SpeakerProcess:
    speaker = SpeakerProcess.create(
        gw.ns,
        local_as=topo.gateway_as,
        peers=[{"address": topo.core_v4, "asn": topo.core_as, "description": "core"}],
        pools=[topo.eip_pool_v4, topo.eip_pool_v6],
        source=api.source_config(gateway=gw.name, policy="bound", hold_down_seconds=HOLD_DOWN),
        extra={"logging": {"level": "INFO"}},
    )
    speaker.start()
    wait(lambda: speaker.established() and speaker.status()["source"]["synced"], "the speaker in sync")
    return speaker


def refusal(speaker: SpeakerProcess, address: str) -> str | None:
    return next((r["reason"] for r in speaker.status()["refused"] if r["address"] == address), None)


def run(topo: Topology, api: KubeApi, *, seconds: float | None) -> None:
    gw1, gw2 = topo.gateways
    eip1, eip2 = topo.eip(10), topo.eip(20)
    pool_len = ipaddress.ip_network(topo.eip_pool_v4).prefixlen
    ctl = api.controller
    proto = "bird" if getattr(topo.router, "kind", "bird") == "bird" else "bgp"
    say(
        f"Lab: core router ({type(topo.router).__name__}) AS{topo.core_as}, "
        f"interconnect {topo.interconnect_v4}"
    )
    for gw in topo.gateways:
        print(f"   {gw.name}: net1 {gw.net1_v4}, pod {gw.pod_v4} behind eth0")
    print(f"   Kubernetes API server on 127.0.0.1:{api.port} inside {gw1.name}'s namespace")

    say("kube-ovn-controller: VpcNatGateway objects, and nat-gateway.sh init in each gateway")
    natgws = {}
    for gw in topo.gateways:
        api.run(ctl.create_gateway(gw.name, lan_ip=gw.eth0_v4))
        natgws[gw.name] = NatGateway(gw.ns.name, gateway_v4=topo.core_v4)
        natgws[gw.name].init()
    print(
        "   vpc-nat-gateways: "
        + ", ".join(o["metadata"]["name"] for o in api.call(api.server.list, "vpc-nat-gateways"))
    )

    say(
        f"Starting bgp-speaker in {gw1.name} (source: kubernetes, policy: bound, hold-down {HOLD_DOWN:.0f} s)"
    )
    speaker = start_speaker(topo, gw1, api)
    print(f"   session with the core established; watching Kube-OVN objects for gateway {gw1.name}")

    say(f"kubectl create iptables-eip {EIP_NAME} (natGwDp: {gw1.name}): ready, but bound to nothing yet")
    api.run(ctl.create_eip(EIP_NAME, gateway=gw1.name, v4ip=eip1))
    natgws[gw1.name].eip_add(f"{eip1}/{pool_len}")
    api.run(ctl.create_eip("eip-other", gateway=gw2.name, v4ip=eip2))
    natgws[gw2.name].eip_add(f"{eip2}/{pool_len}")
    show(
        "kubectl get iptables-eips",
        describe_eip(api, EIP_NAME) + "\n" + describe_eip(api, "eip-other").split("\n")[1],
    )
    wait(lambda: refusal(speaker, eip1), f"the speaker to report {EIP_NAME}")
    print(f"   not announced: {refusal(speaker, eip1)}")
    print(f"   eip-other belongs to {gw2.name}: gw1's speaker leaves it alone")

    say(f"kubectl create iptables-fip-rule {FIP_NAME}: {eip1} -> pod {gw1.pod_v4}")
    natgws[gw1.name].floating_ip_add(eip1, gw1.pod_v4)  # the controller programs the gateway first,
    started = time.monotonic()
    api.run(ctl.create_rule("fip", FIP_NAME, eip_name=EIP_NAME, internal=gw1.pod_v4))  # then readies
    wait(lambda: kernel_routes(topo.core).get(f"{eip1}/32") == gw1.net1_v4, f"{eip1}/32 via gw1 at the core")
    print(
        f"   {eip1}/32 via {gw1.net1_v4} in the core's kernel table "
        f"{1000 * (time.monotonic() - started):.0f} ms after the rule was created (and readied)"
    )
    show(
        f"ip -n core route show proto {proto}   # {topo.core.name}",
        topo.core.ip("route", "show", "proto", proto).stdout,
    )
    show(f"iptables -t nat -S   # in {gw1.name}, as nat-gateway.sh left it", nat_chains(natgws[gw1.name]))
    show("kubectl get iptables-eips", describe_eip(api, EIP_NAME))

    real_packets(topo, gw1, eip1)

    say(f"bgp-speaker status   # inside {gw1.name}")
    print(speaker.status_text().rstrip())
    wait(lambda: any(e["reason"] == "Announced" for e in api.events(name=EIP_NAME)), "the Announced Event")
    show(f"kubectl describe iptables-eip {EIP_NAME}   # (Events)", describe_events(api, EIP_NAME))

    hold(seconds, until="delete the FIP rule, and tear everything down")

    say(
        f"kubectl delete iptables-fip-rule {FIP_NAME}: held for {HOLD_DOWN:.0f} s "
        "(rides a redo or a replaced rule), then withdrawn"
    )
    natgws[gw1.name].floating_ip_del(eip1)
    started = time.monotonic()
    api.run(ctl.delete_rule("fip", FIP_NAME))
    wait(
        lambda: any(h["address"] == eip1 for h in speaker.status()["source"]["details"].get("held", [])),
        "the hold-down",
    )
    held = next(h for h in speaker.status()["source"]["details"]["held"] if h["address"] == eip1)
    print(f"   {held['reason']}")
    wait(
        lambda: f"{eip1}/32" not in kernel_routes(topo.core),
        f"{eip1}/32 withdrawn at the core",
        timeout=HOLD_DOWN + 30,
    )
    print(f"   withdrawn {time.monotonic() - started:.1f} s after the delete; now: {refusal(speaker, eip1)}")
    show(f"ip -n core route show proto {proto}", topo.core.ip("route", "show", "proto", proto).stdout)
    wait(lambda: any(e["reason"] == "Withdrawn" for e in api.events(name=EIP_NAME)), "the Withdrawn Event")
    show(f"kubectl describe iptables-eip {EIP_NAME}   # (Events)", describe_events(api, EIP_NAME))

    say("Graceful stop of the speaker")
    code = speaker.stop()
    print(f"   speaker exited with {code}")


def main() -> int:
    seconds, router = demo_options("demo-kube")
    with Lab() as lab:
        topo = build(lab, gateways=2, router=router)
        with KubeApi(topo.gateway(1).ns) as api:
            run(topo, api, seconds=seconds)
        say("Tearing down the lab")
    print("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
