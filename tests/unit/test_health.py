from __future__ import annotations

import inspect
from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from bgp_speaker.core import desired, health
from bgp_speaker.core.model import Candidate, Family, NextHops, PeerPolicy, RoutingPolicy

NOW = 1_000_000.0


def live(**overrides: object) -> health.Verdict:
    arguments: dict[str, object] = {
        "now": NOW,
        "loop_heartbeat": NOW - 1.0,
        "exabgp_running": True,
        "exabgp_restarting_since": None,
        "max_heartbeat_age": 30.0,
        "max_restart_seconds": 120.0,
    }
    arguments.update(overrides)
    return health.liveness(**arguments)  # type: ignore[arg-type]


def ready(**overrides: object) -> health.Verdict:
    arguments: dict[str, object] = {
        "first_sync_done": True,
        "established_peers": 2,
        "configured_peers": 2,
        "min_established": 1,
        "source_synced": True,
        "source_stale_seconds": 0.5,
    }
    arguments.update(overrides)
    return health.readiness(**arguments)  # type: ignore[arg-type]


# -- liveness ---------------------------------------------------------------------------


def test_live_when_the_loop_beats_and_exabgp_runs() -> None:
    verdict = live()
    assert verdict == health.Verdict(ok=True)


def test_liveness_has_no_peer_input_so_a_down_peer_cannot_fail_it() -> None:
    # The probe that restarts the container must not depend on BGP sessions at all.
    parameters = inspect.signature(health.liveness).parameters
    assert "loop_heartbeat" in parameters
    assert not [name for name in parameters if "peer" in name or "established" in name]


def test_an_old_heartbeat_fails_liveness_and_says_how_old() -> None:
    verdict = live(loop_heartbeat=NOW - 45.0, max_heartbeat_age=30.0)
    assert not verdict.ok
    assert len(verdict.reasons) == 1
    assert "45.0s" in verdict.reasons[0]
    assert "30.0s" in verdict.reasons[0]


def test_a_heartbeat_exactly_at_the_bound_is_still_live() -> None:
    assert live(loop_heartbeat=NOW - 30.0, max_heartbeat_age=30.0).ok


def test_no_heartbeat_yet_is_not_live() -> None:
    verdict = live(loop_heartbeat=None)
    assert not verdict.ok
    assert "heartbeat" in verdict.reasons[0]


def test_a_heartbeat_from_the_future_is_live() -> None:
    # Clock steps backwards must not restart the pod.
    assert live(loop_heartbeat=NOW + 50.0).ok


def test_exabgp_restarting_within_the_bound_is_live_with_a_note() -> None:
    verdict = live(exabgp_running=False, exabgp_restarting_since=NOW - 10.0, max_restart_seconds=120.0)
    assert verdict.ok
    assert verdict.reasons == ()
    assert any("restarting" in note for note in verdict.notes)


def test_exabgp_restarting_too_long_is_not_live() -> None:
    verdict = live(exabgp_running=False, exabgp_restarting_since=NOW - 121.0, max_restart_seconds=120.0)
    assert not verdict.ok
    assert "121.0s" in verdict.reasons[0]


def test_exabgp_stopped_with_no_restart_is_not_live() -> None:
    verdict = live(exabgp_running=False, exabgp_restarting_since=None)
    assert not verdict.ok
    assert "not running" in verdict.reasons[0]


def test_every_liveness_failure_is_reported() -> None:
    verdict = live(loop_heartbeat=None, exabgp_running=False, exabgp_restarting_since=None)
    assert not verdict.ok
    assert len(verdict.reasons) == 2


# -- readiness --------------------------------------------------------------------------


def test_not_ready_before_the_first_sync() -> None:
    verdict = ready(first_sync_done=False)
    assert not verdict.ok
    assert "first full sync" in verdict.reasons[0]


def test_ready_after_the_first_sync_with_enough_sessions() -> None:
    assert ready() == health.Verdict(ok=True)


@pytest.mark.parametrize(
    ("min_established", "configured", "established", "expected"),
    [
        (1, 2, 0, False),
        (1, 2, 1, True),
        (2, 2, 1, False),
        (2, 2, 2, True),
        (3, 2, 2, True),  # the minimum is capped at the peer count
        (3, 1, 1, True),
        (1, 0, 0, True),  # no peer configured: nothing to wait for
        (0, 2, 0, True),  # readiness explicitly not tied to sessions
    ],
)
def test_sessions_needed_are_the_minimum_capped_at_the_peer_count(
    min_established: int, configured: int, established: int, expected: bool
) -> None:
    verdict = ready(
        min_established=min_established, configured_peers=configured, established_peers=established
    )
    assert verdict.ok is expected
    required = health.required_sessions(min_established=min_established, configured_peers=configured)
    assert required == min(min_established, configured)
    if not expected:
        assert f"{established} of {configured}" in verdict.reasons[0]
        assert f"{required} required" in verdict.reasons[0]


