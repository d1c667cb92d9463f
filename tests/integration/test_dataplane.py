"""The data-plane reader and gating against real iptables (legacy and nft) and nftables.

Each test builds a gateway namespace shaped by nat-gateway.sh (tests/lab/natgw.py) and reads it
with :class:`DataplaneWatcher` from outside (``ip netns exec``) or, for the capability and CPU
checks, from a reader process started inside the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bgp_speaker.adapters.dataplane import DataplaneWatcher
from bgp_speaker.aiokit import Trigger
from bgp_speaker.core import gating
from bgp_speaker.core.model import Candidate
from bgp_speaker.core.natrules import RuleKind
from tests.lab.natgw import Backend, NatGateway
from tests.lab.netns import Lab

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

ROOT = Path(__file__).resolve().parents[2]
EIP1 = IPv4Address("203.0.113.10")
EIP2 = IPv4Address("203.0.113.11")
DEADLINE = 30.0


@contextlib.contextmanager
def gateway_namespace(tag: str) -> Iterator[str]:
    """A namespace with eth0 (VPC) and net1 (external) like a gateway pod; always removed."""
    with Lab() as lab:
        gw, outside = lab.add_ns(tag), lab.add_ns(f"{tag}-out")
        lab.veth(gw, "eth0", outside, "vpc0")
        lab.veth(gw, "net1", outside, "ext0")
        gw.add_addr("eth0", "10.0.1.254/24")
        gw.add_addr("net1", "10.99.0.11/24")
        yield gw.name


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def in_thread(func: Callable[[], None]) -> None:
    await asyncio.to_thread(func)


@contextlib.asynccontextmanager
async def watching(
    watcher: DataplaneWatcher, trigger: Trigger, *, on_trigger: Callable[[], object] | None = None
) -> AsyncIterator[None]:
    """Run the watcher (and, like the app, a pass of ``on_trigger`` after every pull)."""

    async def passes() -> None:
        while True:
            await trigger.wait()
            if on_trigger is not None:
                on_trigger()

    tasks = [asyncio.create_task(watcher.run(trigger=trigger)), asyncio.create_task(passes())]
    try:
        yield None
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def installed(watcher: DataplaneWatcher) -> frozenset[IPv4Address]:
    view = watcher.snapshot().view
    return view.installed() if view is not None else frozenset()


@pytest.mark.parametrize("backend", [Backend.LEGACY, Backend.NFT])
async def test_view_follows_every_rule_kind(backend: Backend) -> None:
    with gateway_namespace("dv") as ns:
        gw = NatGateway(ns, backend=backend, gateway_v4="10.99.0.1")
        await in_thread(gw.init)
        for eip in ("203.0.113.10/24", "203.0.113.11/24", "203.0.113.12/24", "203.0.113.13/24"):
            await in_thread(lambda eip=eip: gw.eip_add(eip))
        # Slow polling on the nft backend: only the monitor can make the changes visible in time.
        poll = 0.2 if backend is Backend.LEGACY else 3600.0
        watcher = DataplaneWatcher(poll_seconds=poll, exec_prefix=("ip", "netns", "exec", ns))
        trigger = Trigger()
        async with watching(watcher, trigger):
            await wait_for(lambda: watcher.snapshot().capable is True, "first read")
            snap = watcher.snapshot()
            assert snap.backend == backend.value
            assert snap.view is not None
            assert snap.view.initialized
            assert snap.view.rules == {}
            if backend is Backend.NFT:
                await wait_for(lambda: watcher.snapshot().monitor, "nft monitor running")

            await in_thread(lambda: gw.floating_ip_add("203.0.113.10", "10.0.1.5"))
            await in_thread(lambda: gw.dnat_add("203.0.113.11", "8080", "tcp", "10.0.1.6", "80"))
            await in_thread(lambda: gw.snat_add("203.0.113.12", "10.0.1.0/24", random_fully=True))
            await in_thread(lambda: gw.nft_dnat_map_add("203.0.113.13", 443, "tcp", ["10.0.1.7:443"]))
            pulls = trigger.pulls
            await wait_for(lambda: len(installed(watcher)) == 4, "all four EIPs installed")
            view = watcher.snapshot().view
            assert view is not None
            assert {a: set(k) for a, k in view.rules.items()} == {
                IPv4Address("203.0.113.10"): {RuleKind.FIP},
                IPv4Address("203.0.113.11"): {RuleKind.DNAT},
                IPv4Address("203.0.113.12"): {RuleKind.SNAT},
                IPv4Address("203.0.113.13"): {RuleKind.SHARE_DNAT},
            }
            await wait_for(lambda: trigger.pulls > pulls, "trigger pulled on change")

            await in_thread(lambda: gw.floating_ip_del("203.0.113.10"))
            await in_thread(lambda: gw.nft_dnat_map_del("203.0.113.13", 443, "tcp"))
            await wait_for(
                lambda: installed(watcher) == {IPv4Address("203.0.113.11"), IPv4Address("203.0.113.12")},
                "deleted rules gone from the view",
            )
            # Unchanged tables do not pull the trigger again.
            reads, pulls = watcher.snapshot().reads, trigger.pulls
            if backend is Backend.LEGACY:
                await wait_for(lambda: watcher.snapshot().reads >= reads + 3, "more polls")
                assert trigger.pulls == pulls


@pytest.mark.parametrize("backend", [Backend.LEGACY, Backend.NFT])
async def test_require_gating_end_to_end(backend: Backend) -> None:
    """bound without rule -> refused; rule added -> kept; redo within hold-down -> never dropped;
    rule removed -> dropped once the hold-down has passed."""
    hold_down = 20.0
    candidates = (Candidate(address=EIP1, origin="iptables-eip/eip-1"),
                  Candidate(address=EIP2, origin="iptables-eip/eip-2"))  # fmt: skip
    with gateway_namespace("dg") as ns:
        gw = NatGateway(ns, backend=backend, gateway_v4="10.99.0.1")
        await in_thread(gw.init)
        await in_thread(lambda: gw.eip_add("203.0.113.10/24"))
        await in_thread(lambda: gw.eip_add("203.0.113.11/24"))
        watcher = DataplaneWatcher(poll_seconds=0.2, exec_prefix=("ip", "netns", "exec", ns))
        trigger = Trigger()
        history: list[gating.GatingResult] = []
        state: gating.GatingState | None = None

        def gate(now: float | None = None) -> gating.GatingResult:
            nonlocal state
            result = gating.gate(
                candidates,
                view=watcher.snapshot().view,
                mode="require",
                hold_down=hold_down,
                now=time.time() if now is None else now,
                previous=state,
            )
            state = result.state
            history.append(result)
            return result

        def kept() -> set[object]:
            return {c.address for c in gate().kept}

        async with watching(watcher, trigger, on_trigger=gate):
            await wait_for(lambda: watcher.snapshot().capable is True, "first read")
            first = gate()
            assert first.kept == ()
            assert {r.address for r in first.refusals} == {str(EIP1), str(EIP2)}
            assert all("no NAT rule installed" in r.reason for r in first.refusals)

            await in_thread(lambda: gw.floating_ip_add("203.0.113.10", "10.0.1.5"))
            await in_thread(lambda: gw.nft_dnat_map_add("203.0.113.11", 80, "tcp", ["10.0.1.6:80"]))
            await wait_for(lambda: kept() == {EIP1, EIP2}, "both EIPs kept once their rules exist")

            # Kube-OVN's redo: the rules disappear and come back within the hold-down.
            mark = len(history)
            await in_thread(lambda: gw.floating_ip_del("203.0.113.10"))
            await in_thread(lambda: gw.nft_dnat_map_del("203.0.113.11", 80, "tcp"))
            await wait_for(lambda: not installed(watcher), "rules removed seen by the watcher")
            assert kept() == {EIP1, EIP2}
            assert {o.address for o in history[-1].observations if o.held} == {str(EIP1), str(EIP2)}
            await in_thread(lambda: gw.floating_ip_add("203.0.113.10", "10.0.1.5"))
            await in_thread(lambda: gw.nft_dnat_map_add("203.0.113.11", 80, "tcp", ["10.0.1.6:80"]))
            await wait_for(lambda: installed(watcher) == {EIP1, EIP2}, "rules back")
            assert kept() == {EIP1, EIP2}
            assert all({c.address for c in r.kept} == {EIP1, EIP2} for r in history[mark:])

            # A real removal: kept while held, dropped once the hold-down has passed.
            await in_thread(lambda: gw.floating_ip_del("203.0.113.10"))
            await wait_for(lambda: EIP1 not in installed(watcher), "FIP removal seen")
            held = gate()
            assert {c.address for c in held.kept} == {EIP1, EIP2}
            assert held.next_deadline is not None
            dropped = gate(now=held.next_deadline)
            assert {c.address for c in dropped.kept} == {EIP2}
            [refusal] = dropped.refusals
            assert refusal.address == str(EIP1)
            assert refusal.reason == "bound in Kubernetes but no NAT rule installed in the gateway for 20 s"


READER = """
import asyncio, json, logging, sys
from bgp_speaker.adapters.dataplane import DataplaneWatcher
from bgp_speaker.core import gating
from bgp_speaker.core.model import Candidate
from ipaddress import ip_address

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")

