"""Benchmarks of the ``kubernetes`` source end to end: Kube-OVN objects -> daemon -> BIRD -> kernel.

Lab: BIRD 2 core (active towards the gateway, kernel export on), one NAT gateway namespace running
the real daemon with ``source.kind: kubernetes``, the API server double in this process with its
listening socket inside the gateway's namespace (tests/lab/kubelab.py). EIPs come from the RFC 2544
range; objects are shaped as kube-ovn-controller writes them (tests/kubeapi/kubeovn.py).

Clocks: the start of a binding is the wall-clock time just before the FIP rule's
``status.ready=true`` write lands in the API server's store (the earliest moment a watcher could
learn of it); its end is the timestamp ``ip -ts monitor route`` (streamed from the core) printed for
the route. Nothing polls the kernel table while a latency is measured. Nothing here asserts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bgp_speaker.adapters.kube.selection import IncrementalSelection
from bgp_speaker.core import kubeovn
from tests.bench import common as c
from tests.bench.arrivals import kernel_count
from tests.kubeapi import kubeovn as ko
from tests.lab.bird import Bird
from tests.lab.kubelab import KubeApi
from tests.lab.netns import Lab
from tests.lab.routemonitor import RouteMonitor
from tests.lab.speaker import SpeakerProcess
from tests.lab.topology import Gateway, Topology

TARGET_P99 = 0.100
CHUNK = 500  # objects written per call on the API server's loop


log = c.Log("bench kube")


@dataclass
class Ctx:
    lab: Lab
    topo: Topology
    gw: Gateway
    core: Bird
    api: KubeApi
    mon: RouteMonitor
    quick: bool


# --- objects --------------------------------------------------------------------------------------


def _eip_name(i: int) -> str:
    return f"eip-{i:06d}"


def add_bound_objects(ctx: Ctx, addresses: Sequence[str], *, offset: int, fip_ready: bool) -> list[str]:
    """Ready IptablesEIPs, each with a FIP rule (``status.ready`` = ``fip_ready``), as the controller
    leaves them. Returns the FIP rule names."""
    gw, pod = ctx.gw.name, ctx.gw.pod_v4
    redo = ko.redo_stamp()
    names: list[str] = []

    def write(batch: Sequence[tuple[int, str]]) -> None:
        for i, address in batch:
            eip_name = _eip_name(i)
            ctx.api.server.apply(ko.eip(eip_name, gateway=gw, v4ip=address, nat="fip", redo=redo))
            ctx.api.server.apply(
                ko.rule(
                    "fip", f"fip-{eip_name}", eip_name=eip_name, gateway=gw, v4ip=address,
                    ready=fip_ready, redo=redo, internal=pod,
                )
            )  # fmt: skip

    items = [(offset + k, a) for k, a in enumerate(addresses)]
    for start in range(0, len(items), CHUNK):
        ctx.api.call(write, items[start : start + CHUNK])
    names += [f"fip-{_eip_name(i)}" for i, _ in items]
    return names


# --- the daemon -----------------------------------------------------------------------------------


def new_speaker(ctx: Ctx) -> SpeakerProcess:
    return c.new_speaker(ctx.topo, ctx.gw, source=ctx.api.source_config(gateway=ctx.gw.name, policy="bound"))


def launch(speaker: SpeakerProcess) -> float:
    """Start the daemon without polling its status endpoint; returns the wall-clock start time."""
    return c.launch(speaker, clock=time.time)


def stop(ctx: Ctx, speaker: SpeakerProcess) -> None:
    c.stop_speaker(speaker, timeout=120, log=log)
    deadline = time.monotonic() + 120
    while kernel_count(ctx.topo.core) and time.monotonic() < deadline:
        time.sleep(0.2)


# --- measurements -------------------------------------------------------------------------------


def bind_one_by_one(ctx: Ctx, rules: Sequence[str], addresses: Sequence[str]) -> list[float]:
    """Ready each FIP rule in turn; the latency of each, to its route in the core's kernel table."""
    latencies: list[float] = []
    for rule, address in zip(rules, addresses, strict=True):
        mark = ctx.mon.mark()
        t0 = ctx.api.set_ready("iptables-fip-rules", rule, True)
        try:
            event = ctx.mon.wait(f"{address}/32", since=mark, timeout=30)
        except TimeoutError:
            log(f"{address}/32 did not arrive within 30 s; skipped")
            continue
        latencies.append(event.at - t0)
        time.sleep(0.02)
    return latencies


