"""The relay ExaBGP runs stays at the interpreter's own footprint: run as ExaBGP runs it
(``-I -S``), it imports built-in modules only, and it refuses bad arguments plainly."""

from __future__ import annotations

import subprocess
import sys

from bgp_speaker.adapters.exabgp import relay
from bgp_speaker.adapters.exabgp.runtime import RELAY_PROBE

#: What the relay itself may import; the interpreter's own start-up modules come on top.
RELAY_MODULES = {"_socket", "posix", "select", "sys", "time", "__future__"}


def imported(argv: list[str]) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    modules = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }
    return modules, done


def test_the_relay_imports_nothing_beyond_built_in_modules() -> None:
    baseline, _ = imported(["-c", "pass"])
    modules, done = imported([relay.__file__, "--socket", "/nonexistent/socket", "--connect-timeout", "0"])
    assert done.returncode == 1
    assert "cannot connect" in done.stderr
    assert modules - baseline <= RELAY_MODULES, sorted(modules - baseline - RELAY_MODULES)


def test_the_interpreter_probe_imports_what_the_relay_imports() -> None:
    modules, done = imported(list(RELAY_PROBE[2:]))
    assert done.returncode == 0
    assert {"_socket", "posix", "select"} <= modules | set(sys.builtin_module_names)


def test_bad_arguments_are_refused_with_the_usage() -> None:
    for argv in ([], ["--socket"], ["--sock", "x"], ["--socket", "x", "--connect-timeout", "soon"]):
        done = subprocess.run(
            [sys.executable, "-I", "-S", relay.__file__, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 2, argv
        assert "usage:" in done.stderr
