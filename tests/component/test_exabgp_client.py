"""ApiChannel, ExabgpSpeaker and the relay against a scripted fake ExaBGP over a real Unix socket.

The fake plays ExaBGP's side of the relay connection. It enforces the rules the real one needs:
only queued command kinds, printable ASCII, one command per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from bgp_speaker import settings as settings_mod
from bgp_speaker.adapters.exabgp import client, relay
from bgp_speaker.adapters.exabgp.session_config import render_config
from bgp_speaker.adapters.exabgp.speaker import ExabgpSpeaker
from bgp_speaker.core import exabgp_config
from bgp_speaker.core.model import Announce, IPNetwork, PeerState, Plan, RouteAttributes, Withdraw
from bgp_speaker.errors import CommandRejected, ConfigError, SpeakerUnavailable

PEER = ip_address("192.0.2.1")
NH = ip_address("10.99.0.11")
DEADLINE = 60.0
Responder = Callable[[str], list[str] | None]

STATE_UP = (
    '{ "exabgp": "5.0.0", "type": "state", "neighbor": { "address": { "local": "10.99.0.11", '
    '"peer": "192.0.2.1" }, "asn": { "local": 65001, "peer": 65000 }, "state": "%s" } }'
)
NEIGHBORS_UP = '[{"state": "up", "fsm": "ESTABLISHED", "peer": {"address": "192.0.2.1", "as": 65000}}]'


def always_done(line: str) -> list[str] | None:
    if line == "show neighbor json":
        return ["[]", "done"]
    return ["done"]


class FakeExabgp:
    """ExaBGP's end of the relay connection, answering each command with ``responder``."""

    def __init__(self, path: Path, responder: Responder = always_done) -> None:
        self.path = path
        self.responder = responder
        self.received: list[str] = []
        self.violations: list[str] = []
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        self._writer = writer
        self._task = asyncio.create_task(self._serve(reader))

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        while raw := await reader.readline():
            line = raw.decode("ascii", "replace").rstrip("\n")
            if not line.isascii() or not line.isprintable():
                self.violations.append(f"not printable ASCII: {line!r}")
            words = line.split()
            kind = words[2] if words[:1] == ["neighbor"] and len(words) > 2 else (words[0] if words else "")
            if kind not in client.QUEUED_KINDS:
                self.violations.append(f"not a queued kind: {line!r}")
            self.received.append(line)
            answer = self.responder(line)
            if answer is None:
                continue
            await self.send(answer)

    async def send(self, lines: list[str]) -> None:
        assert self._writer is not None
        self._writer.write("".join(f"{line}\n" for line in lines).encode())
        await self._writer.drain()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._task


@pytest.fixture
def rundir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bgs-"))  # short: Unix socket paths are limited to 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def channel(rundir: Path) -> AsyncIterator[client.ApiChannel]:
    ch = client.ApiChannel(rundir / "api.sock", ack_timeout=5.0)
    await ch.start()
    yield ch
    await ch.close()


async def connect(path: Path, responder: Responder = always_done) -> FakeExabgp:
    fake = FakeExabgp(path, responder)
    await fake.connect()
    return fake


def session() -> exabgp_config.SessionConfig:
    return exabgp_config.SessionConfig(
        router_id=NH,
        local_as=65001,
        relay_command=(),
        neighbors=(exabgp_config.NeighborConfig(address=PEER, peer_as=65000),),
    )


@pytest.fixture
async def speaker(rundir: Path) -> AsyncIterator[ExabgpSpeaker]:
    sp = ExabgpSpeaker(session=session(), runtime_dir=rundir, batch_size=48, window=8, ack_timeout=5.0)
    await sp.start(check_commands=False)
    yield sp
    await sp.stop()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not condition():
            await asyncio.sleep(0.01)


