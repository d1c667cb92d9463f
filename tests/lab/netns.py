"""Network-namespace lab: namespaces, veth pairs, bridges, addresses and processes, always cleaned up.

Every namespace of one run is named ``<MARKER>-<owner pid>-<random>-<short name>``. The marker and the
owner pid let :func:`sweep_stale` remove what an earlier, crashed run left behind without touching a
lab that is still running.

Interfaces are created directly inside their namespaces (``ip -n NS link add ... peer ... netns NS2``),
so their names only have to be unique per namespace: ``net1``, ``eth0`` and so on can repeat across
namespaces and never appear in the root namespace.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

logger = logging.getLogger(__name__)

MARKER = "bgl"
"""Fixed marker at the start of every namespace and temp dir name this lab creates."""

_NAME_RE = re.compile(rf"^{MARKER}-(?P<pid>\d+)-(?P<run>[0-9a-f]{{4}})-")
IFNAMSIZ = 15
TERM_GRACE = 3.0


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30.0,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            env=full_env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"exit {proc.returncode}: {' '.join(argv)}\n{proc.stderr.strip()}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def netns_names() -> list[str]:
    out = _run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return []
    return [str(entry["name"]) for entry in json.loads(out)]


def _kill_netns_pids(name: str) -> None:
    """SIGKILL every process still living in namespace ``name`` (daemons that escaped our tracking)."""
    for _ in range(5):
        out = _run(["ip", "netns", "pids", name], check=False).stdout.split()
        pids = [int(p) for p in out if p.isdigit() and int(p) != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _delete_netns(name: str) -> None:
    _kill_netns_pids(name)
    _run(["ip", "netns", "del", name], check=False)


def sweep_stale() -> list[str]:
    """Delete namespaces and temp dirs left by earlier lab runs whose owner process is dead.

    Returns the names it removed. Labs of live processes (including other concurrent runs) are kept.
    """
    removed: list[str] = []
    for name in netns_names():
        m = _NAME_RE.match(name)
        if m and not _pid_alive(int(m["pid"])):
            _delete_netns(name)
            removed.append(name)
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob(f"{MARKER}-*"):
        m = _NAME_RE.match(path.name + "-")
        if m and path.is_dir() and not _pid_alive(int(m["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    if removed:
        logger.info("swept stale lab objects", extra={"op": "sweep", "count": len(removed)})
    return removed


@dataclass
class Netns:
    """One network namespace of a :class:`Lab`. ``name`` is the full kernel name, ``short`` the lab name."""

    lab: Lab
    name: str
    short: str

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace and wait for it; raises :class:`LabError` when check fails."""
        return _run([*self.exec_prefix, *argv], check=check, timeout=timeout, input=input, env=env)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n <ns> args...``."""
        return _run(["ip", "-n", self.name, *args], check=check)

    def ip_json(self, *args: str) -> list[dict[str, Any]]:
        out = _run(["ip", "-j", "-n", self.name, *args]).stdout.strip()
        return list(json.loads(out)) if out else []

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        group: str | None = None,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.STDOUT,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the namespace in its own process group; the lab kills it on exit.

        ``user``/``group`` drop privileges after entering the namespace (``setpriv``).
        """
        prefix = list(self.exec_prefix)
        if user is not None:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={group or user}", "--clear-groups", "--"]
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(
            [*prefix, *argv],
            env=full_env,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin,
            cwd=cwd,
            start_new_session=True,
        )
        self.lab.track(proc)
        return proc

    def sysctl(self, key: str, value: str | int) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def enable_forwarding(self) -> None:
        self.sysctl("net.ipv4.ip_forward", 1)
        self.sysctl("net.ipv6.conf.all.forwarding", 1)

    def link_up(self, ifname: str) -> None:
        self.ip("link", "set", ifname, "up")

    def add_addr(self, ifname: str, cidr: str) -> None:
        """Add an address; IPv6 addresses get ``nodad`` so they are usable at once."""
        extra = ["nodad"] if ipaddress.ip_interface(cidr).version == 6 else []
        self.ip("addr", "add", cidr, "dev", ifname, *extra)

    def add_route(
        self, dst: str, *, via: str | None = None, dev: str | None = None, onlink: bool = False
    ) -> None:
        """``ip route replace``: idempotent."""
        version = ipaddress.ip_network(dst, strict=False).version if dst != "default" else None
        if version is None and via is not None:
            version = ipaddress.ip_address(via).version
        argv = [f"-{version or 4}", "route", "replace", dst]
        if via is not None:
            argv += ["via", via]
        if dev is not None:
            argv += ["dev", dev]
        if onlink:
            argv.append("onlink")
        self.ip(*argv)

    def link_stats(self) -> dict[str, dict[str, int]]:
        """Per-interface counters: ``{ifname: {rx_packets, tx_packets, rx_bytes, tx_bytes, ...}}``."""
        stats: dict[str, dict[str, int]] = {}
        for link in self.ip_json("-s", "link", "show"):
            s64 = link.get("stats64", {})
            rx, tx = s64.get("rx", {}), s64.get("tx", {})
            stats[str(link["ifname"])] = {
                "rx_packets": int(rx.get("packets", 0)),
                "tx_packets": int(tx.get("packets", 0)),
                "rx_bytes": int(rx.get("bytes", 0)),
                "tx_bytes": int(tx.get("bytes", 0)),
                "rx_dropped": int(rx.get("dropped", 0)),
                "tx_dropped": int(tx.get("dropped", 0)),
            }
        return stats


