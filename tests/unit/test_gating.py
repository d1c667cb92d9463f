"""Gating decisions: kept, refused, held down, observed."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from bgp_speaker.core import gating
from bgp_speaker.core.gating import GatingResult, GatingState, ObservationKind
from bgp_speaker.core.model import Candidate
from bgp_speaker.core.natrules import NatView, RuleKind

E1 = IPv4Address("203.0.113.10")
E2 = IPv4Address("203.0.113.11")
E3 = IPv4Address("203.0.113.12")
C1 = Candidate(address=E1, origin="iptables-eip/eip-1")
C2 = Candidate(address=E2, origin="iptables-eip/eip-2")


def view(*installed: IPv4Address, initialized: bool = True) -> NatView:
    return NatView(
        backend="nft", rules={a: frozenset({RuleKind.FIP}) for a in installed}, initialized=initialized
    )


def run(
    candidates: tuple[Candidate, ...],
    nat: NatView | None,
    now: float,
    previous: GatingState | None,
    mode: gating.Mode = "require",
) -> GatingResult:
    return gating.gate(candidates, view=nat, mode=mode, hold_down=5.0, now=now, previous=previous)


def addresses(result: GatingResult) -> set[object]:
    return {c.address for c in result.kept}


def test_off_keeps_everything_and_tracks_nothing() -> None:
    result = run((C1, C2), view(), 0.0, None, mode="off")
    assert result.kept == (C1, C2)
    assert not result.active
    assert result.observations == ()


def test_unreadable_view_falls_back_to_kubernetes() -> None:
    result = run((C1, C2), None, 0.0, None)
    assert result.kept == (C1, C2)
    assert not result.active
    assert result.refusals == ()


def test_bound_without_rule_is_refused_with_duration() -> None:
    first = run((C1,), view(), 100.0, None)
    assert first.kept == ()
    assert first.refusals[0].origin == C1.origin
    later = run((C1,), view(), 112.0, first.state)
    assert later.refusals[0].reason == "bound in Kubernetes but no NAT rule installed in the gateway for 12 s"
    [obs] = later.observations
    assert (obs.kind, obs.since, obs.seconds, obs.held) == (
        ObservationKind.BOUND_BUT_MISSING,
        100.0,
        12.0,
        False,
    )


def test_rule_added_then_removed_is_dropped_after_hold_down() -> None:
    s0 = run((C1,), view(), 0.0, None)
    assert addresses(s0) == set()
    s1 = run((C1,), view(E1), 1.0, s0.state)
    assert addresses(s1) == {E1}
    assert s1.observations == ()
    s2 = run((C1,), view(), 2.0, s1.state)  # rule removed: held
    assert addresses(s2) == {E1}
    assert s2.next_deadline == 7.0
    assert s2.observations[0].held
    s3 = run((C1,), view(), 6.9, s2.state)
    assert addresses(s3) == {E1}
    s4 = run((C1,), view(), 7.0, s3.state)  # hold-down over
    assert addresses(s4) == set()
    assert s4.next_deadline is None
    assert "for 5 s" in s4.refusals[0].reason


def test_redo_within_hold_down_never_drops() -> None:
    state = run((C1, C2), view(E1, E2), 0.0, None).state
    seen: list[set[object]] = []
    # Kube-OVN's redo: every rule removed, then re-applied one by one within a few seconds.
    for now, installed in ((1.0, ()), (2.0, (E2,)), (3.5, (E2,)), (4.0, (E1, E2))):
        result = run((C1, C2), view(*installed), now, state)
        seen.append(addresses(result))
        state = result.state
    assert all(kept == {E1, E2} for kept in seen)
    # A second outage later starts its own hold-down.
    result = run((C1, C2), view(E2), 20.0, state)
    assert addresses(result) == {E1, E2}
    assert result.next_deadline == 25.0


def test_never_installed_candidate_gets_no_hold_down() -> None:
    state = run((C1,), view(E1), 0.0, None).state
    result = run((C1, C2), view(E1), 1.0, state)
    assert addresses(result) == {E1}
    assert result.refusals[0].address == str(E2)


def test_observe_keeps_all_and_reports_both_directions() -> None:
    first = run((C1, C2), view(E2, E3), 10.0, None, mode="observe")
    assert first.kept == (C1, C2)
    assert first.refusals == ()
    second = run((C1, C2), view(E2, E3), 13.0, first.state, mode="observe")
    by_kind = {(o.kind, o.address): o for o in second.observations}
    assert set(by_kind) == {
        (ObservationKind.BOUND_BUT_MISSING, str(E1)),
        (ObservationKind.PRESENT_BUT_UNBOUND, str(E3)),
    }
    unbound = by_kind[(ObservationKind.PRESENT_BUT_UNBOUND, str(E3))]
    assert (unbound.since, unbound.seconds, unbound.kinds) == (10.0, 3.0, ("fip",))
    assert unbound.as_dict()["kind"] == "present-but-unbound"


def test_unbound_timer_restarts_after_it_clears() -> None:
    a = run((), view(E3), 0.0, None)
    b = run((), view(), 1.0, a.state)
    c = run((), view(E3), 2.0, b.state)
    assert c.observations[0].since == 2.0


def test_reasons_name_the_likely_cause() -> None:
    v6 = Candidate(address=IPv6Address("2001:db8::1"), origin="file")
    result = run((v6,), view(), 0.0, None)
    assert "no IPv6 NAT" in result.refusals[0].reason
    result = run((C1,), view(initialized=False), 0.0, None)
    assert "not initialized" in result.refusals[0].reason
    half = NatView(backend="legacy", rules={}, partial=frozenset({E1}), initialized=True)
    assert "half of a FIP" in run((C1,), half, 0.0, None).refusals[0].reason


def test_view_returning_after_an_outage_keeps_the_hold_down_clock() -> None:
    s0 = run((C1,), view(E1), 0.0, None).state
    s1 = run((C1,), view(), 1.0, s0).state  # missing since 1.0
    s2 = run((C1,), None, 2.0, s1).state  # unreadable: kept, timers kept
    s3 = run((C1,), view(), 6.5, s2)
    assert s3.refusals[0].reason.endswith("for 6 s")
