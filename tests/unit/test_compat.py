"""kube-ovn-speaker drop-in: the exact argv Kube-OVN's controller builds -> our validated config."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgp_speaker import compat, settings
from bgp_speaker.errors import ConfigError

PASSWORD = "s3cr3t-Md5!key"
ENV = {"GATEWAY_NAME": "gw1", "POD_IP": "10.0.1.254", "POD_IPS": "10.0.1.254"}


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() for the whole-second and sub-second values a CR can hold."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, scale in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if ns < scale * 1000:
                return f"{ns / scale:g}{unit}"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{rest / 1e9:g}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


@dataclass
class BgpSpeakerSpec:
    """VpcNatGateway spec.bgpSpeaker, the fields the controller turns into arguments."""

    asn: int
    remote_asn: int
    neighbors: list[str]
    hold_time: float = 0.0
    router_id: str = ""
    password: str = ""
    enable_graceful_restart: bool = False
    extra_args: list[str] = field(default_factory=list)


def controller_argv(spec: BgpSpeakerSpec) -> list[str]:
    """The sidecar's args as Kube-OVN's GenNatGwBgpSpeakerContainer orders and spells them."""
    argv = ["--nat-gw-mode"]
    if spec.router_id:
        argv.append(f"--router-id={spec.router_id}")
    if spec.password:
        argv.append(f"--auth-password={spec.password}")
    if spec.enable_graceful_restart:
        argv.append("--graceful-restart")
    if spec.hold_time:
        argv.append(f"--holdtime={go_duration(spec.hold_time)}")
    argv += [f"--cluster-as={spec.asn}", f"--neighbor-as={spec.remote_asn}"]
    v4 = [n for n in spec.neighbors if ip_address(n).version == 4]
    v6 = [n for n in spec.neighbors if ip_address(n).version == 6]
    if v4:
        argv.append(f"--neighbor-address={','.join(v4)}")
    if v6:
        argv.append(f"--neighbor-ipv6-address={','.join(v6)}")
    return argv + spec.extra_args


def run(
    argv: list[str], tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[compat.CompatResult, settings.Settings]:
    environ = ENV if env is None else env
    result = compat.parse_kube_ovn_speaker_args(argv, environ=environ, runtime_dir=tmp_path / "run")
    return result, settings.from_mapping(result.settings_mapping, origin=compat.ORIGIN, environ=environ)


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "1m30s"), (3, "3s"), (60, "1m0s"), (3600, "1h0m0s"), (9, "9s"), (0.5, "500ms")]
)
def test_go_duration_helper_matches_go(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_exact_ipv4_argv(tmp_path: Path) -> None:
    argv = controller_argv(BgpSpeakerSpec(asn=65000, remote_asn=65001, neighbors=["172.16.100.1"]))
    assert argv == [
        "--nat-gw-mode",
        "--cluster-as=65000",
        "--neighbor-as=65001",
        "--neighbor-address=172.16.100.1",
    ]
    result, cfg = run(argv, tmp_path)
    assert cfg.local_as == 65000
    assert [(str(p.address), p.asn, p.hold_time, p.families) for p in cfg.peers] == [
        ("172.16.100.1", 65001, 90, ("ipv4",))
    ]
    assert str(cfg.router_id) == "10.0.1.254"
    assert cfg.source.kind == "kubernetes"
    assert cfg.source.kubernetes.policy == "annotated" == result.policy
    assert cfg.source.kubernetes.gateway_name == "gw1"
    assert cfg.http.listen == "0.0.0.0:10667"
    assert cfg.pools == ("0.0.0.0/0", "::/0")
    assert cfg.peers[0].password_file is None
    assert cfg.peers[0].graceful_restart_time is None
    assert [w.split(":")[0] for w in result.warnings] == ["pools"]


def test_ipv6_only(tmp_path: Path) -> None:
    spec = BgpSpeakerSpec(asn=65000, remote_asn=65001, neighbors=["fd00:100::1", "fd00:100::2"], hold_time=9)
    argv = controller_argv(spec)
    assert argv == [
        "--nat-gw-mode",
        "--holdtime=9s",
        "--cluster-as=65000",
        "--neighbor-as=65001",
        "--neighbor-ipv6-address=fd00:100::1,fd00:100::2",
    ]
    env = {"GATEWAY_NAME": "gw6", "POD_IP": "fd00:10::5", "POD_IPS": "fd00:10::5"}
    result, cfg = run(argv, tmp_path, env)
    assert [(str(p.address), p.families, p.hold_time) for p in cfg.peers] == [
        ("fd00:100::1", ("ipv6",), 9),
        ("fd00:100::2", ("ipv6",), 9),
    ]
    assert cfg.router_id is None  # no IPv4 anywhere: our default (net1's IPv4) applies
    assert "router_id" not in result.settings_mapping


def test_dual_stack_password_graceful_restart(tmp_path: Path) -> None:
    spec = BgpSpeakerSpec(
        asn=4200000001,
        remote_asn=65001,
        neighbors=["172.16.100.1", "fd00:100::1", "172.16.100.2"],
        hold_time=90,
        router_id="172.16.100.10",
        password=PASSWORD,
        enable_graceful_restart=True,
    )
    argv = controller_argv(spec)
    assert argv == [
        "--nat-gw-mode",
        "--router-id=172.16.100.10",
        f"--auth-password={PASSWORD}",
        "--graceful-restart",
        "--holdtime=1m30s",
        "--cluster-as=4200000001",
        "--neighbor-as=65001",
        "--neighbor-address=172.16.100.1,172.16.100.2",
        "--neighbor-ipv6-address=fd00:100::1",
    ]
    env = {**ENV, "POD_IPS": "fd00:10::5,10.0.1.254"}
    result, cfg = run(argv, tmp_path, env)
    assert cfg.local_as == 4200000001
    assert str(cfg.router_id) == "172.16.100.10"
    assert [(str(p.address), p.families) for p in cfg.peers] == [
        ("172.16.100.1", ("ipv4",)),
        ("172.16.100.2", ("ipv4",)),
        ("fd00:100::1", ("ipv6",)),
    ]
    assert {p.hold_time for p in cfg.peers} == {90}
    assert {p.graceful_restart_time for p in cfg.peers} == {90}
    files = {p.password_file for p in cfg.peers}
    assert len(files) == 1
    (path,) = files
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert all(p.read_password() == PASSWORD for p in cfg.peers)
    # the password is nowhere but in that file
    assert PASSWORD not in json.dumps(result.settings_mapping)
    assert PASSWORD not in "\n".join(result.warnings)
    assert PASSWORD not in compat.render_compat_config(result)
    assert PASSWORD not in repr(cfg)


def test_documented_extra_args(tmp_path: Path) -> None:
    extra = [
        "--ebgp-multihop=3",
        "--passivemode",
        "--enable-bfd",
        "--bfd-min-tx=300",
        "--bfd-min-rx=300",
        "--bfd-detection-multiplier=3",
        "--graceful-restart-time=2m0s",
        "--graceful-restart-deferral-time=6m0s",
        "--extended-nexthop",
        "--allowed-source-addresses=172.16.100.20",
        "--allowed-source-ipv6-addresses=fd00:100::20,fd00:100::21",
        "--node-ips=192.168.0.5",
        "--pprof-port=9100",
        "--enable-metrics=true",
        "--grpc-host=127.0.0.1",
        "--grpc-port=50052",
        "--kubeconfig=/etc/kube/config",
        "--log-perm=600",
        "-v5",
    ]
    spec = BgpSpeakerSpec(
        asn=65000,
        remote_asn=65001,
        neighbors=["172.16.100.1"],
        enable_graceful_restart=True,
        extra_args=extra,
    )
    result, cfg = run(controller_argv(spec), tmp_path)
    (peer,) = cfg.peers
    assert peer.multihop_ttl == 3
    assert peer.passive is True
    assert peer.graceful_restart_time == 120
    assert peer.families == ("ipv4", "ipv6")  # extended next hop: both families to every peer
    assert str(cfg.interconnect.next_hop_ipv4) == "172.16.100.20"
    assert cfg.interconnect.next_hop_ipv6 is None  # several candidates: not pinned
    assert cfg.http.listen == "0.0.0.0:9100"
    assert str(cfg.source.kubernetes.kubeconfig) == "/etc/kube/config"
    assert cfg.logging.level == "DEBUG"
    warned = " ".join(result.warnings)
    for name in (
        "--passivemode",
        "--enable-bfd",
        "--bfd-min-tx",
        "--bfd-min-rx",
        "--bfd-detection-multiplier",
        "--graceful-restart-deferral-time",
        "--extended-nexthop",
        "--allowed-source-ipv6-addresses",
        "--node-ips",
        "--grpc-host",
        "--grpc-port",
        "--log-perm",
    ):
        assert name in warned, name
    for honoured in ("--ebgp-multihop", "--pprof-port", "--kubeconfig", "--allowed-source-addresses="):
        assert honoured not in warned


def test_two_element_and_single_dash_spellings(tmp_path: Path) -> None:
    argv = ["-nat-gw-mode", "--cluster-as", "65000", "-neighbor-as", "65001"]
    argv += ["--neighbor-address", "172.16.100.1", "--holdtime", "1m0s", "--v", "2"]
    _, cfg = run(argv, tmp_path)
    assert (cfg.local_as, cfg.peers[0].asn, cfg.peers[0].hold_time, cfg.logging.level) == (
        65000,
        65001,
        60,
        "INFO",
    )


def test_unknown_flags_warn_and_never_raise(tmp_path: Path) -> None:
    spec = BgpSpeakerSpec(
        asn=65000,
        remote_asn=65001,
        neighbors=["172.16.100.1"],
        extra_args=["--frobnicate=1", "--turbo", "--level", "9", "stray", "--logtostderr=false"],
    )
    result, cfg = run(controller_argv(spec), tmp_path)
    assert cfg.local_as == 65000
    messages = "\n".join(result.warnings)
    for name in ("--frobnicate", "--turbo", "--level", "--logtostderr"):
        assert name in messages
    assert "1 argument(s) that are not flags" in messages


def test_nat_gw_mode_missing_is_a_warning(tmp_path: Path) -> None:
    result, _ = run(["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.9.9.9"], tmp_path)
    assert any(w.startswith("--nat-gw-mode") for w in result.warnings)


@pytest.mark.parametrize(
    ("env", "extra", "policy"),
    [
        ({}, [], "annotated"),
        ({"BGP_SPEAKER_POLICY": "bound"}, [], "bound"),
        ({}, ["--announce-policy=ready"], "ready"),
        ({"BGP_SPEAKER_POLICY": "ready"}, ["--announce-policy=bound"], "bound"),
        ({"BGP_SPEAKER_SOURCE__KUBERNETES__POLICY": "ready", "BGP_SPEAKER_POLICY": "bound"}, [], "ready"),
    ],
)
def test_policy_switch(tmp_path: Path, env: dict[str, str], extra: list[str], policy: str) -> None:
    spec = BgpSpeakerSpec(asn=65000, remote_asn=65001, neighbors=["172.16.100.1"], extra_args=extra)
    result, cfg = run(controller_argv(spec), tmp_path, {**ENV, **env})
    assert result.policy == policy == cfg.source.kubernetes.policy


def test_our_pools_flag(tmp_path: Path) -> None:
    argv = controller_argv(
        BgpSpeakerSpec(65000, 65001, ["172.16.100.1"], extra_args=["--pools=203.0.113.0/24,2001:db8::/48"])
    )
    result, cfg = run(argv, tmp_path)
    assert cfg.pools == ("203.0.113.0/24", "2001:db8::/48")
    assert not any(w.startswith("pools") for w in result.warnings)


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--nat-gw-mode", "--neighbor-as=2", "--neighbor-address=10.9.9.9"], ENV, "--cluster-as must be"),
        (
            ["--nat-gw-mode", "--cluster-as=0", "--neighbor-as=2", "--neighbor-address=10.9.9.9"],
            ENV,
            "--cluster-as",
        ),
        (["--cluster-as=1", "--neighbor-as=2"], ENV, "at least one of --neighbor-address"),
        (["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=fd00::1"], ENV, "is not an IPv4 address"),
        (["--cluster-as=1", "--neighbor-as=2", "--neighbor-ipv6-address=10.0.0.1"], ENV, "not an IPv6"),
        (["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1,fd00::1"], ENV, "not an IPv4"),
        (
            ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", "--holdtime=2s"],
            ENV,
            "3s-65536s",
        ),
        (
            ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", "--holdtime=90"],
            ENV,
            "duration",
        ),
        (
            ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", "--ebgp-multihop=0"],
            ENV,
            "1-255",
        ),
        (
            ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", "--router-id=fd00::1"],
            ENV,
            "IPv4",
        ),
        (["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1"], {}, "GATEWAY_NAME"),
        (
            ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", "--announce-policy=all"],
            ENV,
            "--announce-policy: must be one of",
        ),
        (
            ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", "--node-route-eip-mode"],
            ENV,
            "not supp",
        ),
        (
            [
                "--cluster-as=1",
                "--neighbor-as=2",
                "--neighbor-address=10.0.0.1",
                "--graceful-restart",
                "--graceful-restart-time=5000s",
            ],
            ENV,
            "1s-4095s",
        ),
    ],
)
def test_refused_like_upstream(tmp_path: Path, argv: list[str], env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        compat.parse_kube_ovn_speaker_args(argv, environ=env, runtime_dir=tmp_path)


@pytest.mark.parametrize("password", ['with"quote', "x" * 81, "tab\there"])
def test_bad_password_is_refused_without_echo(tmp_path: Path, password: str) -> None:
    argv = ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", f"--auth-password={password}"]
    with pytest.raises(ConfigError) as info:
        compat.parse_kube_ovn_speaker_args(argv, environ=ENV, runtime_dir=tmp_path)
    assert password not in str(info.value)
    assert not any(tmp_path.iterdir())


def test_password_needs_a_runtime_dir() -> None:
    argv = ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", f"--auth-password={PASSWORD}"]
    with pytest.raises(ConfigError, match="runtime directory") as info:
        compat.parse_kube_ovn_speaker_args(argv, environ=ENV)
    assert PASSWORD not in str(info.value)


def test_empty_password_means_none(tmp_path: Path) -> None:
    _, cfg = run(
        ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", "--auth-password="], tmp_path
    )
    assert cfg.peers[0].password_file is None


@pytest.mark.parametrize(
    ("holdtime", "seconds", "warned"),
    [
        ("3s", 3, False),
        ("1m0s", 60, False),
        ("9.9s", 9, False),
        ("18h12m16s", 65535, True),
        ("65536s", 65535, True),
    ],
)
def test_hold_time(tmp_path: Path, holdtime: str, seconds: int, warned: bool) -> None:
    argv = ["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", f"--holdtime={holdtime}"]
    result, cfg = run(argv, tmp_path)
    assert cfg.peers[0].hold_time == seconds
    assert any(w.startswith("--holdtime") for w in result.warnings) is warned


@pytest.mark.parametrize(
    ("flags", "listen"),
    [([], "0.0.0.0:10667"), (["--pprof-port=8080"], "0.0.0.0:8080"), (["--enable-metrics=false"], "")],
)
def test_http_listen(tmp_path: Path, flags: list[str], listen: str) -> None:
    _, cfg = run(["--cluster-as=1", "--neighbor-as=2", "--neighbor-address=10.0.0.1", *flags], tmp_path)
    assert cfg.http.listen == listen


def test_render_round_trips(tmp_path: Path) -> None:
    spec = BgpSpeakerSpec(65000, 65001, ["172.16.100.1"], password=PASSWORD, extra_args=["--enable-bfd"])
    result, _ = run(controller_argv(spec), tmp_path)
    text = compat.render_compat_config(result)
    loaded: Any = yaml.safe_load(text)
    assert loaded == result.settings_mapping
    assert "# announcement policy: annotated" in text
    assert all(f"#   {w}" in text for w in result.warnings)
    settings.from_mapping(loaded, origin="rendered", environ=ENV)