async def main(reads):
    watcher = DataplaneWatcher(poll_seconds=2.0)
    for _ in range(reads):
        snap = await watcher.read()
    cands = [Candidate(address=ip_address("203.0.113.10"), origin="k8s")]
    result = gating.gate(cands, view=snap.view, mode="require", hold_down=5.0, now=0.0)
    print(json.dumps({"snapshot": snap.as_dict(), "kept": [str(c.address) for c in result.kept],
                      "active": result.active}))

asyncio.run(main(int(sys.argv[1])))
"""


def run_reader(ns: str, reads: int, *, drop_caps: bool) -> tuple[dict[str, object], str]:
    drop = (
        ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]
        if drop_caps
        else []
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *drop, sys.executable, "-c", READER, str(reads)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


@pytest.mark.parametrize("backend", [Backend.LEGACY, Backend.NFT])
def test_without_cap_net_admin_degrades_plainly(backend: Backend) -> None:
    with gateway_namespace("dc") as ns:
        gw = NatGateway(ns, backend=backend)
        gw.init()
        gw.eip_add("203.0.113.10/24")
        out, log = run_reader(ns, 3, drop_caps=True)
    snap = out["snapshot"]
    assert isinstance(snap, dict)
    assert snap["capable"] is False
    assert snap["view"] is None
    assert "CAP_NET_ADMIN is missing" in str(snap["reason"])
    # Gating is skipped: Kubernetes state decides.
    assert out["kept"] == ["203.0.113.10"]
    assert out["active"] is False
    # Said once, plainly, however many reads failed.
    warnings = [line for line in log.splitlines() if "NAT tables unreadable" in line]
    assert len(warnings) == 1, log


def test_read_cost(capsys: pytest.CaptureFixture[str]) -> None:
    """Measure the CPU of one read (reader processes + parsing) on a gateway with 64 EIPs."""
    reads = 40
    with gateway_namespace("dp") as ns:
        gw = NatGateway(ns, backend=Backend.NFT)
        gw.init()
        for i in range(64):
            eip = f"203.0.113.{10 + i}"
            gw.floating_ip_add(eip, f"10.0.1.{10 + i}")
        gw.nft_dnat_map_add("203.0.113.200", 443, "tcp", ["10.0.1.7:443", "10.0.1.8:443"])
        out, _ = run_reader(ns, reads, drop_caps=False)
    snap = out["snapshot"]
    assert isinstance(snap, dict)
    assert snap["capable"] is True
    assert snap["reads"] == reads
    view = snap["view"]
    assert isinstance(view, dict)
    assert isinstance(view["rules"], dict)
    assert len(view["rules"]) == 65
    cpu = float(str(snap["cpu_seconds"]))
    assert cpu > 0
    per_read_ms = cpu / reads * 1000
    with capsys.disabled():
        print(
            f"\n[dataplane read cost] {per_read_ms:.1f} ms CPU per read (64 FIPs + 1 share DNAT); "
            f"at poll_seconds=2: {per_read_ms / 2000 * 100:.2f} % of one core"
        )
