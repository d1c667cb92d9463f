from ipaddress import ip_address, ip_network

from bgp_speaker.aiokit import Trigger
from bgp_speaker.core.model import Candidate, NextHops, PeerPolicy, RouteAttributes, RoutingPolicy
from bgp_speaker.reconciler import Reconciler
from tests.fakes import FakeNextHops, FakeSource, FakeSpeaker

PEER = ip_address("172.31.255.1")
NH = ip_address("172.31.255.11")
NH2 = ip_address("172.31.255.12")
POLICY = RoutingPolicy(
    peers=(PeerPolicy(peer=PEER, local_as=65001, peer_as=65000),), pools=(ip_network("203.0.113.0/24"),)
)


def cands(*last_octets):
    return tuple(Candidate(address=ip_address(f"203.0.113.{i}"), origin=f"t[{i}]") for i in last_octets)


def build(**kw):
    speaker = kw.pop("speaker", FakeSpeaker(peers=(PEER,)))
    source = kw.pop("source", FakeSource(candidates=cands(1, 2)))
    hops = kw.pop("hops", FakeNextHops(NextHops(ipv4=NH)))
    rec = Reconciler(speaker=speaker, source=source, next_hops=hops, policy=POLICY, trigger=Trigger(), **kw)
    return rec, speaker, source, hops


def announced(speaker):
    return {str(p) for p in speaker.rib[PEER]}


async def test_converges_and_is_idempotent():
    rec, speaker, _, _ = build()
    report = await rec.reconcile_once()
    assert report.result == "converged"
    assert announced(speaker) == {"203.0.113.1/32", "203.0.113.2/32"}
    assert rec.first_sync_done
    steps = speaker.steps_applied
    again = await rec.reconcile_once()
    assert (again.announced, again.withdrawn) == (0, 0)
    assert speaker.steps_applied == steps


async def test_source_change_announces_and_withdraws_only_the_difference():
    rec, speaker, source, _ = build()
    await rec.reconcile_once()
    source.candidates = cands(2, 3)
    report = await rec.reconcile_once()
    assert (report.announced, report.withdrawn) == (1, 1)
    assert announced(speaker) == {"203.0.113.2/32", "203.0.113.3/32"}
    assert {str(p) for p in report.newly_withdrawn} == {"203.0.113.1/32"}


async def test_nothing_is_withdrawn_before_the_first_complete_load():
    speaker = FakeSpeaker(peers=(PEER,))
    speaker.rib[PEER][ip_network("203.0.113.9/32")] = RouteAttributes(next_hop=NH)
    rec, _, _, _ = build(speaker=speaker, source=FakeSource(synced=False, error="not yet"))
    report = await rec.reconcile_once()
    assert report.result == "skipped"
    assert "not yet" in report.reason
    assert announced(speaker) == {"203.0.113.9/32"}


async def test_speaker_restart_forces_a_full_resync():
    rec, speaker, _, _ = build()
    await rec.reconcile_once()
    speaker.restart()  # ExaBGP came back with an empty adj-rib-out
    report = await rec.reconcile_once()
    assert report.announced == 2
    assert announced(speaker) == {"203.0.113.1/32", "203.0.113.2/32"}


async def test_state_left_behind_by_a_previous_run_is_cleaned_up():
    speaker = FakeSpeaker(peers=(PEER,))
    rec0, _, _, _ = build(speaker=speaker, source=FakeSource(candidates=cands(7, 8)))
    await rec0.reconcile_once()
    rec, _, _, _ = build(speaker=speaker)  # a new watcher process starts
    report = await rec.reconcile_once()
    assert speaker.reads == 2
    assert announced(speaker) == {"203.0.113.1/32", "203.0.113.2/32"}
    assert report.withdrawn == 2


async def test_next_hop_change_reannounces_everything():
    rec, speaker, _, hops = build()
    await rec.reconcile_once()
    hops.hops = NextHops(ipv4=NH2)
    report = await rec.reconcile_once()
    assert report.announced == 2
    assert report.withdrawn == 0
    assert {a.next_hop for a in speaker.rib[PEER].values()} == {NH2}


async def test_interrupted_apply_records_only_acknowledged_steps():
    rec, speaker, _, _ = build(speaker=FakeSpeaker(peers=(PEER,), fail_after_steps=0))
    report = await rec.reconcile_once()
    assert report.result == "failed"
    assert speaker.rib[PEER] == {}
    speaker.fail_after_steps = None
    speaker.available = True
    report = await rec.reconcile_once()
    assert report.result == "converged"
    assert announced(speaker) == {"203.0.113.1/32", "203.0.113.2/32"}


async def test_one_rejected_prefix_does_not_block_the_others_and_is_not_retried_every_pass():
    speaker = FakeSpeaker(peers=(PEER,), poison={ip_network("203.0.113.2/32")})
    rec, _, _, _ = build(speaker=speaker)
    report = await rec.reconcile_once()
    assert report.result == "partial"
    assert announced(speaker) == {"203.0.113.1/32"}
    assert [str(p) for _, p, _ in report.rejected] == ["203.0.113.2/32"]
    again = await rec.reconcile_once()
    assert again.announced == 0
    assert again.result == "converged"


async def test_unavailable_speaker_skips_without_losing_state():
    rec, speaker, _, _ = build()
    await rec.reconcile_once()
    speaker.available = False
    report = await rec.reconcile_once()
    assert report.result == "skipped"
    speaker.available = True
    report = await rec.reconcile_once()
    assert report.announced == 0


async def test_graceful_converge_to_explicit_routes():
    rec, speaker, _, _ = build()
    await rec.reconcile_once()
    report = await rec.converge(routes={})
    assert report.withdrawn == 2
    assert speaker.rib[PEER] == {}


async def test_an_interrupted_pass_reports_only_what_was_acknowledged():
    rec, speaker, source, _ = build()
    await rec.reconcile_once()
    source.candidates = cands(1, 2, 3)
    speaker.fail_after_steps = 0  # ExaBGP goes away before acknowledging the new announce
    report = await rec.reconcile_once()
    assert report.result == "failed"
    assert report.newly_withdrawn == frozenset()  # nothing was withdrawn: do not claim it was
    assert report.newly_announced == frozenset()


async def test_the_reported_table_is_a_copy_that_later_passes_do_not_change():
    rec, _, source, _ = build()
    first = await rec.reconcile_once()
    idle = await rec.reconcile_once()
    assert idle.actual is first.actual  # nothing changed: no new copy
    source.candidates = cands(1)
    changed = await rec.reconcile_once()
    assert {str(p) for p in first.actual[PEER]} == {"203.0.113.1/32", "203.0.113.2/32"}
    assert {str(p) for p in changed.actual[PEER]} == {"203.0.113.1/32"}
    assert {str(p) for p in changed.newly_withdrawn} == {"203.0.113.2/32"}
