"""Live configuration: merge order, ConfigMap parsing, change classification, last good config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bgp_speaker import config_changes
from bgp_speaker.config_changes import Changes, Overlays, classify, merge, parse_configmap
from bgp_speaker.errors import ConfigError
from bgp_speaker.livecfg import LiveConfig
from bgp_speaker.settings import Settings, from_mapping

GW = "gw1"


def base(**extra: Any) -> dict[str, Any]:
    mapping: dict[str, Any] = {
        "local_as": 65001,
        "peers": [
            {"address": "10.99.0.1", "asn": 65000, "hold_time": 9, "families": ["ipv4"]},
            {"address": "fd00:99::1", "asn": 65000, "hold_time": 9, "families": ["ipv6"]},
        ],
        "pools": ["0.0.0.0/0", "::/0"],
        "source": {"kind": "kubernetes", "kubernetes": {"gateway_name": GW, "policy": "annotated"}},
    }
    return merge(mapping, extra)


def settings(mapping: dict[str, Any]) -> Settings:
    return from_mapping(mapping, origin="test", environ={})


# --- merge ----------------------------------------------------------------------------------


def test_merge_is_key_by_key_for_mappings_and_replaces_lists_whole() -> None:
    below = {"announce": {"med": 10, "communities": ["65000:1", "65000:2"]}, "pools": ["10.0.0.0/8"]}
    over = {"announce": {"communities": ["65000:3"]}, "http": {"listen": ""}}
    merged = merge(below, over)
    assert merged == {
        "announce": {"med": 10, "communities": ["65000:3"]},
        "pools": ["10.0.0.0/8"],
        "http": {"listen": ""},
    }
    assert below["announce"]["communities"] == ["65000:1", "65000:2"], "inputs are not modified"


def test_merge_order_later_overlay_wins() -> None:
    merged = merge({"a": {"b": 1, "c": 1}}, {"a": {"b": 2}}, {"a": {"b": 3, "d": 4}})
    assert merged == {"a": {"b": 3, "c": 1, "d": 4}}


def test_a_mapping_over_a_scalar_replaces_it() -> None:
    assert merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}


# --- ConfigMap parsing ----------------------------------------------------------------------


def test_configmap_keys_in_merge_order_and_other_gateways_ignored() -> None:
    data = {
        "gateway.gw1.yaml": "announce: {med: 7}\n",
        "defaults.yaml": "announce: {med: 5, communities: ['65000:1']}\n",
        "gateway.gw2.yaml": "announce: {med: 99}\n",
        "passwords-secret": "bgp-speaker-passwords",
    }
    overlays = parse_configmap(data, gateway=GW)
    assert overlays.keys == ("defaults.yaml", "gateway.gw1.yaml")
    effective = settings(merge(base(), *(layer for _, layer in overlays.layers)))
    assert effective.announce.med == 7
    assert effective.announce.communities == ("65000:1",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("announce: [unclosed", "defaults.yaml: not valid YAML"),
        ("- a list\n", "defaults.yaml: the top level must be a mapping, got list"),
    ],
)
def test_bad_yaml_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_configmap({"defaults.yaml": text}, gateway=GW)


def test_empty_and_missing_configmap_give_no_overlay() -> None:
    assert parse_configmap(None, gateway=GW) == Overlays()
    assert parse_configmap({"defaults.yaml": ""}, gateway=GW).layers == (("defaults.yaml", {}),)


def test_an_invalid_value_is_reported_with_field_and_value() -> None:
    overlays = parse_configmap({"defaults.yaml": "announce: {med: -1}\n"}, gateway=GW)
    with pytest.raises(ConfigError) as error:
        config_changes.build(base(), overlays, origin="args", environ={})
    assert "announce.med" in str(error.value)
    assert "-1" in str(error.value)
    assert "ConfigMap defaults.yaml" in str(error.value)


# --- classify -------------------------------------------------------------------------------


def test_no_change_is_empty() -> None:
    assert classify(settings(base()), settings(base())).empty


@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        ({"pools": ["203.0.113.0/24"]}, ["pools"]),
        ({"announce": {"communities": ["65000:100"]}}, ["announce.communities"]),
        ({"announce": {"med": 10, "as_path_prepend": 2}}, ["announce.as_path_prepend", "announce.med"]),
        ({"source": {"kubernetes": {"policy": "bound"}}}, ["source.kubernetes.policy"]),
        ({"source": {"kubernetes": {"hold_down_seconds": 1}}}, ["source.kubernetes.hold_down_seconds"]),
    ],
)
def test_route_level_changes_touch_no_session(overlay: dict[str, Any], expected: list[str]) -> None:
    changes = classify(settings(base()), settings(base(**overlay)))
    assert list(changes.route) == expected
    assert not changes.peers
    assert not changes.sessions
    assert not changes.restart


def test_max_prefixes_is_route_level_and_description_is_live() -> None:
    new = base()
    new["peers"][0] = {**new["peers"][0], "max_prefixes": 10, "description": "core-a"}
    changes = classify(settings(base()), settings(new))
    assert changes.route == ("peers[10.99.0.1].max_prefixes",)
    assert changes.live == ("peers[10.99.0.1].description",)
    assert not changes.peers
    assert changes.rerender, "the description is in the ExaBGP config, without a reset"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hold_time", 30),
        ("asn", 65010),
        ("port", 1179),
        ("multihop_ttl", 2),
        ("incoming_ttl", 255),
        ("passive", True),
        ("local_address", "10.99.0.11"),
        ("families", ["ipv4", "ipv6"]),
        ("graceful_restart_time", 120),
    ],
)
def test_session_changes_reset_only_that_peer(field: str, value: object) -> None:
    new = base()
    new["peers"][1 if field != "local_address" else 0] = {
        **new["peers"][1 if field != "local_address" else 0],
        field: value,
    }
    changes = classify(settings(base()), settings(new))
    peer = "fd00:99::1" if field != "local_address" else "10.99.0.1"
    assert changes.peers == (config_changes.PeerChange(peer=peer, change="reset", fields=(field,)),)
    assert changes.sessions
    assert not changes.restart


def test_global_session_fields_reset_every_peer() -> None:
    changes = classify(settings(base()), settings(base(router_id="192.0.2.9")))
    assert {p.peer for p in changes.peers} == {"10.99.0.1", "fd00:99::1"}
    assert all(p.fields == ("router_id",) for p in changes.peers)


def test_added_and_removed_peers() -> None:
    new = base()
    new["peers"] = [new["peers"][0], {"address": "10.99.0.2", "asn": 65000}]
    changes = classify(settings(base()), settings(new))
    assert set(changes.peers) == {
        config_changes.PeerChange(peer="fd00:99::1", change="removed"),
        config_changes.PeerChange(peer="10.99.0.2", change="added"),
    }


def test_a_new_password_behind_the_same_file_resets_that_peer(tmp_path: Path) -> None:
    secret = tmp_path / "core"
    secret.write_text("old-password\n")
    mapping = base()
    mapping["peers"][0]["password_file"] = str(secret)
    old = settings(mapping)
    before = config_changes.password_digests(old)
    secret.write_text("new-password\n")
    after = config_changes.password_digests(old)
    changes = classify(old, settings(mapping), old_passwords=before, new_passwords=after)
    assert changes.peers == (
        config_changes.PeerChange(peer="10.99.0.1", change="reset", fields=("password",)),
    )
    assert "password" not in repr(before)
    assert "new-password" not in repr(changes.as_dict())


@pytest.mark.parametrize(
    ("overlay", "path"),
    [
        ({"http": {"listen": "0.0.0.0:9999"}}, "http.listen"),
        ({"exabgp": {"window": 16}}, "exabgp.window"),
        ({"dataplane": {"mode": "observe"}}, "dataplane.mode"),
        ({"interconnect": {"interface": "eth9"}}, "interconnect.interface"),
        ({"source": {"kubernetes": {"events": False}}}, "source.kubernetes.events"),
        ({"logging": {"format": "json"}}, "logging.format"),
    ],
)
def test_restart_fields_are_reported_and_kept(overlay: dict[str, Any], path: str) -> None:
    old, new = settings(base()), settings(base(announce={"med": 5}, **overlay))
    changes = classify(old, new)
    assert changes.restart == (path,)
    assert changes.route == ("announce.med",)
    applied = config_changes.keep_restart_fields(old, new, changes.restart)
    assert applied.announce.med == 5, "what can be applied is"
    assert _get(applied, path) == _get(old, path), "what needs a restart keeps its running value"
    assert classify(old, applied).restart == ()


def _get(model: BaseModel, path: str) -> object:
    value: object = model
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_every_settings_field_is_classified() -> None:
    """A new setting must be sorted consciously: unknown paths default to restart, which is safe,
    but the tables must not name fields that do not exist."""
    top = set(Settings.model_fields)
    named = {rule.split(".")[0] for rule in (*config_changes.ROUTE_FIELDS, *config_changes.LIVE_FIELDS)}
    assert named <= top
    assert set(config_changes.GLOBAL_SESSION_FIELDS) <= top
    peer_fields = set(
        config_changes.PEER_SESSION_FIELDS
        + config_changes.PEER_ROUTE_FIELDS
        + config_changes.PEER_LIVE_FIELDS
    )
    assert peer_fields == set(Settings.model_fields["peers"].annotation.__args__[0].model_fields) - {
        "address"
    }  # type: ignore[union-attr]


# --- LiveConfig: last good config, events, status -------------------------------------------


class Recorder:
    """A Target that records what was applied, in order, and enforces that a session reload is
    announced (event) before it happens."""

    def __init__(self, *, fail_sessions: bool = False) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail_sessions = fail_sessions

    def apply_routes(self, settings: Settings) -> None:
        self.calls.append(("routes", settings))

    async def apply_sessions(self, settings: Settings, changes: Changes) -> None:
        resets = {p.peer for p in changes.peers if p.change == "reset"}
        evented = [message for _, (reason, _, message) in self._events() if reason == "PeerReset"]
        assert all(any(f" {peer}:" in m for m in evented) for peer in resets), "evented before it happens"
        if self.fail_sessions:
            raise ConfigError("peers[10.99.0.1]: ExaBGP cannot take this")
        self.calls.append(("sessions", changes))

    def config_event(self, reason: str, type_: str, message: str) -> None:
        self.calls.append(("event", (reason, type_, message)))

    def config_state(self, *, valid: bool, pending_restart: int) -> None:
        self.calls.append(("state", (valid, pending_restart)))

    def _events(self) -> list[tuple[str, tuple[str, str, str]]]:
        return [(k, v) for k, v in self.calls if k == "event"]  # type: ignore[misc]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    def reasons(self) -> list[str]:
        return [value[0] for _, value in self._events()]


def live(**kwargs: Any) -> LiveConfig:
    return LiveConfig(base=base(), origin="kube-ovn-speaker arguments", gateway=GW, environ={}, **kwargs)


async def test_route_change_applies_routes_only() -> None:
    config = live()
    config.initial(None)
    target = Recorder()
    changes = await config.update(
        {"defaults.yaml": "announce: {communities: ['65000:100']}"}, version="2", target=target
    )
    assert changes is not None
    assert changes.route == ("announce.communities",)
    assert "sessions" not in target.kinds()
    assert target.kinds().count("routes") == 1
    assert config.running.announce.communities == ("65000:100",)
    assert config.status()["overlays"] == ["defaults.yaml"]
    assert config.status()["valid"] is True


async def test_bad_configmap_keeps_the_last_good_config_and_says_why() -> None:
    config = live()
    config.initial({"defaults.yaml": "announce: {med: 5}"}, version="1")
    target = Recorder()
    assert await config.update({"defaults.yaml": "announce: {med: many}"}, version="2", target=target) is None
    assert config.running.announce.med == 5
    status = config.status()
    assert status["valid"] is False
    assert "announce.med" in status["error"]
    assert "many" in status["error"]
    assert ("state", (False, 0)) in target.calls
    assert target.reasons() == ["ConfigInvalid"]
    assert "routes" not in target.kinds()
    assert "sessions" not in target.kinds()
    # the same bad version again: no second event
    await config.update({"defaults.yaml": "announce: {med: many}"}, version="3", target=target)
    assert target.reasons() == ["ConfigInvalid"]
    # fixed: valid again
    await config.update({"defaults.yaml": "announce: {med: 6}"}, version="4", target=target)
    assert config.status()["valid"] is True
    assert config.running.announce.med == 6


async def test_bad_configmap_at_start_runs_the_base_and_reports_it() -> None:
    config = live()
    started = config.initial({"gateway.gw1.yaml": "pools: [not-a-cidr]"}, version="7")
    assert started.pools == ("0.0.0.0/0", "::/0")
    assert config.status()["valid"] is False
    assert "pools" in config.status()["error"]


async def test_session_change_is_evented_before_the_reload() -> None:
    config = live()
    config.initial(None)
    target = Recorder()
    overlay = (
        "peers:\n"
        "- {address: 10.99.0.1, asn: 65000, hold_time: 9, families: [ipv4]}\n"
        "- {address: 'fd00:99::1', asn: 65000, hold_time: 30, families: [ipv6]}\n"
    )
    changes = await config.update({"gateway.gw1.yaml": overlay}, version="2", target=target)
    assert changes is not None
    assert [p.peer for p in changes.peers] == ["fd00:99::1"]
    assert target.kinds().index("event") < target.kinds().index("sessions") < target.kinds().index("routes")
    assert "PeerReset" in target.reasons()


async def test_a_failed_reload_keeps_the_last_good_config() -> None:
    config = live()
    config.initial(None)
    target = Recorder(fail_sessions=True)
    overlay = "peers:\n- {address: 10.99.0.1, asn: 65000, hold_time: 30, families: [ipv4]}\n"
    assert await config.update({"gateway.gw1.yaml": overlay}, version="2", target=target) is None
    assert len(config.running.peers) == 2
    assert config.status()["valid"] is False


async def test_restart_only_change_is_reported_not_applied() -> None:
    config = live()
    config.initial(None)
    target = Recorder()
    changes = await config.update(
        {"defaults.yaml": "http: {listen: '0.0.0.0:9999'}"}, version="2", target=target
    )
    assert changes is not None
    assert changes.restart == ("http.listen",)
    assert config.running.http.listen == "0.0.0.0:10667"
    assert config.status()["pending_restart"] == ["http.listen"]
    assert ("state", (True, 1)) in target.calls
    assert target.reasons() == ["ConfigNeedsRestart"]


async def test_missing_password_file_is_invalid(tmp_path: Path) -> None:
    config = live()
    config.initial(None)
    target = Recorder()
    overlay = (
        "peers:\n"
        "- {address: 10.99.0.1, asn: 65000, hold_time: 9, families: [ipv4],\n"
        f"   password_file: {tmp_path}/core}}\n"
    )
    assert await config.update({"gateway.gw1.yaml": overlay}, version="2", target=target) is None
    assert "password_file" in config.status()["error"]