def latency_row(label: str, latencies: Sequence[float], *, wanted: int) -> list[str]:
    if not latencies:
        return [label, f"0 of {wanted}", "–", "–", "–", "–", "–"]
    return [
        label,
        str(len(latencies)) if len(latencies) == wanted else f"{len(latencies)} of {wanted}",
        c.fmt_ms(min(latencies)),
        c.fmt_ms(c.percentile(latencies, 50)),
        c.fmt_ms(c.percentile(latencies, 99)),
        c.fmt_ms(max(latencies)),
        c.fmt_ms(statistics.fmean(latencies)),
    ]


def binding_latency(ctx: Ctx, count: int) -> tuple[list[str], dict[str, Any]]:
    """``count`` EIPs with an unready FIP rule each, then the rules readied one at a time."""
    addresses = c.eip_addresses(count)
    rules = add_bound_objects(ctx, addresses, offset=0, fip_ready=False)
    speaker = new_speaker(ctx)
    launch(speaker)
    try:
        speaker.wait_status(lambda d: speaker.established(d) and d["source"]["synced"], timeout=120)
        time.sleep(1.0)  # the first passes (adj-rib-out read, Events of the refusals) are done
        latencies = bind_one_by_one(ctx, rules, addresses)
    finally:
        stop(ctx, speaker)
    return latency_row(f"{count} EIPs", latencies, wanted=count), {"latencies": latencies}


def cold_start(ctx: Ctx, total: int, *, have: int, extra: int) -> tuple[list[list[str]], list[str]]:
    """``total`` bound EIPs in the store, then the daemon started; then ``extra`` bindings made on
    top of that store, one at a time. The first ``have`` objects already exist (all bound)."""
    addresses = c.eip_addresses(total)
    add_bound_objects(ctx, addresses[have:], offset=have, fip_ready=True)
    late = c.eip_addresses(extra, offset=total)
    late_rules = add_bound_objects(ctx, late, offset=total, fip_ready=False)
    wanted = {f"{a}/32" for a in addresses}
    mark = ctx.mon.mark()
    speaker = new_speaker(ctx)
    log(f"cold start with {total} bound EIPs")
    t0 = launch(speaker)
    rows: list[list[str]] = []
    latency: list[str] = []
    try:
        try:
            last = ctx.mon.wait_count(wanted, since=mark, timeout=900)
        except TimeoutError as exc:
            log(f"cold start: {exc}")
            last = None
        events = ctx.mon.events[mark:]
        first = min((e.at for e in events if e.added and e.prefix in wanted), default=None)
        installed = kernel_count(ctx.topo.core)
        note = " (the route monitor lost notifications)" if ctx.mon.overflow else ""
        doc = speaker.wait_status(lambda d: d["source"]["synced"], timeout=60)
        reconcile = doc.get("last_reconcile") or {}
        rows = [
            ["process start -> first route at the core", c.fmt_s(None if first is None else first - t0)],
            [
                f"process start -> all {total} routes at the core{note}",
                c.fmt_s(None if last is None else last - t0),
            ],
            ["routes in the core's kernel table", str(installed)],
            [
                f"daemon: its last reconcile pass so far ({reconcile.get('announced', 0)} announced)",
                c.fmt_ms(reconcile.get("duration_seconds")),
            ],
        ]
        time.sleep(2.0)  # let the Event backlog and the status readers settle
        latencies = bind_one_by_one(ctx, late_rules, late)
        latency = latency_row(f"{total} EIPs", latencies, wanted=extra)
        last_pass = speaker.status().get("last_reconcile") or {}
        if last_pass.get("announced"):
            rows.append(
                [
                    f"daemon: reconcile pass of the last binding with {total} EIPs "
                    "(duration / trigger -> ExaBGP ack)",
                    f"{c.fmt_ms(last_pass.get('duration_seconds'))} / "
                    f"{c.fmt_ms(last_pass.get('latency_seconds'))}",
                ]
            )
    finally:
        stop(ctx, speaker)
    return rows, latency