@dataclass
class Lab:
    """Context manager owning namespaces, processes and temp dirs of one lab run.

    >>> with Lab() as lab:
    ...     a, b = lab.add_ns("a"), lab.add_ns("b")
    ...     lab.veth(a, "eth0", b, "eth0")
    """

    run_id: str = field(default_factory=lambda: secrets.token_hex(2))
    namespaces: dict[str, Netns] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _tmp: Path | None = None
    _closed: bool = False

    @property
    def prefix(self) -> str:
        return f"{MARKER}-{os.getpid()}-{self.run_id}"

    def __enter__(self) -> Lab:
        sweep_stale()
        atexit.register(self.close)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- building blocks -------------------------------------------------------------------------------

    def add_ns(self, short: str) -> Netns:
        """Create namespace ``<prefix>-<short>`` with ``lo`` up and IPv6 DAD off for new interfaces."""
        if short in self.namespaces:
            raise LabError(f"namespace {short!r} already exists in this lab")
        ns = Netns(lab=self, name=f"{self.prefix}-{short}", short=short)
        _run(["ip", "netns", "add", ns.name])
        self.namespaces[short] = ns
        ns.link_up("lo")
        for scope in ("all", "default"):
            ns.sysctl(f"net.ipv6.conf.{scope}.accept_dad", 0)
            ns.sysctl(f"net.ipv6.conf.{scope}.dad_transmits", 0)
        logger.debug("netns added", extra={"op": "add_ns", "netns": ns.name})
        return ns

    def veth(self, a: Netns, a_if: str, b: Netns, b_if: str, *, up: bool = True) -> None:
        """A veth pair with end ``a_if`` in ``a`` and end ``b_if`` in ``b``."""
        for ifname in (a_if, b_if):
            if len(ifname) > IFNAMSIZ:
                raise LabError(f"interface name too long (max {IFNAMSIZ}): {ifname}")
        a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
        if up:
            a.link_up(a_if)
            b.link_up(b_if)

    def bridge(self, ns: Netns, name: str) -> None:
        """A Linux bridge in ``ns``, up, with no STP and no forwarding delay."""
        ns.ip("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        ns.link_up(name)

    def attach(self, ns: Netns, ifname: str, bridge: str) -> None:
        ns.ip("link", "set", ifname, "master", bridge)
        ns.link_up(ifname)

    def tmpdir(self, name: str = "") -> Path:
        """A fresh directory (mode 0755) under this run's temp dir, removed on close."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
            self._tmp.chmod(0o755)
        path = Path(tempfile.mkdtemp(prefix=f"{name}-" if name else "d-", dir=self._tmp))
        path.chmod(0o755)
        return path

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        self._procs.append(proc)

    # -- teardown --------------------------------------------------------------------------------------

    def stop_process(self, proc: subprocess.Popen[bytes], *, grace: float = TERM_GRACE) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; returns the exit code."""
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
        # The group may hold children that outlived the leader.
        _signal_group(proc.pid, signal.SIGKILL)
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return proc.returncode

    def close(self) -> None:
        """Kill every process, delete every namespace and temp dir. Safe to call twice; Ctrl-C is held off."""
        if self._closed:
            return
        self._closed = True
        with _sigint_deferred():
            for proc in reversed(self._procs):
                with contextlib.suppress(Exception):
                    self.stop_process(proc)
            for ns in reversed(list(self.namespaces.values())):
                with contextlib.suppress(Exception):
                    _delete_netns(ns.name)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        logger.debug("lab closed", extra={"op": "close", "prefix": self.prefix})


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ignore SIGINT while cleaning up (main thread only), so a second Ctrl-C cannot leave debris."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
