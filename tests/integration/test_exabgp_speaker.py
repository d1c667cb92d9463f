"""The real ExaBGP 5.0.15, run by our supervisor, peering over loopback with a real GoBGP receiver.

Everything stays on 127.0.0.0/8 of the test's own namespace, on ports picked free per run; the
receiver, ExaBGP, its relay and every temp dir are gone after each test, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from bgp_speaker.adapters.exabgp.speaker import ExabgpSpeaker
from bgp_speaker.core import exabgp_codec, exabgp_config
from bgp_speaker.core.model import Announce, IPNetwork, PeerState, Plan, RouteAttributes, Withdraw

pytestmark = pytest.mark.integration

DEADLINE = 60.0
LOCAL_AS, CORE_AS = 65001, 65000
NH4, NH6 = ip_address("10.99.0.11"), ip_address("fd00:99::11")
SPEAKER_ADDRESS = ip_address("127.0.0.1")


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class GoBgp:
    """A passive GoBGP on a loopback address: the core router that receives our routes."""

    address: IPv4Address
    port: int
    api_port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    def cli(self, *args: str) -> str:
        argv = ["gobgp", "-u", str(self.address), "-p", str(self.api_port), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout

    def routes(self, family: str) -> dict[IPNetwork, dict[str, Any]]:
        """prefix -> {next_hop, communities, large_communities, as_path, med}."""
        out = self.cli("global", "rib", "-a", family, "-j").strip()
        table = json.loads(out) if out and out != "null" else {}
        routes: dict[IPNetwork, dict[str, Any]] = {}
        for prefix, paths in table.items():
            info: dict[str, Any] = {"communities": [], "large_communities": [], "as_path": [], "med": None}
            for attr in paths[0]["attrs"]:
                if attr["type"] in (3, 14):  # NEXT_HOP, or MP_REACH_NLRI for IPv6
                    info["next_hop"] = attr["nexthop"]
                elif attr["type"] == 4:
                    info["med"] = attr["metric"]
                elif attr["type"] == 8:
                    info["communities"] = [f"{c >> 16}:{c & 0xFFFF}" for c in attr["communities"]]
                elif attr["type"] == 32:
                    info["large_communities"] = [
                        f"{v['ASN']}:{v['LocalData1']}:{v['LocalData2']}" for v in attr["value"]
                    ]
                elif attr["type"] == 2:
                    info["as_path"] = [asn for seg in attr["as_paths"] for asn in seg["asns"]]
            routes[ip_network(prefix)] = info
        return routes

    def log_tail(self) -> str:
        return (self.workdir / "gobgpd.log").read_text(errors="replace")[-2000:]


@pytest.fixture
def gobgp() -> Iterator[GoBgp]:
    address = IPv4Address(f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(2, 254)}")
    port, api_port = free_port(str(address)), free_port(str(address))
    workdir = Path(tempfile.mkdtemp(prefix="bgs-gobgp-"))
    config = textwrap.dedent(f"""\
        [global.config]
          as = {CORE_AS}
          router-id = "{address}"
          port = {port}
          local-address-list = ["{address}"]
        [[neighbors]]
          [neighbors.config]
            neighbor-address = "{SPEAKER_ADDRESS}"
            peer-as = {LOCAL_AS}
          [neighbors.transport.config]
            passive-mode = true
            local-address = "{address}"
          [neighbors.timers.config]
            hold-time = 9
          [[neighbors.afi-safis]]
            [neighbors.afi-safis.config]
              afi-safi-name = "ipv4-unicast"
          [[neighbors.afi-safis]]
            [neighbors.afi-safis.config]
              afi-safi-name = "ipv6-unicast"
        """)
    (workdir / "gobgpd.toml").write_text(config)
    with (workdir / "gobgpd.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                "gobgpd",
                "-f",
                str(workdir / "gobgpd.toml"),
                "--api-hosts",
                f"{address}:{api_port}",
                "-l",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    router = GoBgp(address=address, port=port, api_port=api_port, proc=proc, workdir=workdir)
    try:
        yield router
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def speaker(gobgp: GoBgp) -> AsyncIterator[ExabgpSpeaker]:
    # A second, iBGP neighbor that never comes up: ExaBGP stores its routes all the same.
    silent = ip_address(f"127.{gobgp.address.packed[1]}.{gobgp.address.packed[2]}.1")
    session = exabgp_config.SessionConfig(
        router_id=SPEAKER_ADDRESS,
        local_as=LOCAL_AS,
        relay_command=(),
        neighbors=(
            exabgp_config.NeighborConfig(
                address=gobgp.address, peer_as=CORE_AS, port=gobgp.port, local_address=SPEAKER_ADDRESS
            ),
            exabgp_config.NeighborConfig(
                address=silent, peer_as=LOCAL_AS, port=free_port("127.0.0.1"), local_address=SPEAKER_ADDRESS
            ),
        ),
    )
    sp = ExabgpSpeaker(session=session, restart_backoff_max=1.0)
    await sp.start()  # defaults: checked as the unprivileged user, with the system python3 as fallback
    runner = asyncio.create_task(sp.run())
    try:
        await until(lambda: sp.peer_statuses()[gobgp.address].state is PeerState.ESTABLISHED, gobgp)
        yield sp
    finally:
        await sp.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        assert not sp.runtime_dir.exists()


async def until(condition: Callable[[], bool], gobgp: GoBgp | None = None) -> None:
    try:
        async with asyncio.timeout(DEADLINE):
            while not condition():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(
            "condition not met" + (f"; gobgpd log:\n{gobgp.log_tail()}" if gobgp else "")
        ) from None


def eips(count: int, *, v6: bool = False) -> tuple[IPNetwork, ...]:
    if v6:
        return tuple(ip_network(f"2001:db8:e1b::{i + 1:x}/128") for i in range(count))
    return tuple(ip_network(f"203.0.113.{i + 1}/32") for i in range(count))


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    )


async def test_routes_arrive_with_next_hop_and_communities(speaker: ExabgpSpeaker, gobgp: GoBgp) -> None:
    core = gobgp.address
    v4 = RouteAttributes(
        next_hop=NH4, communities=("65000:100", "65000:7"), large_communities=("65001:0:1",), med=20
    )
    v6 = RouteAttributes(next_hop=NH6, communities=("65000:100",), as_path_prepend=2)
    result = await speaker.apply(
        Plan(
            steps=(
                Announce(peer=core, attributes=v4, prefixes=eips(100)),
                Announce(core, v6, eips(3, v6=True)),
            )
        )
    )
    assert not result.rejected
    assert not result.interrupted
    assert sum(len(s.prefixes) for s in result.applied) == 103
    await until(lambda: len(gobgp.routes("ipv4")) == 100 and len(gobgp.routes("ipv6")) == 3, gobgp)
    route4 = gobgp.routes("ipv4")[ip_network("203.0.113.42/32")]
    assert route4["next_hop"] == "10.99.0.11"
    assert route4["communities"] == ["65000:7", "65000:100"]
    assert route4["large_communities"] == ["65001:0:1"]
    assert route4["med"] == 20
    assert route4["as_path"] == [LOCAL_AS]
    route6 = gobgp.routes("ipv6")[ip_network("2001:db8:e1b::2/128")]
    assert route6["next_hop"] == "fd00:99::11"
    assert route6["as_path"] == [LOCAL_AS] * 3
    # withdraw some, per family
    result = await speaker.apply(Plan(steps=(Withdraw(peer=core, prefixes=(*eips(10), *eips(1, v6=True))),)))
    assert len(result.applied) == 2
    await until(lambda: len(gobgp.routes("ipv4")) == 90 and len(gobgp.routes("ipv6")) == 2, gobgp)
    assert uid_of(speaker.pid or 0) != 0


ROUND_TRIP = [
    RouteAttributes(next_hop=NH4),
    RouteAttributes(next_hop=NH4, communities=("65535:0",), med=0, local_preference=0),
    RouteAttributes(
        next_hop=NH4, communities=("65535:65281", "1:2", "65000:100"), large_communities=("9:8:7", "1:2:3")
    ),
    RouteAttributes(next_hop=NH4, local_preference=4294967295, med=4294967295, as_path_prepend=1),
    RouteAttributes(next_hop=NH4, as_path_prepend=5, large_communities=("4294967295:0:4294967295",)),
    RouteAttributes(next_hop=NH6),
    RouteAttributes(next_hop=NH6, communities=("65000:1", "65000:2"), med=7, as_path_prepend=3),
]


async def test_read_rib_out_gives_back_what_was_announced(speaker: ExabgpSpeaker, gobgp: GoBgp) -> None:
    peers = list(speaker.peer_statuses())  # eBGP core and the silent iBGP neighbor
    steps = []
    expected: dict[Any, dict[IPNetwork, RouteAttributes]] = {peer: {} for peer in peers}
    for peer in peers:
        for i, attributes in enumerate(ROUND_TRIP):
            v6 = attributes.next_hop.version == 6
            prefix = ip_network(f"2001:db8:e1b::{i + 1:x}/128") if v6 else ip_network(f"203.0.113.{i + 1}/32")
            steps.append(Announce(peer=peer, attributes=attributes, prefixes=(prefix,)))
            expected[peer][prefix] = exabgp_codec.canonical(attributes)
    result = await speaker.apply(Plan(steps=tuple(steps)))
    assert len(result.applied) == len(steps)
    assert await speaker.read_rib_out() == expected


async def test_kill_9_of_exabgp_restarts_it_and_reapplying_restores(
    speaker: ExabgpSpeaker, gobgp: GoBgp
) -> None:
    core = gobgp.address
    plan = Plan(steps=(Announce(peer=core, attributes=RouteAttributes(next_hop=NH4), prefixes=eips(20)),))
    await speaker.apply(plan)
    await until(lambda: len(gobgp.routes("ipv4")) == 20, gobgp)
    old_pid, old_generation = speaker.pid, speaker.generation
    assert old_pid is not None
    restarted: list[int] = []
    speaker.on_restart = lambda: restarted.append(speaker.restarts)
    os.kill(old_pid, signal.SIGKILL)
    await until(lambda: speaker.restarts == 1 and speaker.available and speaker.generation > old_generation)
    assert restarted == [1]
    assert speaker.running
    assert speaker.pid not in (None, old_pid)
    rib = await speaker.read_rib_out()
    assert rib[core] == {}
    await until(lambda: speaker.peer_statuses()[core].state is PeerState.ESTABLISHED, gobgp)
    result = await speaker.apply(plan)
    assert result.applied == plan.steps
    await until(lambda: len(gobgp.routes("ipv4")) == 20, gobgp)
    assert (await speaker.read_rib_out())[core] == dict.fromkeys(eips(20), RouteAttributes(next_hop=NH4))


async def test_killed_relay_is_respawned_and_reconnects(speaker: ExabgpSpeaker, gobgp: GoBgp) -> None:
    core = gobgp.address
    await speaker.apply(
        Plan(steps=(Announce(peer=core, attributes=RouteAttributes(next_hop=NH4), prefixes=eips(5)),))
    )
    await until(lambda: len(gobgp.routes("ipv4")) == 5, gobgp)
    assert speaker.pid is not None
    (relay_pid,) = children_of(speaker.pid)
    generation = speaker.generation
    os.kill(relay_pid, signal.SIGKILL)
    await until(lambda: speaker.generation > generation and speaker.available)
    # no `up` event comes for a session already up: the state is learned by asking
    await until(lambda: speaker.peer_statuses()[core].state is PeerState.ESTABLISHED)
    assert speaker.restarts == 0
    assert len((await speaker.read_rib_out())[core]) == 5  # hazard 6: the routes stayed
    assert len(gobgp.routes("ipv4")) == 5


async def test_withdraw_all_then_stop(speaker: ExabgpSpeaker, gobgp: GoBgp) -> None:
    core = gobgp.address
    await speaker.apply(
        Plan(steps=(Announce(peer=core, attributes=RouteAttributes(next_hop=NH4), prefixes=eips(30)),))
    )
    await until(lambda: len(gobgp.routes("ipv4")) == 30, gobgp)
    assert await speaker.withdraw_all_and_wait(DEADLINE)
    await until(lambda: not gobgp.routes("ipv4"), gobgp)
    pid = speaker.pid
    assert pid is not None
    await speaker.stop()
    assert not alive(pid)


CHILD = """
import asyncio, sys
from ipaddress import ip_address
from pathlib import Path
from bgp_speaker.adapters.exabgp.speaker import ExabgpSpeaker
from bgp_speaker.core import exabgp_config as c

