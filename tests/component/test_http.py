"""The endpoint served for real on loopback (port 0), driven by real health verdicts and metrics."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bgp_speaker import errors
from bgp_speaker.adapters import http
from bgp_speaker.core import health
from bgp_speaker.core.model import PeerState, PeerStatus
from bgp_speaker.metrics import Metrics

P1 = ip_address("192.0.2.1")
P2 = ip_address("192.0.2.2")


@dataclass
class Gateway:
    """A stand-in for the app's state: the facts the probes are computed from."""

    now: float = 1000.0
    heartbeat: float = 1000.0
    exabgp_running: bool = True
    first_sync_done: bool = False
    peers: dict[str, PeerState] = field(default_factory=lambda: {str(P1): PeerState.IDLE})
    source_stale: float = 0.1
    status_calls: int = 0

    def liveness(self) -> health.Verdict:
        return health.liveness(
            now=self.now,
            loop_heartbeat=self.heartbeat,
            exabgp_running=self.exabgp_running,
            exabgp_restarting_since=None,
            max_heartbeat_age=30.0,
            max_restart_seconds=60.0,
        )

    def readiness(self) -> health.Verdict:
        return health.readiness(
            first_sync_done=self.first_sync_done,
            established_peers=sum(s is PeerState.ESTABLISHED for s in self.peers.values()),
            configured_peers=len(self.peers),
            min_established=1,
            source_synced=True,
            source_stale_seconds=self.source_stale,
        )

    def status(self) -> Mapping[str, Any]:
        self.status_calls += 1
        return {
            "version": "0.1.0",
            # Addresses as objects: the endpoint must render them, not fail.
            "peers": [{"address": ip_address(p), "state": s} for p, s in self.peers.items()],
            "routes": [],
        }


@dataclass
class Served:
    gateway: Gateway
    metrics: Metrics
    server: http.HttpServer
    base: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    gateway = Gateway()
    registry = CollectorRegistry()
    server = http.HttpServer(
        listen="127.0.0.1:0",
        registry=registry,
        status=gateway.status,
        liveness=gateway.liveness,
        readiness=gateway.readiness,
    )
    await server.start()
    try:
        yield Served(
            gateway, Metrics(registry, version="0.1.0"), server, f"http://127.0.0.1:{server.bound_port}"
        )
    finally:
        await server.stop()