def prefixes(count: int, *, start: int = 0) -> tuple[IPNetwork, ...]:
    return tuple(
        ip_network(f"10.{(i >> 8) & 255}.{i & 255}.{i >> 16}/32") for i in range(start, start + count)
    )


# --- ApiChannel ----------------------------------------------------------------------------------


async def test_done_returns_the_show_output(channel: client.ApiChannel) -> None:
    rib = ["neighbor 192.0.2.1 local-ip ... ipv4 unicast 203.0.113.1/32 next-hop 10.99.0.11"]
    fake = await connect(channel.path, lambda line: [*rib, "done"])
    await channel.wait_connected(DEADLINE)
    assert await channel.command("show adj-rib out extensive") == rib
    assert fake.received == ["show adj-rib out extensive"]
    await fake.close()


async def test_error_raises_command_rejected(channel: client.ApiChannel) -> None:
    fake = await connect(channel.path, lambda line: ["error"])
    await channel.wait_connected(DEADLINE)
    with pytest.raises(CommandRejected):
        await channel.command("neighbor 192.0.2.1 announce attributes next-hop 10.0.0.1 nlri 10.0.0.0/33")
    assert channel.connected
    await fake.close()


async def test_silence_is_unavailability_and_drops_the_connection(rundir: Path) -> None:
    ch = client.ApiChannel(rundir / "api.sock", ack_timeout=0.2)
    await ch.start()
    fake = await connect(ch.path, lambda line: None)
    await ch.wait_connected(DEADLINE)
    with pytest.raises(SpeakerUnavailable):
        await ch.command("show adj-rib out extensive")
    assert not ch.connected
    await fake.close()
    await ch.close()


async def test_unqueued_kinds_and_unsafe_text_are_never_sent(channel: client.ApiChannel) -> None:
    fake = await connect(channel.path)
    await channel.wait_connected(DEADLINE)
    for line in (
        "version",
        "shutdown",
        "neighbor 192.0.2.1 teardown 2",
        "show x\nshutdown",
        "announce caf\u00e9",
    ):
        with pytest.raises(ValueError):
            await channel.command(line)
    assert await channel.command("clear adj-rib out") == []
    assert fake.received == ["clear adj-rib out"]
    await fake.close()


async def test_without_a_connection_commands_fail_fast(channel: client.ApiChannel) -> None:
    with pytest.raises(SpeakerUnavailable):
        await channel.command("show adj-rib out extensive")


async def test_events_interleaved_with_acks_reach_the_handler(rundir: Path) -> None:
    seen: list[object] = []
    ch = client.ApiChannel(rundir / "api.sock", on_event=seen.append)
    await ch.start()

    def responder(line: str) -> list[str]:  # events before, between and after show output and acks
        return [STATE_UP % "connected", "line-1", STATE_UP % "up", "line-2", "done", STATE_UP % "down"]

    fake = await connect(ch.path, responder)
    await ch.wait_connected(DEADLINE)
    outputs = await asyncio.gather(*(ch.command(f"show adj-rib out extensive {i}") for i in range(3)))
    assert outputs == [["line-1", "line-2"]] * 3
    await until(lambda: len(seen) == 9)
    assert [getattr(e, "state", None) for e in seen[:3]] == ["connected", "up", "down"]
    await fake.close()
    await ch.close()


async def test_a_new_connection_replaces_the_old_one(channel: client.ApiChannel) -> None:
    first = await connect(channel.path, lambda line: None)
    assert await channel.wait_connected(DEADLINE) == 1
    pending = asyncio.create_task(channel.command("show adj-rib out extensive"))
    await until(lambda: len(first.received) == 1)
    second = await connect(channel.path)
    await until(lambda: channel.generation == 2)
    with pytest.raises(SpeakerUnavailable):
        await pending
    assert await channel.command("show adj-rib out extensive") == []
    assert second.received == ["show adj-rib out extensive"]
    await first.close()
    await second.close()


