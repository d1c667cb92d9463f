"""``make demo``: a core router, two NAT gateways, one bgp-speaker each, real packets.

    DEMO_SECONDS=N   stop by itself after N seconds (default: run until Ctrl-C)
    DEMO_ROUTER=frr  use FRR instead of BIRD 2 as the core router

Everything lives in network namespaces created for this run and is removed at the end,
also on Ctrl-C or on an error.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.lab.base import kernel_routes, wait_for
from tests.lab.netns import Lab
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology, build

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def show(title: str, text: str) -> None:
    print(f"{DIM}$ {title}{RESET}")
    print(text.rstrip() or "(nothing)", flush=True)


def start_speaker(topo: Topology, gw: Gateway, eips: list[dict[str, Any]]) -> SpeakerProcess:
    speaker = SpeakerProcess.create(
        gw.ns,
        local_as=topo.gateway_as,
        peers=[{"address": topo.core_v4, "asn": topo.core_as, "description": "core"}],
        pools=[topo.eip_pool_v4, topo.eip_pool_v6],
        eips=eips,
        extra={"logging": {"level": "INFO"}},
    )
    return speaker.start()


def hold(seconds: float | None, *, until: str) -> None:
    """Keep the lab up: until Ctrl-C when ``seconds`` is None, else for ``seconds``."""
    if seconds is None:
        say(f"Running. Ctrl-C to {until}.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print()
    elif seconds > 0:
        say(f"Running for {seconds:.0f} s (DEMO_SECONDS)")
        time.sleep(seconds)


def wait(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    try:
        wait_for(predicate, timeout=timeout, interval=0.1, message=what)
    except TimeoutError:
        raise SystemExit(f"demo failed: timed out waiting for {what}") from None


def real_packets(topo: Topology, gw: Gateway, eip: str, *, eip_v6: str | None = None) -> None:
    """Ping and TCP from the external host to ``eip`` (and TCP to ``eip_v6``), DNAT'ed to ``gw``'s pod
    and back; the demo fails when the IPv4 path does not work."""
    say(f"Real packets: ext host {topo.ext_v4} -> EIP {eip} -> DNAT -> pod {gw.pod_v4}, and back")
    ok = topo.ping(topo.ext, eip)
    print(f"   ping {eip}: {'replies received' if ok else 'NO REPLY'}")
    reply, peer = topo.tcp_roundtrip(topo.ext, gw.pod, eip, payload="hello")
    print(f"   TCP to {eip}:8080 -> reply {reply!r}; the pod saw the client as {peer}")
    if eip_v6 is not None:
        reply6, _ = topo.tcp_roundtrip(topo.ext, gw.pod, eip_v6, payload="hello6")
        print(f"   TCP to [{eip_v6}]:8080 -> reply {reply6!r}")
    if not ok or reply != "hello":
        raise SystemExit("demo failed: the data path does not work")


def run(topo: Topology, *, seconds: float | None) -> None:
    gw1, gw2 = topo.gateways
    eip1, eip2, eip3 = topo.eip(10), topo.eip(20), topo.eip(30)
    eip1_v6 = topo.eip(0x10, family=6)
    proto = "bird" if getattr(topo.router, "kind", "bird") == "bird" else "bgp"  # kernel route protocol
    say(
        f"Lab: core router ({type(topo.router).__name__}) AS{topo.core_as}, "
        f"interconnect {topo.interconnect_v4}"
    )
    for gw in topo.gateways:
        print(f"   {gw.name}: net1 {gw.net1_v4} / {gw.net1_v6}, pod {gw.pod_v4} behind eth0")
    print(f"   EIP pools {topo.eip_pool_v4}, {topo.eip_pool_v6}: routed only, on no segment")

    say("NAT rules in the gateways (iptables DNAT/SNAT); the EIPs are configured on NO interface")
    topo.install_nat(gw1, eip=eip1)
    topo.install_nat(gw1, eip=eip1_v6)
    topo.install_nat(gw2, eip=eip2)
    show(f"ip -n {gw1.name} -brief address", gw1.ns.ip("-brief", "address").stdout)

    say("Starting one bgp-speaker per gateway (file source), each with ExaBGP as its child")
    s1 = start_speaker(topo, gw1, [{"ip": eip1}, {"ip": eip1_v6}, {"ip": "198.18.0.1"}])
    s2 = start_speaker(topo, gw2, [{"ip": eip2, "communities": ["65001:200"]}])
    wait(lambda: kernel_routes(topo.core).get(f"{eip1}/32") == gw1.net1_v4, f"{eip1}/32 via gw1 at the core")
    wait(lambda: kernel_routes(topo.core).get(f"{eip2}/32") == gw2.net1_v4, f"{eip2}/32 via gw2 at the core")
    wait(lambda: f"{eip1_v6}/128" in kernel_routes(topo.core, family=6), f"{eip1_v6}/128 at the core")
    show(
        f"ip -n core route show proto {proto}   # {topo.core.name}",
        topo.core.ip("route", "show", "proto", proto).stdout,
    )
    show(
        f"ip -n core -6 route show proto {proto}", topo.core.ip("-6", "route", "show", "proto", proto).stdout
    )

    real_packets(topo, gw1, eip1, eip_v6=eip1_v6)

    say(f"Live change: add {eip3} to gw2's EIP file; only the difference is announced")
    started = time.monotonic()
    s2.write_eips([{"ip": eip2, "communities": ["65001:200"]}, {"ip": eip3}])
    wait(lambda: kernel_routes(topo.core).get(f"{eip3}/32") == gw2.net1_v4, f"{eip3}/32 at the core")
    print(
        f"   {eip3}/32 via {gw2.net1_v4} in the core's kernel table "
        f"{1000 * (time.monotonic() - started):.0f} ms "
        "after the file was written (no session reset)"
    )

    say(f"bgp-speaker status   # inside {gw1.name}")
    print(s1.status_text().rstrip())

    hold(seconds, until="stop and tear everything down")

    say("Graceful stop of gw2's speaker: GRACEFUL_SHUTDOWN, drain, withdraw, exit")
    code = s2.stop()
    wait(lambda: f"{eip2}/32" not in kernel_routes(topo.core), f"{eip2}/32 withdrawn at the core")
    print(f"   speaker exited with {code}; the core no longer routes {eip2} or {eip3}")
    show(f"ip -n core route show proto {proto}", topo.core.ip("route", "show", "proto", proto).stdout)
    s1.stop()


def demo_options(target: str) -> tuple[float | None, Any]:
    """(DEMO_SECONDS, DEMO_ROUTER) of the environment; exits with 2 without root. From here on SIGTERM
    unwinds like Ctrl-C, so the lab is torn down."""
    if os.geteuid() != 0:
        print(f"make {target} needs root (network namespaces)", file=sys.stderr)
        raise SystemExit(2)
    seconds_text = os.environ.get("DEMO_SECONDS", "")
    seconds = float(seconds_text) if seconds_text else None
    router = os.environ.get("DEMO_ROUTER", "bird")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return seconds, router


def main() -> int:
    seconds, router = demo_options("demo")
    with Lab() as lab:
        topo = build(lab, gateways=2, router=router)
        run(topo, seconds=seconds)
        say("Tearing down the lab")
    print("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
