from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bgp_speaker import metrics as metrics_module
from bgp_speaker.core.model import IPNetwork, PeerId, PeerState, PeerStatus, Refusal, RouteAttributes
from bgp_speaker.metrics import Metrics

P1 = ip_address("192.0.2.1")
P2 = ip_address("2001:db8:ff::1")
NH4 = RouteAttributes(next_hop=ip_address("172.31.255.11"))
NH6 = RouteAttributes(next_hop=ip_address("2001:db8:ff::11"))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, version="9.9.9")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def exposition(registry: CollectorRegistry) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Parsed text exposition: family name -> samples, as a scraper sees them."""
    text = generate_latest(registry).decode()
    return {
        family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def rib(*prefixes: str, attrs: RouteAttributes = NH4) -> dict[IPNetwork, RouteAttributes]:
    return {ip_network(p): attrs for p in prefixes}


def test_every_metric_is_prefixed_and_the_required_ones_exist(registry: CollectorRegistry) -> None:
    Metrics(registry, version="1.2.3")
    families = exposition(registry)
    assert all(name.startswith("bgp_speaker_") for name in families)
    required = {
        "bgp_speaker_peer_up",
        "bgp_speaker_peer_state",
        "bgp_speaker_peer_flaps",
        "bgp_speaker_routes_announced",
        "bgp_speaker_routes_desired",
        "bgp_speaker_refused_addresses",
        "bgp_speaker_refusals",
        "bgp_speaker_exabgp_up",
        "bgp_speaker_exabgp_restarts",
        "bgp_speaker_commands",
        "bgp_speaker_reconcile_duration_seconds",
        "bgp_speaker_reconcile",
        "bgp_speaker_last_converged_timestamp_seconds",
        "bgp_speaker_announce_latency_seconds",
        "bgp_speaker_source_synced",
        "bgp_speaker_source_stale_seconds",
        "bgp_speaker_source_errors",
        "bgp_speaker_desired_not_announced",
        "bgp_speaker_announced_not_desired",
        "bgp_speaker_info",
    }
    assert required <= families.keys()
    assert value(registry, "bgp_speaker_info", version="1.2.3") == 1


def test_outcome_series_exist_at_zero_before_anything_happens(registry: CollectorRegistry) -> None:
    Metrics(registry, version="x")
    for result in ("done", "error", "timeout"):
        assert value(registry, "bgp_speaker_commands_total", result=result) == 0
    for result in ("converged", "partial", "failed"):
        assert value(registry, "bgp_speaker_reconcile_total", result=result) == 0
    for reason in ("outside_pools", "no_next_hop", "prefix_cap", "duplicate", "invalid", "other"):
        assert value(registry, "bgp_speaker_refused_addresses", reason=reason) == 0
        assert value(registry, "bgp_speaker_refusals_total", reason=reason) == 0


def test_peer_state_is_one_hot(metrics: Metrics, registry: CollectorRegistry) -> None:
    for state in PeerState:
        metrics.set_peer(PeerStatus(peer=P1, state=state))
        up = value(registry, "bgp_speaker_peer_up", peer=str(P1))
        assert up == (1 if state is PeerState.ESTABLISHED else 0)
        states = {
            s: value(registry, "bgp_speaker_peer_state", peer=str(P1), state=s.value) for s in PeerState
        }
        assert states == {s: (1 if s is state else 0) for s in PeerState}


def test_flaps_count_the_increase_of_the_cumulative_count(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    def flaps() -> float | None:
        return value(registry, "bgp_speaker_peer_flaps_total", peer=str(P1))

    metrics.set_peer(PeerStatus(peer=P1, flaps=0))
    assert flaps() == 0
    metrics.set_peer(PeerStatus(peer=P1, flaps=2))
    metrics.set_peer(PeerStatus(peer=P1, flaps=2))
    assert flaps() == 2
    # The speaker restarted and counts from zero again: the counter never goes down.
    metrics.set_peer(PeerStatus(peer=P1, flaps=0))
    metrics.set_peer(PeerStatus(peer=P1, flaps=1))
    assert flaps() == 3


def test_peers_that_disappear_lose_all_their_series(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.set_peers([PeerStatus(peer=P1, state=PeerState.ESTABLISHED), PeerStatus(peer=P2, flaps=1)])
    metrics.set_routes(desired={P1: rib("203.0.113.1/32"), P2: {}}, announced={P1: rib("203.0.113.1/32")})
    text = generate_latest(registry).decode()
    assert f'peer="{P2}"' in text

    metrics.set_peers([PeerStatus(peer=P1, state=PeerState.ESTABLISHED)])
    text = generate_latest(registry).decode()
    assert f'peer="{P2}"' not in text
    assert value(registry, "bgp_speaker_peer_up", peer=str(P1)) == 1
    assert value(registry, "bgp_speaker_routes_announced", peer=str(P1), family="ipv4") == 1


def test_route_series_follow_the_peers_in_the_ribs(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.set_routes(desired={P1: rib("203.0.113.1/32"), P2: {}}, announced={})
    assert value(registry, "bgp_speaker_routes_desired", peer=str(P2), family="ipv4") == 0
    metrics.set_routes(desired={P1: rib("203.0.113.1/32")}, announced={})
    assert value(registry, "bgp_speaker_routes_desired", peer=str(P2), family="ipv4") is None
    assert value(registry, "bgp_speaker_routes_desired", peer=str(P1), family="ipv4") == 1


def test_routes_are_counted_per_family(metrics: Metrics, registry: CollectorRegistry) -> None:
    desired: dict[PeerId, dict[IPNetwork, RouteAttributes]] = {
        P1: {**rib("203.0.113.1/32", "203.0.113.2/32"), **rib("2001:db8:1::1/128", attrs=NH6)}
    }
    announced: dict[PeerId, dict[IPNetwork, RouteAttributes]] = {P1: rib("203.0.113.1/32")}
    metrics.set_routes(desired=desired, announced=announced)
    assert value(registry, "bgp_speaker_routes_desired", peer=str(P1), family="ipv4") == 2
    assert value(registry, "bgp_speaker_routes_desired", peer=str(P1), family="ipv6") == 1
    assert value(registry, "bgp_speaker_routes_announced", peer=str(P1), family="ipv4") == 1
    assert value(registry, "bgp_speaker_routes_announced", peer=str(P1), family="ipv6") == 0


def test_drift_counts_missing_extra_and_changed_routes(metrics: Metrics, registry: CollectorRegistry) -> None:
    changed = RouteAttributes(next_hop=NH4.next_hop, communities=("65000:10",))
    desired = {P1: {**rib("203.0.113.1/32", "203.0.113.2/32"), ip_network("203.0.113.3/32"): changed}}
    announced = {P1: rib("203.0.113.1/32", "203.0.113.3/32", "203.0.113.9/32"), P2: rib("203.0.113.1/32")}
    metrics.set_routes(desired=desired, announced=announced)
    # .2 missing, .3 announced with other attributes
    assert value(registry, "bgp_speaker_desired_not_announced") == 2
    # .9 to P1, .1 to P2 (a peer with nothing desired)
    assert value(registry, "bgp_speaker_announced_not_desired") == 2

    metrics.set_routes(desired=desired, announced=desired)
    assert value(registry, "bgp_speaker_desired_not_announced") == 0
    assert value(registry, "bgp_speaker_announced_not_desired") == 0


def test_refusals_by_kind_and_new_ones_counted_once(metrics: Metrics, registry: CollectorRegistry) -> None:
    outside = Refusal(address="198.18.0.1", origin="a", reason="outside the allowed pools (203.0.113.0/24)")
    duplicate = Refusal(address="203.0.113.1", origin="b", reason="duplicate of a")
    cap = Refusal(address="203.0.113.7", origin="c", reason=f"prefix cap of 1 reached for peer {P1}", peer=P1)

    metrics.set_refusals([outside, duplicate])
    metrics.set_refusals([outside, duplicate])  # the same set again: nothing new
    assert value(registry, "bgp_speaker_refused_addresses", reason="outside_pools") == 1
    assert value(registry, "bgp_speaker_refused_addresses", reason="duplicate") == 1
    assert value(registry, "bgp_speaker_refusals_total", reason="outside_pools") == 1

    metrics.set_refusals([outside, cap])
    assert value(registry, "bgp_speaker_refused_addresses", reason="duplicate") == 0
    assert value(registry, "bgp_speaker_refused_addresses", reason="prefix_cap") == 1
    assert value(registry, "bgp_speaker_refusals_total", reason="duplicate") == 1
    assert value(registry, "bgp_speaker_refusals_total", reason="prefix_cap") == 1

    # One that went away and came back is a new refusal.
    metrics.set_refusals([outside, cap, duplicate])
    assert value(registry, "bgp_speaker_refusals_total", reason="duplicate") == 2


def test_reconcile_passes(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.observe_reconcile(seconds=0.003, result="converged", at=1000.0)
    metrics.observe_reconcile(seconds=0.2, result="partial", at=1001.0)
    metrics.observe_reconcile(seconds=7.0, result="failed", at=1002.0)
    assert value(registry, "bgp_speaker_reconcile_total", result="converged") == 1
    assert value(registry, "bgp_speaker_reconcile_total", result="partial") == 1
    assert value(registry, "bgp_speaker_reconcile_total", result="failed") == 1
    assert value(registry, "bgp_speaker_reconcile_duration_seconds_count") == 3
    assert value(registry, "bgp_speaker_reconcile_duration_seconds_sum") == pytest.approx(7.203)
    # Only a converged pass moves the timestamp.
    assert value(registry, "bgp_speaker_last_converged_timestamp_seconds") == 1000.0
    # A pass that attempted nothing is not a pass.
    metrics.observe_reconcile(seconds=0.1, result="skipped", at=1003.0)
    assert value(registry, "bgp_speaker_reconcile_duration_seconds_count") == 3
    assert value(registry, "bgp_speaker_last_converged_timestamp_seconds") == 1000.0
    assert value(registry, "bgp_speaker_reconcile_total", result="skipped") is None
    with pytest.raises(ValueError, match="exploded"):
        metrics.observe_reconcile(seconds=0.1, result="exploded")  # type: ignore[arg-type]


def test_latency_buckets_resolve_milliseconds_to_ten_seconds(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    buckets = metrics_module.LATENCY_BUCKETS
    assert buckets[0] <= 0.001
    assert buckets[-1] >= 10.0
    # At least three buckets per decade between 1 ms and 10 s.
    for low in (0.001, 0.01, 0.1, 1.0):
        assert len([b for b in buckets if low <= b < low * 10]) >= 3
    observations = [0.0008, 0.004, 0.04, 0.4, 4.0, 12.0]
    for seconds in observations:
        metrics.observe_latency(seconds)
    for bound in buckets:
        expected = len([s for s in observations if s <= bound])
        assert value(registry, "bgp_speaker_announce_latency_seconds_bucket", le=str(bound)) == expected
    assert value(registry, "bgp_speaker_announce_latency_seconds_count") == len(observations)


def test_exabgp_commands_and_source(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.set_exabgp_up(True)
    assert value(registry, "bgp_speaker_exabgp_up") == 1
    metrics.set_exabgp_up(False)
    metrics.exabgp_restarted()
    metrics.exabgp_restarted()
    assert value(registry, "bgp_speaker_exabgp_up") == 0
    assert value(registry, "bgp_speaker_exabgp_restarts_total") == 2

    metrics.command("done")
    metrics.command("done")
    metrics.command("timeout")
    assert value(registry, "bgp_speaker_commands_total", result="done") == 2
    assert value(registry, "bgp_speaker_commands_total", result="timeout") == 1
    assert value(registry, "bgp_speaker_commands_total", result="error") == 0
    with pytest.raises(ValueError, match="bogus"):
        metrics.command("bogus")  # type: ignore[arg-type]

    metrics.set_source(synced=True, stale_seconds=12.5)
    assert value(registry, "bgp_speaker_source_synced") == 1
    assert value(registry, "bgp_speaker_source_stale_seconds") == 12.5
    metrics.set_source(synced=False, stale_seconds=None)
    assert value(registry, "bgp_speaker_source_synced") == 0
    assert value(registry, "bgp_speaker_source_stale_seconds") == 0
    metrics.source_error()
    assert value(registry, "bgp_speaker_source_errors_total") == 1


def test_two_instances_on_separate_registries_do_not_collide() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first, version="a").command("done")
    Metrics(second, version="b")
    assert value(first, "bgp_speaker_commands_total", result="done") == 1
    assert value(second, "bgp_speaker_commands_total", result="done") == 0


def test_label_names_are_the_module_constants(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, version="x")
    metrics.set_peer(PeerStatus(peer=P1))
    metrics.set_routes(desired={P1: rib("203.0.113.1/32")}, announced={})
    families = exposition(registry)
    used = {key for samples in families.values() for _, labels, _ in samples for key in labels} - {"le"}
    constants = {
        metrics_module.LABEL_PEER,
        metrics_module.LABEL_STATE,
        metrics_module.LABEL_FAMILY,
        metrics_module.LABEL_REASON,
        metrics_module.LABEL_RESULT,
        metrics_module.LABEL_VERSION,
        metrics_module.LABEL_KIND,
    }
    assert used == constants
