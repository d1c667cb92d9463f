"""Shared pieces of the benchmarks: tables, machine facts, route-arrival clock, process accounting.

Nothing here asserts: every helper measures and returns numbers (or ``None`` when a measurement
could not be taken), and the callers print what they got.

Route arrivals at the core are timestamped by streaming ``ip -n <core> -4 monitor route`` into a
reader thread, so nothing polls the kernel table while a measurement runs. If netlink drops
notifications (ENOBUFS under a large burst), the count falls back to ``ip route show`` and the
result says so.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import platform
import re
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab.netns import Netns

#: (title, header, rows): one markdown table.
Table = tuple[str, list[str], list[list[str]]]

#: RFC 2544 benchmarking range: 131,072 addresses, enough for 100k EIPs, routed by nothing else.
BENCH_POOL_V4 = "198.18.0.0/15"

_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- formatting ---------------------------------------------------------------------------------


def fmt_s(value: float | None, *, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f} s"


def fmt_ms(value: float | None, *, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 1000:.{digits}f} ms"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} %"


def fmt_mib(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} MiB"


def markdown(table: Table) -> str:
    title, header, rows = table
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# --- machine facts --------------------------------------------------------------------------------


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def machine_facts(*, exabgp: Path) -> list[tuple[str, str]]:
    exa = _first_line([str(exabgp), "version"]).replace("ExaBGP :", "").strip()
    return [
        ("Date", time.strftime("%Y-%m-%d %H:%M:%S %z")),
        ("CPU", _cpu_model()),
        ("Cores", str(os.cpu_count())),
        ("Memory", _mem_total()),
        ("Kernel", platform.release()),
        ("Python", platform.python_version()),
        ("ExaBGP", exa),
        ("BIRD", _first_line(["bird", "--version"]).replace("BIRD version", "").strip()),
        ("GoBGP", _first_line(["gobgpd", "--version"]).replace("gobgpd version", "").strip()),
        ("Load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


# --- interpreter the unprivileged ExaBGP user can run ---------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """How to run the daemon so that ExaBGP and its helper, dropped to ``nobody``, can start.

    A virtualenv whose base interpreter lives in a private home directory cannot be opened by
    ``nobody``; then the system ``python3`` runs everything with this venv's packages on PYTHONPATH.
    """

    python: str
    env: dict[str, str]
    exabgp_command: tuple[str, ...]

    @property
    def exabgp_argv(self) -> list[str]:
        return list(self.exabgp_command) or [str(Path(sys.executable).with_name("exabgp"))]


def _runs_as_nobody(argv: Sequence[str]) -> bool:
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        kwargs = {"user": "nobody", "group": "nogroup", "extra_groups": []}
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=30, check=False, cwd="/", **kwargs)
    except OSError:
        return False
    return done.returncode == 0


def runtime() -> Runtime:
    if _runs_as_nobody([sys.executable, "-I", "-S", "-c", "pass"]):
        return Runtime(python=sys.executable, env={}, exabgp_command=())
    site = str(Path(sysconfig.get_paths()["purelib"]).resolve())
    repo = str(Path(__file__).resolve().parents[2])
    system = "/usr/bin/python3"
    command = ("/usr/bin/env", f"PYTHONPATH={site}", system, "-m", "exabgp")
    if not _runs_as_nobody([*command, "version"]):
        raise RuntimeError("neither this interpreter nor /usr/bin/python3 can run ExaBGP as nobody")
    return Runtime(python=system, env={"PYTHONPATH": f"{site}:{repo}"}, exabgp_command=command)


# --- EIP sets -------------------------------------------------------------------------------------


def eip_addresses(count: int, *, offset: int = 0, pool: str = BENCH_POOL_V4) -> list[str]:
    net = ipaddress.ip_network(pool)
    if offset + count > net.num_addresses - 2:
        raise ValueError(f"{pool} holds fewer than {offset + count} addresses")
    first = int(net.network_address) + 1 + offset
    return [str(ipaddress.ip_address(first + i)) for i in range(count)]


# --- route arrivals at the core -------------------------------------------------------------------


@dataclass
class RouteMonitor:
    """``ip -4 monitor route`` in ``ns``, streamed: prefix -> monotonic time of its latest change.

    Only routes with ``proto`` ``proto`` are counted. ``present`` is the set the monitor believes is
    installed; ``arrived``/``removed`` map a host address to when it was last added/deleted.
    """

    ns: Netns
    proto: str = "bird"
    present: set[str] = field(default_factory=set)
    arrived: dict[str, float] = field(default_factory=dict)
    removed: dict[str, float] = field(default_factory=dict)
    overflow: bool = False
    _proc: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self, *, initial: Iterable[str] = ()) -> RouteMonitor:
        self.present = set(initial)
        self._proc = subprocess.Popen(
            ["ip", "-n", self.ns.name, "-4", "monitor", "route"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            bufsize=1 << 20,
        )
        self._thread = threading.Thread(target=self._read, name="route-monitor", daemon=True)
        self._thread.start()
        time.sleep(0.2)  # the netlink subscription is in place once ip has started
        return self

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        needle = f" proto {self.proto} ".encode()
        for raw in self._proc.stdout:
            now = time.monotonic()
            if b"No buffer space" in raw or b"ENOBUFS" in raw:
                self.overflow = True
                continue
            if needle not in raw:
                continue
            deleted = raw.startswith(b"Deleted ")
            words = raw.split()
            dst = (words[1] if deleted else words[0]).decode()
            dst = dst.removesuffix("/32")
            with self._cond:
                if deleted:
                    self.present.discard(dst)
                    self.removed[dst] = now
                else:
                    self.present.add(dst)
                    self.arrived[dst] = now
                self._cond.notify_all()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=3)
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None

    def __enter__(self) -> RouteMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self) -> int:
        with self._cond:
            return len(self.present)

    def wait_arrival(self, address: str, *, since: float, timeout: float) -> float | None:
        """Monotonic time ``address`` was added at or after ``since``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                at = self.arrived.get(address)
                if at is not None and at >= since:
                    return at
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def resync(self) -> bool:
        """Replace ``present`` with the kernel table (after lost notifications); True if it differed."""
        table = kernel_set(self.ns, proto=self.proto)
        with self._cond:
            differed = table != self.present
            self.present = table
            self.overflow = self.overflow or differed
            self._cond.notify_all()
        return differed

    def wait_count(self, predicate: str, target: int, *, timeout: float, stall: float = 0.0) -> bool:
        """Wait until the count is >= target (``predicate="ge"``) or <= target (``"le"``).

        With ``stall`` > 0, give up early once the count has not moved for that long. True when reached.
        After 3 s without movement the set is checked against the kernel table once (netlink may have
        dropped notifications under a burst; then ``overflow`` is set and times are approximate).
        """
        deadline = time.monotonic() + timeout
        last, moved_at, checked = -1, time.monotonic(), False
        while True:
            with self._cond:
                n = len(self.present)
                if (n >= target) if predicate == "ge" else (n <= target):
                    return True
                now = time.monotonic()
                if n != last:
                    last, moved_at, checked = n, now, False
                if now >= deadline or (stall > 0 and now - moved_at >= stall):
                    return False
                if checked or now - moved_at < 3.0:
                    self._cond.wait(min(0.2, deadline - now))
                    continue
            checked = True
            self.resync()

    def last_change(self, addresses: Iterable[str], *, removed: bool = False) -> float | None:
        book = self.removed if removed else self.arrived
        with self._cond:
            times = [book.get(a) for a in addresses]
        if any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)


