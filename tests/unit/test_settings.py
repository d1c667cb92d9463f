import textwrap
from ipaddress import ip_address, ip_network

import pytest

from bgp_speaker import settings
from bgp_speaker.errors import ConfigError

BASE = {
    "local_as": 65001,
    "peers": [{"address": "172.31.255.1", "asn": 65000}],
    "pools": ["203.0.113.0/24"],
    "source": {"kind": "file", "file": {"path": "/etc/bgp-speaker/eips.yaml"}},
}


def with_(**changes):
    doc = {**BASE, **changes}
    return doc


def test_defaults_are_production_sane():
    cfg = settings.from_mapping(BASE, origin="t", environ={})
    peer = cfg.peers[0]
    assert peer.hold_time == 9
    assert peer.port == 179
    assert not peer.passive
    assert cfg.interconnect.interface == "net1"
    assert cfg.shutdown.graceful_shutdown
    assert cfg.http.listen == "0.0.0.0:10667"
    policy = cfg.routing_policy()
    assert policy.pools == (ip_network("203.0.113.0/24"),)
    assert policy.peers[0].peer == ip_address("172.31.255.1")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"local_as": 0}, "local_as: Input should be greater than or equal to 1 (got 0)"),
        ({"pools": ["203.0.113.1/24"]}, "pools.0: not a CIDR with host bits clear: '203.0.113.1/24'"),
        ({"pools": []}, "pools: Tuple should have at least 1 item"),
        (
            {"peers": [{"address": "172.31.255.1", "asn": 65000, "hold_time": 2}]},
            "peers.0.hold_time: hold time must be 0 or 3-65535 seconds, got 2",
        ),
        (
            {"peers": [{"address": "10.0.0.300", "asn": 1}]},
            "peers.0.address: value is not a valid IPv4 or IPv6 address (got '10.0.0.300')",
        ),
        (
            {"announce": {"communities": ["65000:70000"]}},
            "announce.communities.0: standard community must be ASN:VALUE",
        ),
        (
            {"announce": {"large_communities": ["1:2"]}},
            "announce.large_communities.0: large community must be GLOBAL:LOCAL1:LOCAL2",
        ),
        ({"peerz": []}, "peerz: Extra inputs are not permitted"),
        ({"source": {"kind": "file"}}, "source: source.kind is 'file' but source.file.path is not set"),
        (
            {"peers": [{"address": "172.31.255.1", "asn": 1}, {"address": "172.31.255.1", "asn": 2}]},
            "peer 172.31.255.1 is listed twice",
        ),
    ],
)
def test_bad_values_name_the_field_and_the_value(change, expected):
    with pytest.raises(ConfigError) as info:
        settings.from_mapping(with_(**change), origin="cfg.yaml", environ={})
    assert expected in str(info.value)
    assert str(info.value).startswith("cfg.yaml: ")


def test_every_error_is_reported_at_once():
    doc = with_(local_as=0, pools=["x"], peers=[{"address": "1.2.3.4", "asn": 0}])
    with pytest.raises(ConfigError) as info:
        settings.from_mapping(doc, origin="cfg.yaml", environ={})
    lines = str(info.value).splitlines()
    assert {line.split(":")[1].strip() for line in lines} == {"local_as", "pools.0", "peers.0.asn"}


def test_environment_overrides_the_file():
    cfg = settings.from_mapping(
        BASE, origin="t", environ={"BGP_SPEAKER_LOCAL_AS": "65042", "BGP_SPEAKER_HTTP__LISTEN": "127.0.0.1:9"}
    )
    assert cfg.local_as == 65042
    assert cfg.http.listen == "127.0.0.1:9"


def test_load_reports_yaml_errors_with_the_file_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("local_as: [\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML"):
        settings.load(path, environ={})
    path.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping, got list"):
        settings.load(path, environ={})
    with pytest.raises(ConfigError, match="cannot read config"):
        settings.load(tmp_path / "missing.yaml", environ={})


def test_load_full_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        textwrap.dedent(
            """
            local_as: 65001
            peers:
              - {address: "fd00:ffff::1", asn: 65000, families: [ipv6], max_prefixes: 10}
            pools: [2001:db8:e1b::/64]
            announce: {communities: ["65000:100"], med: 10}
            source: {file: {path: eips.yaml}}
            """
        )
    )
    cfg = settings.load(path, environ={})
    assert cfg.peers[0].families == ("ipv6",)
    assert cfg.routing_policy().defaults.communities == ("65000:100",)


def test_password_file_is_read_and_checked(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = settings.from_mapping(
        with_(peers=[{"address": "172.31.255.1", "asn": 1, "password_file": str(secret)}]),
        origin="t",
        environ={},
    )
    assert cfg.peers[0].read_password() == "s3cret"
    secret.write_text('has"quote')
    with pytest.raises(ConfigError, match="password_file") as info:
        cfg.peers[0].read_password()
    assert 'has"quote' not in str(info.value)
    missing = settings.from_mapping(
        with_(peers=[{"address": "172.31.255.1", "asn": 1, "password_file": str(tmp_path / "nope")}]),
        origin="t",
        environ={},
    )
    with pytest.raises(ConfigError, match="cannot read"):
        missing.peers[0].read_password()