async def main():
    session = c.SessionConfig(router_id=ip_address("127.0.0.1"), local_as=65001, relay_command=(),
        neighbors=(c.NeighborConfig(address=ip_address(sys.argv[1]), peer_as=65000, port=int(sys.argv[2])),))
    sp = ExabgpSpeaker(session=session, runtime_dir=Path(sys.argv[3]))
    await sp.start()
    task = asyncio.create_task(sp.run())
    await sp.channel.wait_connected(60)
    print(sp.pid, flush=True)
    await task

asyncio.run(main())
"""


async def test_exabgp_dies_with_the_daemon() -> None:
    """PR_SET_PDEATHSIG is set after the privilege drop, so ExaBGP never outlives a SIGKILLed daemon."""
    port = free_port("127.0.0.1")
    rundir = Path(tempfile.mkdtemp(prefix="bgs-child-"))
    exabgp_pid = 0
    proc: asyncio.subprocess.Process | None = None
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            "127.0.0.3",
            str(port),
            str(rundir),
            stdout=asyncio.subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        assert proc.stdout is not None
        async with asyncio.timeout(DEADLINE):
            exabgp_pid = int(await proc.stdout.readline())
        assert alive(exabgp_pid)
        assert uid_of(exabgp_pid) != 0
        proc.kill()
        await proc.wait()
        await until(lambda: not alive(exabgp_pid))
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        if exabgp_pid and alive(exabgp_pid):
            os.kill(exabgp_pid, signal.SIGKILL)
        shutil.rmtree(rundir, ignore_errors=True)