def selection_cost(ctx: Ctx, *, runs: int = 5, events: int = 200) -> tuple[int, float, float]:
    """In this process: the pure selection over everything in the store (median of ``runs``), and
    the incremental selection's cost of one FIP rule readiness change + selection on that store
    (median of ``events``), the daemon's work per binding before desired state and diff."""

    def view() -> kubeovn.View:
        server = ctx.api.server
        return kubeovn.View(
            eips=server.list("iptables-eips"),
            rules={kind: server.list(plural) for kind, plural in ko.PLURAL_OF.items()},  # type: ignore[misc]
            gateway=server.get("vpc-nat-gateways", ctx.gw.name),
        )

    snapshot = ctx.api.call(view)
    options = kubeovn.Options(gateway=ctx.gw.name, policy="bound")
    timings = []
    for _ in range(runs):
        t0 = time.perf_counter()
        kubeovn.select(snapshot, options=options, hold_down={}, now=time.time())
        timings.append(time.perf_counter() - t0)
    incremental = IncrementalSelection(options)
    incremental.replace_eips(snapshot.eips)
    for kind, rules in snapshot.rules.items():
        incremental.replace_rules(kind, rules)
    incremental.select(time.time())
    per_event = []
    for k, rule in enumerate(list(snapshot.rules.get("fip", ()))[:events]):
        changed = {**rule, "metadata": {**rule["metadata"], "resourceVersion": f"bench-{k}"}}
        changed["status"] = {**rule["status"], "ready": not rule["status"].get("ready")}
        t0 = time.perf_counter()
        incremental.upsert_rule("fip", changed)
        incremental.select(time.time())
        per_event.append(time.perf_counter() - t0)
    return len(snapshot.eips), statistics.median(timings), statistics.median(per_event) if per_event else 0.0


# --- entry point ----------------------------------------------------------------------------------


def run(*, quick: bool) -> list[c.Table]:
    bindings = 100 if quick else 200
    total = 1_000 if quick else 10_000
    extra = 20 if quick else 50
    with c.bird_lab() as (lab, topo, gw, core), KubeApi(gw.ns) as api, RouteMonitor(topo.core) as mon:
        api.run(api.controller.create_gateway(gw.name, lan_ip=gw.eth0_v4))
        ctx = Ctx(lab=lab, topo=topo, gw=gw, core=core, api=api, mon=mon, quick=quick)
        small, facts = log.section("binding latency", lambda: binding_latency(ctx, bindings))
        cold_rows, big = log.section("cold start", lambda: cold_start(ctx, total, have=bindings, extra=extra))
        n_eips, select_s, event_s = log.section("selection cost", lambda: selection_cost(ctx))
    latencies = facts["latencies"]
    p99 = c.percentile(latencies, 99) if latencies else None
    verdict = "–" if p99 is None else ("met" if p99 <= TARGET_P99 else "missed")
    suffix = " (quick run)" if quick else ""
    header = ["EIPs in the store", "bindings", "min", "p50", "p99", "max", "mean"]
    return [
        (
            "Kubernetes source: FIP rule status.ready=true -> /32 in the core's kernel table" + suffix,
            header,
            [small, big],
        ),
        (
            f"Kubernetes source: cold start with {total} bound EIPs" + suffix,
            ["what", "measured"],
            [
                *cold_rows,
                [f"one full selection over {n_eips} EIPs and their rules (in process)", c.fmt_ms(select_s)],
                [
                    f"one FIP readiness change + incremental selection over {n_eips} EIPs (in process)",
                    c.fmt_ms(event_s),
                ],
                [
                    f"p99 binding latency with {bindings} EIPs: target ≤ 100 ms",
                    f"{c.fmt_ms(p99)} ({verdict})",
                ],
            ],
        ),
    ]