async def test_20k_lines_each_way_without_deadlock(rundir: Path) -> None:
    """The fake floods 20k events (never reading meanwhile) while 20k commands are pipelined."""
    events = 0

    def count(_: object) -> None:
        nonlocal events
        events += 1

    ch = client.ApiChannel(rundir / "api.sock", on_event=count)
    await ch.start()
    fake = await connect(ch.path)
    await ch.wait_connected(DEADLINE)
    lines = [
        f"neighbor 192.0.2.1 withdraw attributes next-hop 0.0.0.0 nlri 10.0.{i >> 8}.{i & 255}/32"
        for i in range(20000)
    ]
    async with asyncio.timeout(DEADLINE):
        flood = asyncio.create_task(fake.send([STATE_UP % "up"] * 20000))
        result = await ch.send_many(lines, window=64)
        await flood
        await until(lambda: events == 20000)
    assert result == client.BatchResult(acks=(True,) * 20000, interrupted=False)
    assert len(fake.received) == 20000
    assert not fake.violations
    await fake.close()
    await ch.close()


# --- ExabgpSpeaker ---------------------------------------------------------------------------------


def announce(*nets: object, next_hop: object = NH) -> Announce:
    return Announce(peer=PEER, attributes=RouteAttributes(next_hop=next_hop), prefixes=tuple(nets))  # type: ignore[arg-type]


async def test_eof_mid_plan_reports_only_acknowledged_steps(speaker: ExabgpSpeaker) -> None:
    answered = 0
    fake: FakeExabgp

    def responder(line: str) -> list[str] | None:
        nonlocal answered
        if line.startswith("show neighbor"):
            return ["[]", "done"]
        answered += 1
        if answered > 3:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(fake.close()))
            return None
        return ["done"]

    fake = await connect(speaker.socket_path, responder)
    await until(lambda: speaker.available)
    result = await speaker.apply(Plan(steps=(announce(*prefixes(480)),)))
    assert result.interrupted
    assert [len(s.prefixes) for s in result.applied] == [48, 48, 48]
    assert result.applied[0].prefixes == prefixes(48)
    assert not result.rejected
    await until(lambda: not speaker.available)


async def test_a_bad_prefix_is_isolated_and_the_others_applied(speaker: ExabgpSpeaker) -> None:
    bad = "10.66.0.0/32"

    def responder(line: str) -> list[str]:
        if line.startswith("show neighbor"):
            return ["[]", "done"]
        return ["error" if bad in line.split() else "done"]

    fake = await connect(speaker.socket_path, responder)
    await until(lambda: speaker.available)
    nets = (*prefixes(60), ip_network(bad), *prefixes(40, start=60))
    result = await speaker.apply(
        Plan(steps=(Withdraw(peer=PEER, prefixes=(ip_network("10.1.2.3/32"),)), announce(*nets)))
    )
    applied = [p for step in result.applied if isinstance(step, Announce) for p in step.prefixes]
    assert sorted(applied) == sorted(set(nets) - {ip_network(bad)})
    assert [(s.prefixes, reason) for s, reason in result.rejected] == [
        ((ip_network(bad),), "ExaBGP answered error")
    ]
    assert any(isinstance(step, Withdraw) for step in result.applied)
    singles = [line for line in fake.received if line.startswith("neighbor") and len(line.split()) == 10]
    assert len(singles) == 48  # only the failing batch is retried, prefix by prefix
    assert not result.interrupted
    assert not fake.violations
    await fake.close()


async def test_refused_steps_are_rejected_and_never_sent(speaker: ExabgpSpeaker) -> None:
    fake = await connect(speaker.socket_path)
    await until(lambda: speaker.available)
    v6 = ip_network("2001:db8:e1b::1/128")
    other_peer = Announce(
        peer=ip_address("192.0.2.99"), attributes=RouteAttributes(next_hop=NH), prefixes=prefixes(1)
    )
    result = await speaker.apply(Plan(steps=(announce(v6), other_peer, announce(*prefixes(2)))))
    assert [step.prefixes for step in result.applied] == [prefixes(2)]
    assert [step.prefixes for step, _ in result.rejected] == [(v6,), prefixes(1)]
    assert not any("2001:db8" in line or "192.0.2.99" in line for line in fake.received)
    await fake.close()


