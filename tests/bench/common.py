"""Shared pieces of the benchmarks: tables, machine facts, the runtime for ExaBGP, EIP sets, progress
lines, and the lab with the daemon under test.

Nothing here asserts: every helper measures and returns numbers (or ``None`` when a measurement
could not be taken), and the callers print what they got. Route arrivals at the core are in
:mod:`tests.bench.arrivals`, process accounting in :mod:`tests.bench.procs`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from tests.lab.bird import Bird
from tests.lab.netns import Lab
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology, build

T = TypeVar("T")

#: (title, header, rows): one markdown table.
Table = tuple[str, list[str], list[list[str]]]

#: RFC 2544 benchmarking range: 131,072 addresses, enough for 100k EIPs, routed by nothing else.
BENCH_POOL_V4 = "198.18.0.0/15"


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


# --- progress on stderr ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Log:
    """Progress lines on stderr as ``[<tag>] text`` (the tables go to stdout)."""

    tag: str

    def __call__(self, text: str) -> None:
        print(f"[{self.tag}] {text}", file=sys.stderr, flush=True)

    def section(self, name: str, fn: Callable[[], T]) -> T:
        """``fn()``, between a line naming the section and one with the time it took."""
        started = time.monotonic()
        self(f"-- {name}")
        try:
            return fn()
        finally:
            self(f"-- {name} took {time.monotonic() - started:.1f} s")


# --- the lab and the daemon under test ------------------------------------------------------------


class BirdLab(NamedTuple):
    lab: Lab
    topo: Topology
    gw: Gateway
    core: Bird


@contextlib.contextmanager
def bird_lab() -> Iterator[BirdLab]:
    """A lab with one NAT gateway and a BIRD core (kernel export on) that connects out to it.

    An active core brings the session up at once: ExaBGP does not listen, it connects out, and GoBGP
    as a speaker would make its first connection only after 5-10 s. Needs root.
    """
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks need root (network namespaces)")
    with Lab() as lab:
        topo = build(lab, gateways=1, router=None)
        gw = topo.gateway(1)
        core = topo.start_router("bird", neighbors=[topo.neighbor(gw, passive=False)])
        assert isinstance(core, Bird)
        yield BirdLab(lab=lab, topo=topo, gw=gw, core=core)


def new_speaker(
    topo: Topology,
    gw: Gateway,
    *,
    source: Mapping[str, Any] | None = None,
    exabgp: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> SpeakerProcess:
    """The daemon (not started) in ``gw``, peering with the core, EIPs from :data:`BENCH_POOL_V4`.

    INFO logs and no graceful shutdown, so that stopping it withdraws everything at once.
    """
    extra: dict[str, Any] = {
        "logging": {"level": "INFO"},
        "shutdown": {"graceful_shutdown": False, "drain_seconds": 0},
    }
    if exabgp is not None:
        extra["exabgp"] = dict(exabgp)
    return SpeakerProcess.create(
        gw.ns,
        local_as=topo.gateway_as,
        peers=[{"address": topo.core_v4, "asn": topo.core_as}],
        pools=[BENCH_POOL_V4],
        source=source,
        extra=extra,
        env=env,
    )


def launch(
    speaker: SpeakerProcess, *, python: str = sys.executable, clock: Callable[[], float] = time.monotonic
) -> float:
    """Start the daemon without polling its status endpoint (that would cost CPU we measure).

    Returns ``clock()`` read just before the process starts.
    """
    with speaker.log_path.open("ab") as log_file:
        t0 = clock()
        speaker.proc = speaker.ns.popen(
            [python, "-m", "bgp_speaker", "run", "--config", str(speaker.config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=speaker.env,
        )
    return t0


def stop_speaker(speaker: SpeakerProcess, *, timeout: float, log: Callable[[str], None]) -> None:
    """Stop the daemon if it still runs; a stop that fails is logged, not raised."""
    if speaker.proc is not None and speaker.proc.poll() is None:
        try:
            speaker.stop(timeout=timeout)
        except AssertionError as exc:
            log(f"speaker stop: {exc}")
