"""Reference speakers in the speaker benchmark's lab and run: GoBGP 3.10 (``gobgp mrt inject`` and
per-route ``gobgp global rib add``), and plain ExaBGP driven the naive way by a helper that writes every
command at once (one ``announce route`` per prefix, or 500-prefix ``announce attributes`` lines).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.bench import common as c
from tests.bench.procs import cpu_meter
from tests.bench.speaker_lab import Ctx, log, sizes, wait_all
from tests.lab import exaspeaker, mrt, routers
from tests.lab.base import Neighbor
from tests.lab.gobgp import GoBgp

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
        with cpu_meter(speaker.proc.pid) as cpu:
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
        with cpu_meter(exa.proc.pid) as cpu:
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
    one_k = gobgp_rib_add(ctx, 1_000 if not ctx.quick else 200)
    log(f"gobgp rib add: {one_k}")
    add_row.append(cell(one_k, mrt_times.get(1_000)) + (" (200 routes)" if ctx.quick else ""))
    if not ctx.quick and one_k is not None and one_k * 10 < 120:
        ten = gobgp_rib_add(ctx, 10_000)
        log(f"gobgp rib add 10k: {ten}")
        add_row.append(cell(ten, mrt_times.get(10_000)))
    else:
        add_row.append("not run" + (f" (~{one_k * 10:.0f} s extrapolated)" if one_k else ""))
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
