from ipaddress import ip_address

from prometheus_client import CollectorRegistry

from bgp_speaker.core.model import Candidate, PeerState, PeerStatus, host_prefix
from bgp_speaker.metrics import Metrics
from bgp_speaker.observers import LOG_EACH_UP_TO, SUMMARY_SHOWN, Activity
from bgp_speaker.ports import SourceSnapshot
from bgp_speaker.reconciler import PassReport


class RecordingEvents:
    def __init__(self) -> None:
        self.peer_changes: list[PeerStatus] = []

    def announced(self, origins):
        list(origins)

    def withdrawn(self, origins):
        list(origins)

    def refused(self, refusals):
        list(refusals)

    def peer_changed(self, status):
        self.peer_changes.append(status)

    async def run(self):
        return None


def sample(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


def test_ack_counts_become_command_counters_without_double_counting():
    registry = CollectorRegistry()
    activity = Activity(metrics=Metrics(registry, version="t"))
    activity.on_acks({"done": 3, "error": 0, "timeout": 0})
    activity.on_acks({"done": 5, "error": 1, "timeout": 0})
    activity.on_acks({"done": 5, "error": 1, "timeout": 0})
    assert sample(registry, "bgp_speaker_commands_total", result="done") == 5
    assert sample(registry, "bgp_speaker_commands_total", result="error") == 1
    assert sample(registry, "bgp_speaker_commands_total", result="timeout") == 0


def test_peer_changes_reach_metrics_and_events_once_per_change():
    registry = CollectorRegistry()
    events = RecordingEvents()
    activity = Activity(metrics=Metrics(registry, version="t"), events=events)
    peer = ip_address("10.99.0.1")
    up = PeerStatus(peer=peer, state=PeerState.ESTABLISHED)
    activity.on_peers({peer: up})
    activity.on_peers({peer: up})
    assert sample(registry, "bgp_speaker_peer_up", peer="10.99.0.1") == 1
    activity.on_peers({peer: PeerStatus(peer=peer, state=PeerState.DOWN, last_error="hold timer expired")})
    assert sample(registry, "bgp_speaker_peer_up", peer="10.99.0.1") == 0
    assert [s.state for s in events.peer_changes] == [PeerState.ESTABLISHED, PeerState.DOWN]


def pass_report(candidates, *, announced=(), withdrawn=()):
    return PassReport(
        at=0.0,
        duration=0.0,
        result="converged",
        snapshot=SourceSnapshot(candidates=tuple(candidates), synced=True),
        newly_announced=frozenset(announced),
        newly_withdrawn=frozenset(withdrawn),
    )


def host(i):
    return host_prefix(ip_address(f"203.0.113.{i}"))


def change_lines(caplog, message):
    return [r for r in caplog.records if r.name == "bgp_speaker.observers" and r.getMessage() == message]


def test_small_changes_log_each_prefix_with_its_origin_large_ones_one_summary(caplog):
    caplog.set_level("INFO", logger="bgp_speaker.observers")
    activity = Activity(metrics=Metrics(CollectorRegistry(), version="t"))
    few = [Candidate(address=ip_address(f"203.0.113.{i}"), origin=f"file:e[{i}]") for i in range(1, 4)]
    activity.on_pass(pass_report(few, announced=[host(i) for i in range(1, 4)]))
    lines = change_lines(caplog, "announced")
    assert [(r.prefix, r.origin) for r in lines] == [
        (f"203.0.113.{i}/32", f"file:e[{i}]") for i in range(1, 4)
    ]

    caplog.clear()
    many = range(1, LOG_EACH_UP_TO + 2)
    activity.on_pass(pass_report([], withdrawn=[host(i) for i in many]))
    (summary,) = change_lines(caplog, "withdrawn")
    assert summary.count == len(many)
    assert summary.first == ",".join(f"203.0.113.{i}/32" for i in range(1, SUMMARY_SHOWN + 1))


def test_a_withdrawal_names_the_entry_that_left_the_file(caplog):
    caplog.set_level("INFO", logger="bgp_speaker.observers")
    activity = Activity(metrics=Metrics(CollectorRegistry(), version="t"))
    kept = Candidate(address=ip_address("203.0.113.1"), origin="file:e[0]")
    gone = Candidate(address=ip_address("203.0.113.2"), origin="file:e[1]")
    activity.on_pass(pass_report([kept, gone], announced=[host(1), host(2)]))
    activity.on_pass(pass_report([kept], withdrawn=[host(2)]))
    (line,) = change_lines(caplog, "withdrawn")
    assert (line.prefix, line.origin) == ("203.0.113.2/32", "file:e[1]")
    assert activity.origin(host(1)) == "file:e[0]"


def test_dataplane_mismatches_are_exported_and_reported_once_each():
    registry = CollectorRegistry()
    posted: list[tuple[str, str, str]] = []
    activity = Activity(
        metrics=Metrics(registry, version="t"), gateway_event=lambda *event: posted.append(event)
    )
    activity.on_dataplane(None)
    assert sample(registry, "bgp_speaker_dataplane_readable") == -1
    status = {
        "mode": "require",
        "capable": True,
        "observations": [
            {"address": "203.0.113.10", "kind": "bound-but-missing"},
            {"address": "203.0.113.99", "kind": "present-but-unbound"},
        ],
    }
    activity.on_dataplane(status)
    activity.on_dataplane(status)
    assert sample(registry, "bgp_speaker_dataplane_readable") == 1
    assert sample(registry, "bgp_speaker_dataplane_mismatches", kind="bound-but-missing") == 1
    assert sample(registry, "bgp_speaker_dataplane_mismatches", kind="present-but-unbound") == 1
    assert [(reason, kind) for reason, kind, _ in posted] == [("DataplaneMismatch", "Warning")] * 2
    assert "203.0.113.10: bound in Kubernetes but its NAT rules are missing" in posted[0][2]
    activity.on_dataplane({"mode": "require", "capable": False, "observations": []})
    assert sample(registry, "bgp_speaker_dataplane_readable") == 0
    assert sample(registry, "bgp_speaker_dataplane_mismatches", kind="bound-but-missing") == 0
