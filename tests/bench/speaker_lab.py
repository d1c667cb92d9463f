"""The speaker benchmark's context and its measuring steps, shared by the scenarios
(:mod:`tests.bench.bench_speaker`) and the references (:mod:`tests.bench.references`).

Every time is taken from the moment the EIP file is renamed into place (or the process is started) to
the moment the last route shows up in the core's KERNEL table, as seen by a streamed ``ip monitor
route`` (:class:`tests.bench.arrivals.RouteMonitor`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench import common as c
from tests.bench.arrivals import RouteMonitor, kernel_count
from tests.bench.procs import cpu_meter
from tests.lab.bird import Bird
from tests.lab.netns import Lab
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology

DEFAULT_KNOBS: Mapping[str, float] = {"reactor_speed": 1.0, "batch_size": 48, "window": 8}
REPEATS = 3

log = c.Log("bench")


@dataclass
class Ctx:
    lab: Lab
    topo: Topology
    gw: Gateway
    core: Bird
    mon: RouteMonitor
    quick: bool
    runtime: c.Runtime

    @property
    def bird_pid(self) -> int:
        assert self.core.proc is not None
        return self.core.proc.pid


def sizes(ctx: Ctx) -> list[int]:
    return [1_000, 10_000] if ctx.quick else [1_000, 10_000, 100_000]


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time (a run that never finished counts as the slowest)."""
    ordered = sorted(runs, key=lambda r: float("inf") if r["seconds"] is None else r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


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
    speaker = c.new_speaker(
        ctx.topo,
        ctx.gw,
        exabgp={**(knobs or DEFAULT_KNOBS), "command": list(ctx.runtime.exabgp_command)},
        env=ctx.runtime.env,
    )
    speaker.eips_path.write_text(eips_json(eips))
    return speaker


def launch(ctx: Ctx, speaker: SpeakerProcess) -> float:
    """Start the daemon with the runtime's interpreter; returns the monotonic start time."""
    return c.launch(speaker, python=ctx.runtime.python)


def stop_speaker(ctx: Ctx, speaker: SpeakerProcess) -> None:
    c.stop_speaker(speaker, timeout=60, log=log)
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
    with cpu_meter(speaker.proc.pid) as cpu, cpu_meter(ctx.bird_pid) as bird:
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
            if kernel_count(ctx.topo.core) >= len(addresses):
                return time.monotonic() - since
            time.sleep(0.25)
    return None