async def test_a_respawned_relay_learns_peer_states_without_events(speaker: ExabgpSpeaker) -> None:
    fake = await connect(speaker.socket_path, lambda line: [NEIGHBORS_UP, "done"])
    await until(lambda: speaker.peer_statuses()[PEER].state is PeerState.ESTABLISHED)
    assert speaker.generation == 1
    await fake.close()
    await until(lambda: speaker.peer_statuses()[PEER].state is PeerState.UNKNOWN)
    again = await connect(speaker.socket_path, lambda line: [NEIGHBORS_UP, "done"])
    await until(lambda: speaker.peer_statuses()[PEER].state is PeerState.ESTABLISHED)
    assert speaker.generation == 2
    await again.close()


async def test_state_events_update_peer_statuses_and_pull_on_change(speaker: ExabgpSpeaker) -> None:
    changes: list[str] = []
    speaker.on_change = lambda: changes.append(speaker.last_change_reason)
    fake = await connect(speaker.socket_path)
    await until(lambda: "api-connected" in changes)
    await fake.send([STATE_UP % "up"])
    await until(lambda: speaker.peer_statuses()[PEER].state is PeerState.ESTABLISHED)
    await fake.send([STATE_UP.replace('"state": "%s"', '"state": "down", "reason": "closing connection"')])
    await until(lambda: speaker.peer_statuses()[PEER].state is PeerState.DOWN)
    status = speaker.peer_statuses()[PEER]
    assert status.flaps == 1
    assert status.last_error == "closing connection"
    assert changes.count("peer-state") == 2
    await fake.close()


async def test_read_rib_out_and_withdraw_all(speaker: ExabgpSpeaker) -> None:
    line = (
        "neighbor 192.0.2.1 local-ip 10.99.0.11 local-as 65001 peer-as 65000 router-id 10.99.0.11 "
        "family-allowed in-open ipv4 unicast 203.0.113.7/32 next-hop 10.99.0.11 origin igp community 65000:1"
    )
    fake = await connect(
        speaker.socket_path, lambda cmd: [line, "done"] if "adj-rib" in cmd else ["[]", "done"]
    )
    await until(lambda: speaker.available)
    rib = await speaker.read_rib_out()
    assert rib == {
        PEER: {ip_network("203.0.113.7/32"): RouteAttributes(next_hop=NH, communities=("65000:1",))}
    }
    assert await speaker.withdraw_all_and_wait(DEADLINE)
    assert fake.received[-1] == "clear adj-rib out"
    fake.responder = lambda cmd: None
    assert not await speaker.withdraw_all_and_wait(0.2)
    await fake.close()


async def test_apply_without_a_connection_is_interrupted(speaker: ExabgpSpeaker) -> None:
    result = await speaker.apply(Plan(steps=(announce(*prefixes(3)),)))
    assert result.interrupted
    assert not result.applied


# --- relay -----------------------------------------------------------------------------------------


