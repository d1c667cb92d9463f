"""The image's install layout, built into a temporary directory, runs both entry points.

No container engine is needed: tests/image/layout.py performs the Dockerfile's install
steps into a directory. Building it installs the pinned dependencies from the package index.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bgp_speaker import compat, settings
from tests.image import layout as image

PASSWORD = "wrapper-Md5-secret"
KUBE_OVN_ARGV = [
    "--nat-gw-mode",
    "--router-id=172.16.100.10",
    f"--auth-password={PASSWORD}",
    "--graceful-restart",
    "--holdtime=1m30s",
    "--cluster-as=65000",
    "--neighbor-as=65001",
    "--neighbor-address=172.16.100.1",
    "--neighbor-ipv6-address=fd00:100::1",
    "-v5",
]
GATEWAY_ENV = {"GATEWAY_NAME": "gw1", "POD_IP": "10.0.1.254", "POD_IPS": "10.0.1.254"}


@pytest.fixture(scope="module")
def layout() -> Iterator[image.Layout]:
    with tempfile.TemporaryDirectory(prefix="bgp-speaker-image-") as root:
        yield image.build(Path(root))


def run(layout: image.Layout, *argv: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=layout.env(**env),
        cwd=layout.runtime,
    )


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_dependency_is_pinned(layout: image.Layout) -> None:
    listed = run(layout, layout.bin / "pip", "list", "--format=json", "--disable-pip-version-check")
    assert listed.returncode == 0, listed.stderr
    installed = {
        canonical(d["name"]): d["version"]
        for d in json.loads(listed.stdout)
        if canonical(d["name"]) not in {"pip", "setuptools", "wheel", "bgp-speaker"}
    }
    text = (image.ROOT / "image" / "constraints.txt").read_text(encoding="utf-8")
    pinned = dict(
        (canonical(name), version)
        for name, version in (
            line.split("==") for line in text.splitlines() if line and not line.startswith("#")
        )
    )
    assert installed == pinned


def test_bgp_speaker_entry_point(layout: image.Layout) -> None:
    proc = run(layout, "bgp-speaker", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: bgp-speaker")


def test_exabgp_is_included(layout: image.Layout) -> None:
    proc = run(layout, "exabgp", "version")
    assert proc.returncode == 0, proc.stderr
    assert "ExaBGP : 5.0.15" in proc.stdout


def test_check_a_sample_config(layout: image.Layout, tmp_path: Path) -> None:
    eips = tmp_path / "eips.yaml"
    eips.write_text("eips:\n  - ip: 203.0.113.10\n  - ip: 203.0.113.11\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "local_as": 65000,
                "router_id": "172.16.100.10",
                "peers": [{"address": "172.16.100.1", "asn": 65001}],
                "pools": ["203.0.113.0/24"],
                "source": {"kind": "file", "file": {"path": str(eips)}},
            }
        ),
        encoding="utf-8",
    )
    proc = run(layout, "bgp-speaker", "check", "--config", config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{config}: OK" in proc.stdout


def test_kube_ovn_wrapper_prints_the_compat_config(layout: image.Layout) -> None:
    assert layout.wrapper.stat().st_mode & 0o111
    commands = run(layout, "bgp-speaker", "--help").stdout
    if "kube-ovn-compat" not in commands:
        pytest.xfail("the bgp-speaker CLI has no `kube-ovn-compat` command yet; the wrapper cannot run")
    proc = run(layout, layout.wrapper, "--print-config", *KUBE_OVN_ARGV, **GATEWAY_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = yaml.safe_load(proc.stdout)
    expected = compat.parse_kube_ovn_speaker_args(
        KUBE_OVN_ARGV, environ=GATEWAY_ENV, runtime_dir=layout.runtime / "expected"
    ).settings_mapping
    for peer in (*printed["peers"], *expected["peers"]):
        assert Path(peer.pop("password_file")).name == compat.PASSWORD_FILE
    assert printed == expected
    settings.from_mapping(printed, origin="printed", environ=GATEWAY_ENV)
    assert PASSWORD not in proc.stdout + proc.stderr


def test_dockerfile_copies_what_the_layout_uses() -> None:
    dockerfile = (image.ROOT / "Dockerfile").read_text(encoding="utf-8")
    sources = []
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert sorted(sources) == sorted(
        ["image/constraints.txt", *image.PACKAGE_FILES, "image/kube-ovn-speaker"]
    )
    allowed = [
        line[1:].rstrip("/")
        for line in (image.ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    for source in sources:
        assert (image.ROOT / source).exists(), source
        assert any(source == a or source.startswith(a + "/") for a in allowed), source
    assert f"/{image.WRAPPER}" in dockerfile
    assert f"/{image.VENV}" in dockerfile
    assert f"TMPDIR=/{image.RUNTIME}" in dockerfile
