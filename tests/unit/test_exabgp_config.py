"""The rendered ExaBGP configuration: golden files, refusals, and the real ``exabgp validate``.

Regenerate the goldens after an intended change:
``UPDATE_GOLDEN=1 pytest tests/unit/test_exabgp_config.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

import pytest

from bgp_speaker.core import exabgp_config
from bgp_speaker.core.exabgp_config import NeighborConfig, SessionConfig
from bgp_speaker.core.model import Family

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "exabgp"
RELAY = ("/usr/bin/python3", "-I", "-S", "/opt/bgp-speaker/relay.py", "--socket", "/run/bgp-speaker/api.sock")
EXABGP = Path(sys.executable).with_name("exabgp")

SCENARIOS: dict[str, SessionConfig] = {
    "single-ipv4-peer": SessionConfig(
        router_id=ip_address("10.99.0.11"),
        local_as=65001,
        relay_command=RELAY,
        neighbors=(NeighborConfig(address=ip_address("10.99.0.1"), peer_as=65000),),
    ),
    "two-cores-md5-gtsm": SessionConfig(
        router_id=ip_address("10.99.0.11"),
        local_as=65001,
        relay_command=RELAY,
        neighbors=(
            NeighborConfig(
                address=ip_address("10.99.0.1"),
                peer_as=65000,
                local_address=ip_address("10.99.0.11"),
                md5_password="s3cret;#{}\\x",  # the goldens hold the redacted form
                incoming_ttl=255,
                description="core-1 (rack 7)",
            ),
            NeighborConfig(
                address=ip_address("10.99.0.2"),
                peer_as=65000,
                port=1179,
                hold_time=30,
                outgoing_ttl=2,
                passive=True,
                families=(Family.IPV4,),
                description='core-2; "quoted" {braces}',
            ),
        ),
    ),
    "ipv6-transport-ibgp": SessionConfig(
        router_id=ip_address("10.99.0.11"),
        local_as=65001,
        relay_command=RELAY,
        neighbors=(
            NeighborConfig(
                address=ip_address("fd00:99::1"),
                peer_as=65001,
                local_address=ip_address("fd00:99::11"),
                families=(Family.IPV6, Family.IPV4),
                hold_time=0,
            ),
        ),
    ),
}


def rendered(name: str, *, redact: bool = True) -> str:
    return exabgp_config.render(SCENARIOS[name], redact_secrets=redact)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_render_matches_golden(name: str) -> None:
    path = GOLDEN / f"{name}.conf"
    text = rendered(name)
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="ascii")
    assert text == path.read_text(encoding="ascii")


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXABGP), "validate", "-n", "-r", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "exabgp_log_destination": "stderr"},
        check=False,
    )


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.conf")), ids=lambda p: p.stem)
def test_exabgp_validate_accepts_every_golden(path: Path) -> None:
    result = _validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exabgp_validate_accepts_the_unredacted_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret.conf"
    path.write_text(rendered("two-cores-md5-gtsm", redact=False), encoding="ascii")
    result = _validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exabgp_validate_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validation above would be worthless if it accepted anything."""
    path = tmp_path / "broken.conf"
    path.write_text(
        rendered("single-ipv4-peer").replace("passive false;", "ttl-security 255;"), encoding="ascii"
    )
    assert _validate(path).returncode != 0


def test_every_boolean_is_explicit_and_the_family_block_is_written() -> None:
    text = rendered("single-ipv4-peer")
    for statement in (
        "passive false;",
        "group-updates true;",
        "adj-rib-out true;",
        "adj-rib-in false;",
        "manual-eor false;",
        "family { ipv4 unicast; ipv6 unicast; }",
        "capability { route-refresh enable; graceful-restart disable; }",
        "receive { parsed; notification; }",
        "neighbor-changes;",
        "encoder json;",
    ):
        assert statement in text
    assert "run " + " ".join(RELAY) + ";" in text


def test_redaction_hides_the_password_and_the_real_render_escapes_it() -> None:
    redacted = rendered("two-cores-md5-gtsm")
    real = rendered("two-cores-md5-gtsm", redact=False)
    assert "s3cret" not in redacted
    assert f'md5-password "{exabgp_config.REDACTED}";' in redacted
    assert 'md5-password "s3cret;#{}\\\\x";' in real


def test_description_is_made_safe() -> None:
    assert 'description "core-2_ _quoted_ _braces_";' in rendered("two-cores-md5-gtsm")


def test_neighbor_repr_never_shows_the_password() -> None:
    neighbor = NeighborConfig(address=ip_address("10.99.0.1"), peer_as=65000, md5_password="hunter2")
    assert "hunter2" not in repr(neighbor)


BASE = SCENARIOS["single-ipv4-peer"]
ONE = BASE.neighbors[0]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (replace(BASE, neighbors=(replace(ONE, md5_password='a"b'),)), "quote"),
        (replace(BASE, neighbors=(replace(ONE, md5_password="x" * 81),)), "1-80"),
        (replace(BASE, neighbors=(replace(ONE, md5_password="caf\u00e9"),)), "ASCII"),
        (replace(BASE, relay_command=("/usr/bin/python3", "/path with space/relay.py")), "relay command"),
        (replace(BASE, relay_command=("/bin/relay;", "x")), "relay command"),
        (replace(BASE, relay_command=()), "empty"),
        (replace(BASE, neighbors=(ONE, ONE)), "twice"),
        (replace(BASE, neighbors=()), "at least one"),
        (replace(BASE, router_id=ip_address("fd00::1")), "IPv4"),
        (replace(BASE, local_as=0), "local AS"),
        (replace(BASE, neighbors=(replace(ONE, hold_time=2),)), "hold time"),
        (replace(BASE, neighbors=(replace(ONE, incoming_ttl=256),)), "incoming-ttl"),
        (replace(BASE, neighbors=(replace(ONE, families=()),)), "no address family"),
    ],
    ids=[
        "pw-quote",
        "pw-long",
        "pw-ascii",
        "relay-space",
        "relay-semicolon",
        "relay-empty",
        "dup-neighbor",
        "no-neighbor",
        "router-id-v6",
        "asn-zero",
        "hold-time",
        "ttl",
        "no-family",
    ],
)
def test_values_exabgp_would_misread_are_refused(config: SessionConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        exabgp_config.render(config, redact_secrets=False)


def test_graceful_restart_time_is_advertised_only_when_set(tmp_path):
    def text(gr):
        neighbor = exabgp_config.NeighborConfig(
            address=ip_address("10.99.0.1"), peer_as=65000, graceful_restart_time=gr
        )
        session = exabgp_config.SessionConfig(
            router_id=ip_address("10.99.0.11"),
            local_as=65001,
            neighbors=(neighbor,),
            relay_command=("/bin/true",),
        )
        return exabgp_config.render(session, redact_secrets=True)

    assert "graceful-restart disable;" in text(None)
    assert "graceful-restart 120;" in text(120)
    path = tmp_path / "gr.conf"
    path.write_text(text(120))
    result = subprocess.run([str(EXABGP), "validate", "-n", "-r", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
