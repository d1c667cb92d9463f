"""Fixtures for tests that need root, network namespaces and the real routing daemons."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.frr import FRR_LIBDIR
from tests.lab.netns import Lab

REQUIRED_COMMANDS = (
    "ip",
    "bird",
    "birdc",
    "vtysh",
    "gobgpd",
    "gobgp",
    "iptables",
    "ip6tables",
    "ping",
    "sysctl",
    "setpriv",
)
REQUIRED_FILES = (FRR_LIBDIR / "zebra", FRR_LIBDIR / "bgpd")


def _exabgp_path() -> Path:
    return Path(sys.executable).parent / "exabgp"


def lab_problems() -> list[str]:
    """Everything that keeps the lab from running here, in words a person can act on."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    missing = [c for c in REQUIRED_COMMANDS if shutil.which(c) is None]
    missing += [str(f) for f in REQUIRED_FILES if not os.access(f, os.X_OK)]
    if missing:
        problems.append("missing executables: " + ", ".join(missing) + " (run `make sysdeps` as root)")
    if not os.access(_exabgp_path(), os.X_OK):
        problems.append(f"no exabgp next to the interpreter: {_exabgp_path()} (run `make venv`)")
    return problems


@pytest.fixture(scope="session", autouse=True)
def lab_requirements() -> None:
    """Fail (never skip) every integration test with one clear message when the lab cannot run."""
    problems = lab_problems()
    if problems:
        pytest.fail("integration lab unavailable: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def lab(lab_requirements: None) -> Iterator[Lab]:
    """A fresh :class:`Lab`; every namespace, process and temp dir it made is gone after the test."""
    with Lab() as lab:
        yield lab


@pytest.fixture(scope="session")
def exabgp_bin(lab_requirements: None) -> Path:
    """The ``exabgp`` executable installed in the same environment as the running interpreter."""
    return _exabgp_path()