def test_a_peer_down_above_the_minimum_is_a_note() -> None:
    verdict = ready(established_peers=1, configured_peers=2, min_established=1)
    assert verdict.ok
    assert verdict.notes == ("1 of 2 BGP sessions established",)


def test_a_stale_source_keeps_ready_and_adds_a_note() -> None:
    verdict = ready(source_stale_seconds=300.0, source_stale_after=60.0, source_error="connection refused")
    assert verdict.ok
    assert any("stale for 300.0s" in note for note in verdict.notes)
    assert any("connection refused" in note for note in verdict.notes)


def test_a_source_that_lost_sync_after_the_first_one_keeps_ready() -> None:
    verdict = ready(source_synced=False, source_stale_seconds=None)
    assert verdict.ok
    assert any("not in sync" in note for note in verdict.notes)


def test_fresh_source_adds_no_note() -> None:
    assert ready(source_stale_seconds=59.0, source_stale_after=60.0).notes == ()


def test_stale_next_hops_are_a_note() -> None:
    verdict = ready(next_hops_stale=True)
    assert verdict.ok
    assert any("next hops" in note for note in verdict.notes)


def test_readiness_transitions_as_a_gateway_starts_and_loses_a_peer() -> None:
    steps = [
        ready(first_sync_done=False, established_peers=0),
        ready(first_sync_done=True, established_peers=0, min_established=1),
        ready(first_sync_done=True, established_peers=1, min_established=1),
        ready(first_sync_done=True, established_peers=0, min_established=1),
    ]
    assert [v.ok for v in steps] == [False, False, True, False]
    # Liveness is independent of all of that.
    assert live().ok


# -- refusal kinds ----------------------------------------------------------------------


def _refusals_from_selection() -> dict[str, str]:
    """Real reason texts, produced by the selection itself, keyed by the address refused."""
    peer = ip_address("192.0.2.1")
    policy = RoutingPolicy(
        peers=(
            PeerPolicy(
                peer=peer, local_as=65001, peer_as=65000, families=frozenset({Family.IPV4}), max_prefixes=1
            ),
        ),
        pools=(ip_network("203.0.113.0/24"), ip_network("2001:db8::/32")),
    )
    candidates = [
        Candidate(address=ip_address("203.0.113.1"), origin="a"),
        Candidate(address=ip_address("203.0.113.1"), origin="b"),  # duplicate
        Candidate(address=ip_address("198.18.0.1"), origin="c"),  # outside the pools
        Candidate(address=ip_address("203.0.113.2"), origin="d"),  # over the cap of 1
        Candidate(address=ip_address("2001:db8::1"), origin="e"),  # no ipv6 next hop
    ]
    state = desired.compute(
        candidates=candidates, policy=policy, next_hops=NextHops(ipv4=IPv4Address("172.31.255.11"))
    )
    return {f"{r.address}/{r.origin}": r.reason for r in state.refusals}


def test_the_reasons_the_selection_gives_are_classified() -> None:
    reasons = _refusals_from_selection()
    kinds = {key: health.refusal_kind(reason) for key, reason in reasons.items()}
    assert kinds == {
        "203.0.113.1/b": health.RefusalKind.DUPLICATE,
        "198.18.0.1/c": health.RefusalKind.OUTSIDE_POOLS,
        "203.0.113.2/d": health.RefusalKind.PREFIX_CAP,
        "2001:db8::1/e": health.RefusalKind.NO_NEXT_HOP,
    }


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("'203.0.113.300' does not appear to be an IPv4 or IPv6 address", health.RefusalKind.INVALID),
        ("malformed entry: expected a mapping", health.RefusalKind.INVALID),
        ("Invalid address", health.RefusalKind.INVALID),
        ("no peer carries ipv6", health.RefusalKind.OTHER),
        ("not bound to this gateway", health.RefusalKind.OTHER),
        ("", health.RefusalKind.OTHER),
    ],
)
def test_source_reasons_are_classified(reason: str, kind: health.RefusalKind) -> None:
    assert health.refusal_kind(reason) is kind


def test_refusal_kinds_are_short_label_values() -> None:
    assert {k.value for k in health.RefusalKind} == {
        "outside_pools",
        "no_next_hop",
        "prefix_cap",
        "duplicate",
        "invalid",
        "other",
    }