async def start_relay(sock: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        relay.__file__,
        "--socket",
        str(sock),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


async def test_relay_copies_both_ways_and_never_blocks_its_stdin(rundir: Path) -> None:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    server = await asyncio.start_unix_server(lambda r, w: accepted.put_nowait((r, w)), path=str(rundir / "s"))
    proc = await start_relay(rundir / "s")
    assert proc.stdin is not None
    assert proc.stdout is not None
    async with asyncio.timeout(DEADLINE):
        reader, writer = await accepted.get()
        writer.write(b"show adj-rib out\n")
        assert await proc.stdout.readline() == b"show adj-rib out\n"
        # ExaBGP's side: 4 MiB of replies while the daemon reads nothing; the writes must finish.
        blob = b"".join(b"%07d done\n" % i for i in range(4 * 1024 * 1024 // 13))
        proc.stdin.write(blob)
        await proc.stdin.drain()
        assert await reader.readexactly(len(blob)) == blob
        proc.stdin.close()  # ExaBGP gone -> the relay exits cleanly
        assert await proc.wait() == 0
    writer.close()
    server.close()


async def test_relay_exits_when_the_daemon_closes(rundir: Path) -> None:
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()
    server = await asyncio.start_unix_server(lambda r, w: accepted.put_nowait(w), path=str(rundir / "s"))
    proc = await start_relay(rundir / "s")
    async with asyncio.timeout(DEADLINE):
        (await accepted.get()).close()
        assert await proc.wait() == 1
    server.close()


async def test_relay_gives_up_without_a_daemon(rundir: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        relay.__file__,
        "--socket",
        str(rundir / "none"),
        "--connect-timeout",
        "0.3",
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 1
    assert b"cannot connect" in err
    assert os.path.exists(relay.__file__)


async def test_settle_waits_for_everything_sent_before(speaker: ExabgpSpeaker) -> None:
    fake = await connect(speaker.socket_path)
    await until(lambda: speaker.available)
    await speaker.apply(Plan(steps=(Withdraw(peer=PEER, prefixes=prefixes(3)),)))
    await speaker.settle(linger=0)
    assert fake.received[-1] == "show neighbor summary"
    status = speaker.status()
    assert status["api_connected"] is True
    assert status["generation"] == 1
    assert status["running"] is False
    await fake.close()


def test_speaker_from_settings(rundir: Path) -> None:
    password = rundir / "pw"
    password.write_text("s3cret\n")
    cfg = settings_mod.from_mapping(
        {
            "local_as": 65001,
            "peers": [
                {"address": "192.0.2.1", "asn": 65000, "password_file": str(password), "incoming_ttl": 255},
                {"address": "fd00:99::1", "asn": 65001, "families": ["ipv6"], "hold_time": 30},
            ],
            "pools": ["203.0.113.0/24"],
            "source": {"kind": "file", "file": {"path": str(rundir / "eips.yaml")}},
            "exabgp": {"runtime_dir": str(rundir / "run"), "batch_size": 20, "window": 3},
        },
        origin="test",
    )
    sp = ExabgpSpeaker(cfg, router_id=NH)
    assert (sp.batch_size, sp.window) == (20, 3)
    assert sp.socket_path == rundir / "run" / "api.sock"
    assert set(sp.peer_statuses()) == {PEER, ip_address("fd00:99::1")}
    shown = sp.rendered_config()
    assert "s3cret" not in shown
    assert "incoming-ttl 255;" in shown
    assert f"--socket {rundir / 'run' / 'api.sock'};" in shown
    assert "family { ipv6 unicast; }" in shown
    assert render_config(cfg, router_id=NH, redact_secrets=False).count('md5-password "s3cret";') == 1
    with pytest.raises(ConfigError):
        ExabgpSpeaker(cfg)  # no router id anywhere


async def test_a_state_event_newer_than_the_neighbor_answer_wins(speaker: ExabgpSpeaker) -> None:
    """Stream order: answer (session not up yet), `up` event, `done`: the answer must not win."""
    idle = NEIGHBORS_UP.replace('"ESTABLISHED"', '"ACTIVE"')
    fake = await connect(speaker.socket_path, lambda line: [idle, STATE_UP % "up", "done"])
    await until(lambda: speaker.peer_statuses()[PEER].state is PeerState.ESTABLISHED)
    assert await speaker.channel.command("show neighbor json") == [idle]
    assert speaker.peer_statuses()[PEER].state is PeerState.ESTABLISHED
    await fake.close()