def kernel_count(ns: Netns, *, proto: str = "bird") -> int:
    """Routes of ``proto`` in the main IPv4 table (one ``ip route show``; fine outside a measurement)."""
    out = ns.ip("-4", "route", "show", "proto", proto).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def kernel_set(ns: Netns, *, proto: str = "bird") -> set[str]:
    out = ns.ip("-4", "route", "show", "proto", proto).stdout
    return {line.split()[0].removesuffix("/32") for line in out.splitlines() if line.strip()}


# --- process accounting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    role: str
    cpu_ticks: int
    rss_kib: int
    hwm_kib: int


def _read_proc(pid: int) -> tuple[int, int, str, int, int] | None:
    """(ppid, cpu ticks, cmdline, VmRSS KiB, VmHWM KiB) of ``pid``, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
    rss = hwm = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return ppid, utime + stime, cmdline, rss, hwm


def _role(cmdline: str) -> str:
    if "bgp_speaker" in cmdline and "relay" in cmdline:
        return "relay"
    if "exabgp" in cmdline and " server " in f"{cmdline} ":
        return "exabgp"
    if "bgp_speaker" in cmdline:
        return "speaker"
    if "gobgpd" in cmdline:
        return "gobgpd"
    if re.search(r"(^|/)bird(\s|$)", cmdline):
        return "bird"
    return cmdline.split(" ", 1)[0].rsplit("/", 1)[-1] or "?"


def process_tree(root: int) -> list[ProcInfo]:
    """``root`` and all its descendants (a fresh /proc walk)."""
    table: dict[int, tuple[int, int, str, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _read_proc(int(entry))
            if info is not None:
                table[int(entry)] = info
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info[0], []).append(pid)
    out: list[ProcInfo] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        info = table.get(pid)
        if info is None:
            continue
        ppid, ticks, cmdline, rss, hwm = info
        out.append(ProcInfo(pid, ppid, _role(cmdline), ticks, rss, hwm))
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> float:
    return sum(p.cpu_ticks for p in process_tree(root)) / _CLK_TCK


def memory_by_role(root: int) -> dict[str, tuple[float, float]]:
    """role -> (VmRSS MiB, VmHWM MiB), summed over the tree under ``root``."""
    out: dict[str, tuple[float, float]] = {}
    for p in process_tree(root):
        rss, hwm = out.get(p.role, (0.0, 0.0))
        out[p.role] = (rss + p.rss_kib / 1024, hwm + p.hwm_kib / 1024)
    return out


def cpu_by_role(root: int) -> dict[str, float]:
    """role -> CPU seconds used so far, summed over the tree under ``root``."""
    out: dict[str, float] = {}
    for p in process_tree(root):
        out[p.role] = out.get(p.role, 0.0) + p.cpu_ticks / _CLK_TCK
    return out


def idle_cpu_percent(root: int, *, seconds: float) -> float:
    """CPU used by the tree under ``root`` over ``seconds`` of wall time, in % of one core."""
    before, t0 = tree_cpu_seconds(root), time.monotonic()
    time.sleep(seconds)
    after, t1 = tree_cpu_seconds(root), time.monotonic()
    return 100.0 * (after - before) / (t1 - t0)


@contextlib.contextmanager
def cpu_meter(*roots: int) -> Iterator[dict[str, float]]:
    """Yields a dict filled on exit with ``wall``, ``cpu`` (seconds used by the trees) and
    ``cpu_<role>`` per process role (speaker, exabgp, relay, bird, gobgpd...)."""
    result: dict[str, float] = {}
    before = [cpu_by_role(r) for r in roots]
    t0 = time.monotonic()
    try:
        yield result
    finally:
        result["wall"] = time.monotonic() - t0
        result["cpu"] = 0.0
        for root, old in zip(roots, before, strict=True):
            for role, seconds in cpu_by_role(root).items():
                used = seconds - old.get(role, 0.0)
                result[f"cpu_{role}"] = result.get(f"cpu_{role}", 0.0) + used
                result["cpu"] += used


def descendant_pid(root: int, role: str) -> int | None:
    for p in process_tree(root):
        if p.role == role:
            return p.pid
    return None
