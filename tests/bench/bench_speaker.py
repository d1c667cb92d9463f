"""Benchmarks of the real ``bgp-speaker`` daemon against a BIRD 2 core, with references in the same run.

Lab: BIRD 2 core router in its namespace (kernel export on), one NAT gateway namespace running the
daemon (file source, ExaBGP as its child), EIPs from the RFC 2544 range. Every time is taken from
the moment the EIP file is renamed into place (or the process is started) to the moment the last
route shows up in the core's KERNEL table, as seen by a streamed ``ip monitor route``.

References, same lab and same run: GoBGP 3.10 as the speaker (``gobgp mrt inject`` and per-route
``gobgp global rib add``), and plain ExaBGP driven the naive way by a helper that writes every
command at once (one ``announce route`` per prefix, or 500-prefix ``announce attributes`` lines).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bgp_speaker.adapters import filesource
from tests.bench import common as c
from tests.lab import exaspeaker, mrt, routers
from tests.lab.base import Neighbor
from tests.lab.bird import Bird
from tests.lab.gobgp import GoBgp
from tests.lab.netns import Lab
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology, build

TARGETS = {1_000: None, 10_000: 1.0, 100_000: 12.0}
TARGET_P99 = 0.050
TARGET_IDLE_PCT = 3.0
TARGET_RSS_MIB = 120.0
DEFAULT_KNOBS: Mapping[str, float] = {"reactor_speed": 1.0, "batch_size": 48, "window": 8}
REPEATS = 3


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time (a run that never finished counts as the slowest)."""
    ordered = sorted(runs, key=lambda r: float("inf") if r["seconds"] is None else r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


@dataclass
class Ctx:
    lab: Lab
    topo: Topology
    gw: Gateway
    core: Bird
    mon: c.RouteMonitor
    quick: bool
    runtime: c.Runtime

    @property
    def bird_pid(self) -> int:
        assert self.core.proc is not None
        return self.core.proc.pid


def eips_json(addresses: Sequence[str]) -> str:
    return json.dumps({"eips": [{"ip": a} for a in addresses]})


def replace_file(path: Path, text: str) -> float:
    """Write ``text`` beside ``path``, then rename it into place; returns the monotonic rename time."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    t0 = time.monotonic()
    os.replace(tmp, path)
    return t0


def new_speaker(
    ctx: Ctx, *, eips: Sequence[str] = (), knobs: Mapping[str, float] | None = None
) -> SpeakerProcess:
    speaker = SpeakerProcess.create(
        ctx.gw.ns,
        local_as=ctx.topo.gateway_as,
        peers=[{"address": ctx.topo.core_v4, "asn": ctx.topo.core_as}],
        pools=[c.BENCH_POOL_V4],
        extra={
            "logging": {"level": "INFO"},
            "shutdown": {"graceful_shutdown": False, "drain_seconds": 0},
            "exabgp": {**(knobs or DEFAULT_KNOBS), "command": list(ctx.runtime.exabgp_command)},
        },
        env=ctx.runtime.env,
    )
    speaker.eips_path.write_text(eips_json(eips))
    return speaker


def launch(ctx: Ctx, speaker: SpeakerProcess) -> float:
    """Start the daemon without polling its status endpoint (that would cost CPU we measure)."""
    log_file = speaker.log_path.open("ab")
    t0 = time.monotonic()
    speaker.proc = speaker.ns.popen(
        [ctx.runtime.python, "-m", "bgp_speaker", "run", "--config", str(speaker.config_path)],
        stdout=log_file,
        stderr=-2,  # subprocess.STDOUT
        env=speaker.env,
    )
    log_file.close()
    return t0


def stop_speaker(ctx: Ctx, speaker: SpeakerProcess) -> None:
    if speaker.proc is not None and speaker.proc.poll() is None:
        try:
            speaker.stop(timeout=60)
        except AssertionError as exc:
            log(f"speaker stop: {exc}")
    ctx.mon.wait_count("le", 0, timeout=60)


@contextmanager
def running_speaker(ctx: Ctx, *, knobs: Mapping[str, float] | None = None) -> Iterator[SpeakerProcess]:
    """A daemon with an empty EIP file and its BGP session Established."""
    speaker = new_speaker(ctx, knobs=knobs)
    launch(ctx, speaker)
    try:
        try:
            ctx.core.wait_established(ctx.gw.net1_v4, timeout=60)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n--- speaker log ---\n{speaker.log_tail()}") from None
        time.sleep(1.0)  # first reconcile pass (adj-rib-out read) done
        yield speaker
    finally:
        stop_speaker(ctx, speaker)


def measure_bulk(
    ctx: Ctx, speaker: SpeakerProcess, addresses: Sequence[str], *, timeout: float
) -> dict[str, Any]:
    """Write the file with ``addresses`` (session up, nothing announced) and time the kernel arrivals."""
    assert speaker.proc is not None
    text = eips_json(addresses)
    with c.cpu_meter(speaker.proc.pid) as cpu, c.cpu_meter(ctx.bird_pid) as bird:
        t0 = replace_file(speaker.eips_path, text)
        done = wait_all(ctx, addresses, since=t0, timeout=timeout)
    return {"seconds": done, **cpu, "bird_cpu": bird["cpu"], "overflow": ctx.mon.overflow}


def measure_withdraw_all(ctx: Ctx, speaker: SpeakerProcess, addresses: Sequence[str]) -> float | None:
    t0 = replace_file(speaker.eips_path, eips_json(()))
    if not ctx.mon.wait_count("le", 0, timeout=120):
        return None
    at = ctx.mon.last_change(addresses, removed=True)
    return (time.monotonic() if at is None else at) - t0


def wait_all(ctx: Ctx, addresses: Sequence[str], *, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` until every address is in the core's kernel table (None: not reached)."""
    if ctx.mon.wait_count("ge", len(addresses), timeout=timeout):
        at = ctx.mon.last_change(addresses)  # None: some notifications were lost; now is an upper bound
        return (time.monotonic() if at is None else at) - since
    if ctx.mon.overflow:  # notifications were lost: fall back to counting the table
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if c.kernel_count(ctx.topo.core) >= len(addresses):
                return time.monotonic() - since
            time.sleep(0.25)
    return None


# --- scenarios ---------------------------------------------------------------------------------------


def sizes(ctx: Ctx) -> list[int]:
    return [1_000, 10_000] if ctx.quick else [1_000, 10_000, 100_000]


def bulk_and_footprint(ctx: Ctx) -> tuple[list[c.Table], dict[str, Any]]:
    """Warm bulk (1k/10k/100k), withdraw-all, RSS at each size, idle CPU at 10k."""
    rows, mem_rows, facts = [], [], {}
    with running_speaker(ctx) as speaker:
        assert speaker.proc is not None
        for n in sizes(ctx):
            addresses = c.eip_addresses(n)
            repeats = 1 if n > 10_000 else REPEATS
            runs: list[dict[str, Any]] = []
            withdraws: list[float] = []
            for attempt in range(repeats):
                r = measure_bulk(ctx, speaker, addresses, timeout=30 + n / 200)
                log(f"bulk {n}: {r}")
                runs.append(r)
                if attempt + 1 < repeats:
                    withdraws += [w for w in [measure_withdraw_all(ctx, speaker, addresses)] if w is not None]
                    time.sleep(1.0)
            time.sleep(2.0)
            mem = c.memory_by_role(speaker.proc.pid)
            r = median_run(runs)
            facts[f"bulk{n}"] = r["seconds"]
            if n == 10_000:
                secs = 10.0 if ctx.quick else 30.0
                facts["idle"] = c.idle_cpu_percent(speaker.proc.pid, seconds=secs)
                facts["idle_secs"] = secs
                facts["rss10k"] = sum(v[0] for v in mem.values())
            withdraws += [w for w in [measure_withdraw_all(ctx, speaker, addresses)] if w is not None]
            target = TARGETS.get(n)
            times = sorted(x["seconds"] for x in runs if x["seconds"] is not None)
            rows.append(
                [
                    f"{n:,}",
                    c.fmt_s(r["seconds"]),
                    " / ".join(f"{t:.2f}" for t in times) if len(times) > 1 else "–",
                    "–" if target is None else f"≤ {target:g} s",
                    f"{r.get('cpu_speaker', 0.0):.2f} s",
                    f"{r.get('cpu_exabgp', 0.0):.2f} s",
                    f"{r['bird_cpu']:.2f} s",
                    c.fmt_s(c.median(withdraws)),
                ]
            )
            total_rss = sum(v[0] for v in mem.values())
            mem_rows.append(
                [
                    f"{n:,}",
                    *(c.fmt_mib(mem.get(role, (None, None))[0]) for role in ("speaker", "exabgp", "relay")),
                    c.fmt_mib(total_rss),
                    c.fmt_mib(sum(v[1] for v in mem.values())),
                    f"≤ {TARGET_RSS_MIB:g} MiB" if n == 10_000 else "–",
                ]
            )
    bulk = (
        "bgp-speaker: N EIPs written to the file (session up, nothing announced) until all are in the "
        "core's kernel table",
        [
            "EIPs",
            f"time (median of {REPEATS} up to 10k)",
            "all runs (s)",
            "target",
            "CPU daemon",
            "CPU ExaBGP",
            "CPU BIRD",
            "withdraw all (file → [])",
        ],
        rows,
    )
    memory = (
        "bgp-speaker: memory with N EIPs announced (VmRSS from /proc, 2 s after convergence)",
        ["EIPs", "speaker", "ExaBGP", "relay", "total", "peak total (VmHWM)", "target"],
        mem_rows,
    )
    return [bulk, memory], facts


def cold_start(ctx: Ctx) -> c.Table:
    rows = []
    for n in [10_000] if ctx.quick else sizes(ctx):
        addresses = c.eip_addresses(n)
        speaker = new_speaker(ctx, eips=addresses)
        try:
            t0 = launch(ctx, speaker)
            done = wait_all(ctx, addresses, since=t0, timeout=60 + n / 200)
            first = min((ctx.mon.arrived.get(a, float("inf")) for a in addresses), default=None)
            log(f"cold {n}: {done}")
            rows.append(
                [f"{n:,}", c.fmt_s(None if first in (None, float("inf")) else first - t0), c.fmt_s(done)]
            )
        finally:
            stop_speaker(ctx, speaker)
    return (
        "bgp-speaker cold start: daemon started with an N-entry file (process start → kernel table)",
        ["EIPs", "first route", "all routes"],
        rows,
    )


def change_latency(ctx: Ctx, *, base: int, changes: int) -> tuple[list[float], int]:
    """One EIP added per change (atomic rename), each waited for; returns latencies and misses."""
    rng = random.Random(7)
    current = c.eip_addresses(base)
    extra = c.eip_addresses(changes, offset=base)
    latencies: list[float] = []
    missed = 0
    with running_speaker(ctx) as speaker:
        if base:
            replace_file(speaker.eips_path, eips_json(current))
            wait_all(ctx, current, since=time.monotonic(), timeout=120)
            time.sleep(2.0)
        for address in extra:
            current.append(address)
            t0 = replace_file(speaker.eips_path, eips_json(current))
            at = ctx.mon.wait_arrival(address, since=t0, timeout=10)
            if at is None:
                missed += 1
            else:
                latencies.append(at - t0)
            time.sleep(rng.uniform(0.01, 0.04))
    return latencies, missed


def latency_table(ctx: Ctx) -> tuple[c.Table, dict[str, Any]]:
    rows, facts = [], {}
    for base in (0, 10_000):
        changes = (60 if base == 0 else 30) if ctx.quick else 200
        lat, missed = change_latency(ctx, base=base, changes=changes)
        log(f"latency base {base}: n={len(lat)} missed={missed}")
        if not lat:
            rows.append([f"{base:,}", str(changes), "–", "–", "–", "–", str(missed)])
            continue
        p99 = c.percentile(lat, 99)
        if base == 0:
            facts["p99"] = p99
        rows.append(
            [
                f"{base:,}",
                str(changes),
                c.fmt_ms(c.percentile(lat, 50)),
                c.fmt_ms(p99),
                c.fmt_ms(max(lat)),
                f"≤ {TARGET_P99 * 1000:g} ms",
                str(missed),
            ]
        )
    table = (
        "bgp-speaker: file change (one EIP added, atomic rename) → route in the core's kernel table",
        ["EIPs already announced", "changes", "p50", "p99", "max", "target p99", "not seen in 10 s"],
        rows,
    )
    return table, facts


def knob_sweep(ctx: Ctx) -> c.Table:
    configs: list[dict[str, float]] = [
        {"reactor_speed": 1.0, "batch_size": 48, "window": 8},
        {"reactor_speed": 0.1, "batch_size": 48, "window": 8},
        {"reactor_speed": 1.0, "batch_size": 500, "window": 8},
    ]
    if not ctx.quick:
        configs += [
            {"reactor_speed": 1.0, "batch_size": 48, "window": 1},
            {"reactor_speed": 1.0, "batch_size": 48, "window": 64},
            {"reactor_speed": 1.0, "batch_size": 500, "window": 1},
            {"reactor_speed": 0.1, "batch_size": 500, "window": 8},
        ]
    idle_secs = 10.0 if ctx.quick else 20.0
    idle_by_speed: dict[float, float] = {}
    rows = []
    addresses = c.eip_addresses(10_000)
    for knobs in configs:
        with running_speaker(ctx, knobs=knobs) as speaker:
            assert speaker.proc is not None
            runs = []
            for attempt in range(2 if ctx.quick else REPEATS):
                if attempt:
                    measure_withdraw_all(ctx, speaker, addresses)
                    time.sleep(1.0)
                runs.append(measure_bulk(ctx, speaker, addresses, timeout=90))
            r = median_run(runs)
            speed = knobs["reactor_speed"]
            if speed not in idle_by_speed:
                time.sleep(2.0)
                idle_by_speed[speed] = c.idle_cpu_percent(speaker.proc.pid, seconds=idle_secs)
            log(f"sweep {knobs}: {r}")
            rows.append(
                [
                    f"{speed:g}",
                    str(int(knobs["batch_size"])),
                    str(int(knobs["window"])),
                    c.fmt_s(r["seconds"]),
                    " / ".join(f"{x['seconds']:.2f}" for x in runs if x["seconds"] is not None),
                    f"{r['cpu']:.2f} s",
                    c.fmt_pct(idle_by_speed[speed]),
                    "default" if dict(knobs) == dict(DEFAULT_KNOBS) else "",
                ]
            )
    return (
        f"bgp-speaker knobs at 10,000 EIPs (bulk time; idle CPU of the whole tree over {idle_secs:g} s "
        "with 10k announced)",
        [
            "reactor_speed",
            "batch_size",
            "window",
            "10k time (median)",
            "runs (s)",
            "CPU used",
            "idle CPU",
            "",
        ],
        rows,
    )


# --- references: GoBGP and plain ExaBGP, same lab, same run -----------------------------------------

FEEDER = """
import os, sys, threading, time
commands, go, stamp = sys.argv[1:4]
up = threading.Event()
def drain():
    for line in sys.stdin:
        if '"state"' in line and '"up"' in line:
            up.set()
    os._exit(0)
threading.Thread(target=drain, daemon=True).start()
up.wait()
lines = open(commands).read().splitlines()
while not os.path.exists(go):
    time.sleep(0.001)
t0 = time.monotonic()
for line in lines:
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()
with open(stamp + ".tmp", "w") as f:
    f.write(repr(t0))
os.replace(stamp + ".tmp", stamp)
while True:
    time.sleep(3600)
"""


@contextmanager
def gobgp_speaker(ctx: Ctx) -> Iterator[GoBgp]:
    speaker = GoBgp(
        ctx.gw.ns,
        router_id=ctx.gw.net1_v4,
        local_as=ctx.topo.gateway_as,
        neighbors=[Neighbor(ctx.topo.core_v4, ctx.topo.core_as, passive=False, local_address=ctx.gw.net1_v4)],
    ).start()
    try:
        ctx.core.wait_established(ctx.gw.net1_v4, timeout=60)
        time.sleep(0.5)
        yield speaker
    finally:
        speaker.stop()
        ctx.mon.wait_count("le", 0, timeout=60)


def gobgp_mrt(ctx: Ctx, n: int) -> tuple[float | None, int, float, tuple[int, float]]:
    """(seconds, inject runs, gobgpd CPU seconds, (routes, seconds) of the first injection) for ``n``
    routes through ``gobgp mrt inject``. A lost tail is noticed after 1 s without a new route."""
    addresses = c.eip_addresses(n)
    with gobgp_speaker(ctx) as speaker:
        assert speaker.proc is not None
        routes = mrt.host_routes([f"{a}/32" for a in addresses], next_hop=ctx.gw.net1_v4)
        path = speaker.write_mrt(routes, path=speaker.workdir / f"bulk-{n}-1.mrt")
        injections = 1
        with c.cpu_meter(speaker.proc.pid) as cpu:
            t0 = time.monotonic()
            speaker.inject_mrt(path)
            reached = ctx.mon.wait_count("ge", n, timeout=120, stall=1.0)
            got = [a for a in addresses if ctx.mon.arrived.get(a, -1.0) >= t0]
            first = (len(got), (ctx.mon.last_change(got) or t0) - t0)
            # The CLI can lose the stream's tail: inject what is missing again (repeated, as the lab does).
            while not reached and injections < 6:
                missing = [r for r in routes if r.prefix.removesuffix("/32") not in ctx.mon.present]
                injections += 1
                batch = missing * max(2, -(-4096 // max(1, len(missing))))
                speaker.inject_mrt(
                    speaker.write_mrt(batch, path=speaker.workdir / f"bulk-{n}-{injections}.mrt")
                )
                reached = ctx.mon.wait_count("ge", n, timeout=120, stall=1.0)
            done = wait_all(ctx, addresses, since=t0, timeout=5)
        return done, injections, cpu["cpu"], first


def gobgp_rib_add(ctx: Ctx, n: int) -> float | None:
    addresses = c.eip_addresses(n)
    with gobgp_speaker(ctx) as speaker:
        t0 = time.monotonic()
        for address in addresses:
            speaker.add_route(f"{address}/32", next_hop=ctx.gw.net1_v4)
        return wait_all(ctx, addresses, since=t0, timeout=60)


def naive_exabgp(ctx: Ctx, n: int, *, per_line: int) -> tuple[float | None, float]:
    """Plain ExaBGP (reactor speed 1.0) fed every command at once by a helper that reads its acks."""
    addresses = c.eip_addresses(n)
    nh = ctx.gw.net1_v4
    if per_line == 1:
        lines = [f"announce route {a}/32 next-hop {nh}" for a in addresses]
    else:
        lines = [
            f"announce attributes next-hop {nh} nlri "
            + " ".join(f"{a}/32" for a in addresses[i : i + per_line])
            for i in range(0, n, per_line)
        ]
    workdir = ctx.lab.tmpdir("naive")
    workdir.chmod(0o777)
    (workdir / "feeder.py").write_text(FEEDER)
    (workdir / "commands.txt").write_text("\n".join(lines) + "\n")
    go, stamp = workdir / "go", workdir / "t0"
    process = (
        f"process feeder {{\n  run {ctx.runtime.python} -I -S {workdir / 'feeder.py'} "
        f"{workdir / 'commands.txt'} {go} {stamp};\n  encoder json;\n}}\n"
    )
    config = process + exaspeaker.render_config(
        peer=ctx.topo.core_v4,
        local_address=nh,
        local_as=ctx.topo.gateway_as,
        peer_as=ctx.topo.core_as,
        families=("ipv4 unicast",),
        extra="  api feeder { processes [ feeder ]; neighbor-changes; }",
    )
    exa = exaspeaker.ExaBgp(
        ctx.gw.ns,
        executable=Path(sys.executable).with_name("exabgp"),
        config=config,
        workdir=workdir,
        env={"exabgp_reactor_speed": "1.0", "exabgp_log_level": "INFO"},
    ).start()
    try:
        ctx.core.wait_established(nh, timeout=60)
        time.sleep(1.0)
        assert exa.proc is not None
        with c.cpu_meter(exa.proc.pid) as cpu:
            go.touch()
            t0 = routers.wait_for(
                lambda: stamp.exists() and float(stamp.read_text()), timeout=300, interval=0.01
            )
            done = wait_all(ctx, addresses, since=t0, timeout=60 + n / 100)
        return done, cpu["cpu"]
    finally:
        exa.stop()
        ctx.mon.wait_count("le", 0, timeout=60)


def references(ctx: Ctx, ours: Mapping[str, Any]) -> c.Table:
    ns = sizes(ctx)
    rows: list[list[str]] = []

    def cell(seconds: float | None, mrt_time: float | None, note: str = "") -> str:
        text = c.fmt_s(seconds)
        if seconds is not None and mrt_time:
            text += f" ({seconds / mrt_time:.1f}× GoBGP mrt)"
        return text + note

    mrt_times: dict[int, float | None] = {}
    mrt_row = ["GoBGP `gobgp mrt inject` until all N are in (a lost tail is injected again after 1 s)"]
    first_row = ["GoBGP `gobgp mrt inject`, first injection only"]
    for n in ns:
        done, injections, cpu, (got, first) = gobgp_mrt(ctx, n)
        log(f"gobgp mrt {n}: {done} in {injections} injection(s), first {got} in {first:.3f}, CPU {cpu:.2f}")
        mrt_times[n] = first * n / got if got else None  # the first injection's rate, scaled to N
        mrt_row.append(f"{c.fmt_s(done)} ({injections} injections), gobgpd CPU {cpu:.2f} s")
        first_row.append(f"{got:,} routes in {first:.2f} s")
    rows += [mrt_row, first_row]
    rows.append(["bgp-speaker (this run, warm)"] + [cell(ours.get(f"bulk{n}"), mrt_times.get(n)) for n in ns])
    add_row = ["GoBGP one `gobgp global rib add` per route"]
    first = gobgp_rib_add(ctx, 1_000 if not ctx.quick else 200)
    log(f"gobgp rib add: {first}")
    add_row.append(cell(first, mrt_times.get(1_000)) + (" (200 routes)" if ctx.quick else ""))
    if not ctx.quick and first is not None and first * 10 < 120:
        ten = gobgp_rib_add(ctx, 10_000)
        log(f"gobgp rib add 10k: {ten}")
        add_row.append(cell(ten, mrt_times.get(10_000)))
    else:
        add_row.append("not run" + (f" (~{first * 10:.0f} s extrapolated)" if first else ""))
    rows.append(add_row + ["not run"] * (len(ns) - 2))
    for per_line, label in (
        (1, "one `announce route` per prefix"),
        (500, "`announce attributes` 500 per line"),
    ):
        row = [f"ExaBGP alone, reactor speed 1.0, {label}, all at once"]
        for n in ns:
            if n > 10_000:
                row.append("not run (baseline: 130 s / 35 s)")
                continue
            done, cpu = naive_exabgp(ctx, n, per_line=per_line)
            log(f"naive exabgp {per_line}/line {n}: {done} cpu {cpu:.2f}")
            row.append(cell(done, mrt_times.get(n), f", CPU {cpu:.2f} s"))
        rows.append(row)
    return (
        "Same lab, same run: time until N routes are in the core's kernel table, by speaker and method "
        "(ratios against the first mrt injection's rate scaled to N)",
        ["speaker and method", *(f"{n:,}" for n in ns)],
        rows,
    )


def parse_cost(ctx: Ctx) -> c.Table:
    """In-process: what re-reading the EIP file costs the daemon on every change (JSON vs YAML)."""
    rows = []
    for n in (1_000, 10_000):
        doc = {"eips": [{"ip": a} for a in c.eip_addresses(n)]}
        for fmt, text in (("JSON", json.dumps(doc)), ("YAML", yaml.safe_dump(doc))):
            t0 = time.perf_counter()
            filesource.parse(text, where="bench", name="bench")
            rows.append([f"{n:,}", fmt, c.fmt_ms(time.perf_counter() - t0, digits=0)])
    return (
        "Daemon: parsing the EIP file (done on every change), in-process",
        ["EIPs", "format", "time"],
        rows,
    )


def summary(facts: Mapping[str, Any], quick: bool) -> c.Table:
    def verdict(value: float | None, limit: float) -> str:
        return "–" if value is None else ("met" if value <= limit else "missed")

    rows = [
        [
            "10k EIPs to the kernel table",
            c.fmt_s(facts.get("bulk10000")),
            "≤ 1.0 s",
            verdict(facts.get("bulk10000"), 1.0),
        ],
        [
            "100k EIPs to the kernel table",
            c.fmt_s(facts.get("bulk100000")),
            "≤ 12 s",
            verdict(facts.get("bulk100000"), 12.0),
        ],
        [
            "p99 file change → route",
            c.fmt_ms(facts.get("p99")),
            "≤ 50 ms",
            verdict(facts.get("p99"), TARGET_P99),
        ],
        [
            f"idle CPU at 10k ({facts.get('idle_secs', 0):g} s)",
            c.fmt_pct(facts.get("idle")),
            "≤ 3 %",
            verdict(facts.get("idle"), TARGET_IDLE_PCT),
        ],
        [
            "RSS speaker+ExaBGP+relay at 10k",
            c.fmt_mib(facts.get("rss10k")),
            "≤ 120 MiB",
            verdict(facts.get("rss10k"), TARGET_RSS_MIB),
        ],
    ]
    return ("Targets" + (" (quick run)" if quick else ""), ["what", "measured", "target", ""], rows)


def _section(name: str, fn: Callable[[], Any]) -> Any:
    started = time.monotonic()
    log(f"-- {name}")
    try:
        return fn()
    finally:
        log(f"-- {name} took {time.monotonic() - started:.1f} s")


def run(*, quick: bool) -> list[c.Table]:
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks need root (network namespaces)")
    tables: list[c.Table] = []
    facts: dict[str, Any] = {}
    with Lab() as lab:
        topo = build(lab, gateways=1, router=None)
        gw = topo.gateway(1)
        # An active core brings GoBGP's session up in ~1 s; ExaBGP (which does not listen) connects out.
        core = topo.start_router("bird", neighbors=[topo.neighbor(gw, passive=False)])
        assert isinstance(core, Bird)
        with c.RouteMonitor(topo.core).start() as mon:
            ctx = Ctx(lab=lab, topo=topo, gw=gw, core=core, mon=mon, quick=quick, runtime=c.runtime())
            bulk_tables, bulk_facts = _section("bulk", lambda: bulk_and_footprint(ctx))
            facts.update(bulk_facts)
            cold = _section("cold start", lambda: cold_start(ctx))
            lat_table, lat_facts = _section("latency", lambda: latency_table(ctx))
            facts.update(lat_facts)
            sweep = _section("knobs", lambda: knob_sweep(ctx))
            refs = [_section("references", lambda: references(ctx, facts))]
            tables += [summary(facts, quick), *bulk_tables, cold, lat_table, parse_cost(ctx), *refs, sweep]
    return tables
