"""The command line, run as a real subprocess: exit codes and what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def bgp_speaker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bgp_speaker", *args], capture_output=True, text=True, timeout=60, env=env
    )


def write_config(tmp_path: Path, **changes: object) -> Path:
    eips = tmp_path / "eips.yaml"
    eips.write_text("eips:\n  - ip: 203.0.113.10\n  - ip: 198.18.0.1\n")
    secret = tmp_path / "core.pw"
    secret.write_text("t0p-secret\n")
    doc = {
        "local_as": 65001,
        "router_id": "10.99.0.11",
        "peers": [{"address": "10.99.0.1", "asn": 65000, "password_file": str(secret)}],
        "pools": ["203.0.113.0/24"],
        "source": {"kind": "file", "file": {"path": str(eips)}},
        **changes,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_check_accepts_a_good_config_and_warns_about_addresses_outside_the_pools(tmp_path):
    result = bgp_speaker("check", "--config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "2 address(es), 0 malformed, 1 outside the pools" in result.stdout
    assert "198.18.0.1 is outside the allowed pools" in result.stdout
    assert result.stdout.rstrip().endswith("OK")


def test_check_names_every_bad_field_and_value_and_exits_2(tmp_path):
    path = write_config(tmp_path, local_as=0, pools=["203.0.113.1/24"])
    result = bgp_speaker("check", "--config", str(path))
    assert result.returncode == 2
    assert "local_as: Input should be greater than or equal to 1 (got 0)" in result.stderr
    assert "pools.0: not a CIDR with host bits clear: '203.0.113.1/24'" in result.stderr


def test_check_reports_an_unreadable_password_file_without_the_secret(tmp_path):
    path = write_config(tmp_path)
    (tmp_path / "core.pw").write_text('bad"quote\n')
    result = bgp_speaker("check", "--config", str(path))
    assert result.returncode == 2
    assert "password_file" in result.stderr
    assert "bad" not in result.stderr.replace("password_file", "")


def test_render_exabgp_redacts_the_password_unless_asked(tmp_path):
    path = write_config(tmp_path)
    redacted = bgp_speaker("render-exabgp", "--config", str(path))
    assert redacted.returncode == 0, redacted.stderr
    assert "neighbor 10.99.0.1 {" in redacted.stdout
    assert "router-id 10.99.0.11;" in redacted.stdout
    assert "t0p-secret" not in redacted.stdout
    shown = bgp_speaker("render-exabgp", "--config", str(path), "--show-secrets")
    assert 'md5-password "t0p-secret";' in shown.stdout


def test_status_of_a_speaker_that_is_not_running_is_a_clear_error():
    result = bgp_speaker("status", "--url", "http://127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1
    assert "127.0.0.1:9" in result.stderr


def test_environment_overrides_reach_the_check(tmp_path):
    import os

    env = {**os.environ, "BGP_SPEAKER_LOCAL_AS": "4200000000"}
    result = bgp_speaker("check", "--config", str(write_config(tmp_path)), env=env)
    assert result.returncode == 0, result.stderr
    assert "local AS 4200000000" in result.stdout
