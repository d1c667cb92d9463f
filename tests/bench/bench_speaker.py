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
import random
import time
from collections.abc import Mapping
from typing import Any

import yaml

from bgp_speaker.adapters import filesource
from tests.bench import common as c
from tests.bench.arrivals import RouteMonitor
from tests.bench.procs import idle_cpu_percent, memory_by_role
from tests.bench.references import references
from tests.bench.speaker_lab import (
    DEFAULT_KNOBS,
    REPEATS,
    Ctx,
    eips_json,
    launch,
    log,
    measure_bulk,
    measure_withdraw_all,
    median_run,
    new_speaker,
    replace_file,
    running_speaker,
    sizes,
    stop_speaker,
    wait_all,
)

TARGETS = {1_000: None, 10_000: 1.0, 100_000: 12.0}
TARGET_P99 = 0.050
TARGET_IDLE_PCT = 3.0
TARGET_RSS_MIB = 120.0


# --- scenarios ---------------------------------------------------------------------------------------


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
            mem = memory_by_role(speaker.proc.pid)
            r = median_run(runs)
            facts[f"bulk{n}"] = r["seconds"]
            if n == 10_000:
                secs = 10.0 if ctx.quick else 30.0
                facts["idle"] = idle_cpu_percent(speaker.proc.pid, seconds=secs)
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
                idle_by_speed[speed] = idle_cpu_percent(speaker.proc.pid, seconds=idle_secs)
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


def run(*, quick: bool) -> list[c.Table]:
    tables: list[c.Table] = []
    facts: dict[str, Any] = {}
    with c.bird_lab() as (lab, topo, gw, core), RouteMonitor(topo.core).start() as mon:
        ctx = Ctx(lab=lab, topo=topo, gw=gw, core=core, mon=mon, quick=quick, runtime=c.runtime())
        bulk_tables, bulk_facts = log.section("bulk", lambda: bulk_and_footprint(ctx))
        facts.update(bulk_facts)
        cold = log.section("cold start", lambda: cold_start(ctx))
        lat_table, lat_facts = log.section("latency", lambda: latency_table(ctx))
        facts.update(lat_facts)
        sweep = log.section("knobs", lambda: knob_sweep(ctx))
        refs = [log.section("references", lambda: references(ctx, facts))]
        tables += [summary(facts, quick), *bulk_tables, cold, lat_table, parse_cost(ctx), *refs, sweep]
    return tables