async def get(url: str, *, headers: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.headers["Content-Type"], await response.text()


# -- listen address ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:10667", ("0.0.0.0", 10667)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::]:10667", ("::", 10667)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:9000", ("localhost", 9000)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert http.parse_listen(listen) == expected


@pytest.mark.parametrize(
    "listen",
    ["", "10667", ":10667", "::1:80", "[::1]80", "[127.0.0.1]:80", "host:http", "host:70000", "[::1]:"],
)
def test_parse_listen_rejects_with_the_value_named(listen: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        http.parse_listen(listen)
    assert repr(listen) in str(info.value)


# -- routes -----------------------------------------------------------------------------


async def test_healthz_and_readyz_are_text(served: Served) -> None:
    status, content_type, body = await get(served.base + "/healthz")
    assert (status, body) == (200, "ok\n")
    assert content_type.startswith("text/plain")
    status, content_type, body = await get(served.base + "/readyz")
    assert status == 503
    assert content_type.startswith("text/plain")
    assert body.splitlines()[0] == "not ready"


async def test_readiness_transitions_and_a_down_peer_never_fails_liveness(served: Served) -> None:
    gateway = served.gateway

    # Starting: nothing synced, the only peer idle.
    assert (await get(served.base + "/readyz"))[0] == 503
    assert (await get(served.base + "/healthz"))[0] == 200

    # First sync done but no session yet: still not ready, and the body says why.
    gateway.first_sync_done = True
    status, _, body = await get(served.base + "/readyz")
    assert status == 503
    assert "reason: 0 of 1 BGP sessions established, 1 required" in body.splitlines()

    # The session comes up.
    gateway.peers[str(P1)] = PeerState.ESTABLISHED
    status, _, body = await get(served.base + "/readyz")
    assert (status, body) == (200, "ready\n")

    # The peer goes down: not ready any more, but alive.
    gateway.peers[str(P1)] = PeerState.DOWN
    assert (await get(served.base + "/readyz"))[0] == 503
    assert (await get(served.base + "/healthz"))[0] == 200


async def test_readyz_shows_notes_while_ready(served: Served) -> None:
    gateway = served.gateway
    gateway.first_sync_done = True
    gateway.peers = {str(P1): PeerState.ESTABLISHED, str(P2): PeerState.IDLE}
    gateway.source_stale = 500.0
    status, _, body = await get(served.base + "/readyz")
    assert status == 200
    lines = body.splitlines()
    assert lines[0] == "ready"
    assert "note: 1 of 2 BGP sessions established" in lines
    assert any(line.startswith("note: the source is stale for 500.0s") for line in lines)


async def test_healthz_fails_with_reasons_when_the_loop_stops(served: Served) -> None:
    served.gateway.now = served.gateway.heartbeat + 31.0
    status, content_type, body = await get(served.base + "/healthz")
    assert status == 503
    assert content_type.startswith("text/plain")
    lines = body.splitlines()
    assert lines[0] == "not ok"
    assert lines[1].startswith("reason: the reconcile loop last beat 31.0s ago")


async def test_status_is_json_of_the_document(served: Served) -> None:
    status, content_type, body = await get(served.base + "/status")
    assert status == 200
    assert content_type.startswith("application/json")
    document = json.loads(body)
    assert document == {"version": "0.1.0", "peers": [{"address": str(P1), "state": "idle"}], "routes": []}
    assert served.gateway.status_calls == 1


async def test_status_is_compact_unless_asked_to_be_pretty(served: Served) -> None:
    compact = (await get(served.base + "/status"))[2]
    pretty = (await get(served.base + "/status?pretty=1"))[2]
    assert "\n" not in compact
    assert pretty.count("\n") > 3
    assert json.loads(pretty) == json.loads(compact)


async def test_metrics_exposition_follows_updates(served: Served) -> None:
    served.metrics.set_peers([PeerStatus(peer=P1, state=PeerState.ESTABLISHED), PeerStatus(peer=P2)])
    served.metrics.command("done")
    status, content_type, body = await get(served.base + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("bgp_speaker_peer_up", (("peer", str(P1)),))] == 1
    assert samples[("bgp_speaker_peer_up", (("peer", str(P2)),))] == 0
    assert samples[("bgp_speaker_commands_total", (("result", "done"),))] == 1
    assert samples[("bgp_speaker_info", (("version", "0.1.0"),))] == 1

    served.metrics.set_peers([PeerStatus(peer=P1, state=PeerState.ESTABLISHED)])
    body = (await get(served.base + "/metrics"))[2]
    assert f'peer="{P1}"' in body
    assert f'peer="{P2}"' not in body


async def test_metrics_speaks_openmetrics_when_asked(served: Served) -> None:
    status, content_type, body = await get(
        served.base + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert "bgp_speaker_exabgp_up" in body


async def test_unknown_paths_are_404(served: Served) -> None:
    assert (await get(served.base + "/nope"))[0] == 404


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    verdict = health.Verdict(ok=True)
    server = http.HttpServer(
        listen="[::1]:0",
        registry=CollectorRegistry(),
        status=lambda: {"version": "v6"},
        liveness=lambda: verdict,
        readiness=lambda: verdict,
    )
    try:
        await server.start()
    except errors.ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert (await http.fetch_status(f"http://[::1]:{server.bound_port}", timeout=30.0)) == {
            "version": "v6"
        }
    finally:
        await server.stop()


async def test_a_busy_port_is_a_config_error(served: Served) -> None:
    verdict = health.Verdict(ok=True)
    second = http.HttpServer(
        listen=f"127.0.0.1:{served.server.bound_port}",
        registry=CollectorRegistry(),
        status=dict,
        liveness=lambda: verdict,
        readiness=lambda: verdict,
    )
    with pytest.raises(errors.ConfigError, match=str(served.server.bound_port)):
        await second.start()
    await second.stop()  # nothing started: still fine


async def test_stop_closes_the_port_and_is_idempotent(served: Served) -> None:
    base = served.base
    await served.server.stop()
    await served.server.stop()
    with pytest.raises(errors.StatusUnavailable):
        await http.fetch_status(base, timeout=30.0)
    with pytest.raises(RuntimeError):
        _ = served.server.bound_port


# -- the status client ------------------------------------------------------------------


async def test_fetch_status_from_base_or_full_url(served: Served) -> None:
    expected = json.loads(json.dumps(served.gateway.status(), default=str))
    assert await http.fetch_status(served.base, timeout=30.0) == expected
    assert await http.fetch_status(served.base + "/", timeout=30.0) == expected
    assert await http.fetch_status(served.base + "/status", timeout=30.0) == expected


async def test_fetch_status_of_a_wrong_path_names_the_http_status(served: Served) -> None:
    with pytest.raises(errors.StatusUnavailable, match="HTTP 404"):
        await http.fetch_status(served.base + "/nope", timeout=30.0)


async def test_fetch_status_of_non_json_or_non_object(served: Served) -> None:
    with pytest.raises(errors.StatusUnavailable, match="not JSON"):
        await http.fetch_status(served.base + "/metrics", timeout=30.0)
    # /healthz answers 200 "ok": text, not a JSON object.
    with pytest.raises(errors.StatusUnavailable, match="not JSON"):
        await http.fetch_status(served.base + "/healthz", timeout=30.0)


def test_status_url_rejects_what_is_not_http() -> None:
    with pytest.raises(errors.StatusUnavailable, match="not an http"):
        http.status_url("127.0.0.1:10667")
    assert http.status_url("http://127.0.0.1:10667") == "http://127.0.0.1:10667/status"
    assert http.status_url("http://[::1]:1/x") == "http://[::1]:1/x"


async def test_fetch_status_of_a_closed_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens there any more: connection refused.
    with pytest.raises(errors.StatusUnavailable, match=re.escape(f"127.0.0.1:{port}")):
        await http.fetch_status(f"http://127.0.0.1:{port}", timeout=30.0)


async def test_fetch_status_of_a_silent_server_times_out() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(errors.StatusUnavailable, match=r"no answer within 0\.2s"):
            await http.fetch_status(f"http://127.0.0.1:{port}", timeout=0.2)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
