from ipaddress import ip_address

from prometheus_client import CollectorRegistry

from bgp_speaker.core.model import PeerState, PeerStatus
from bgp_speaker.metrics import Metrics
from bgp_speaker.observers import Activity


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
