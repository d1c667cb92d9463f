"""The incremental Kube-OVN selection gives exactly what the full selection gives.

Random sequences of watch events (fixed seeds) are applied both to
:class:`bgp_speaker.adapters.kube.selection.IncrementalSelection` and to a plain store that
:func:`bgp_speaker.core.kubeovn.select` reads whole; after every batch both are asked for the
selection at the same time and must agree on candidates, refusals, held notes, the hold-down
state and the next deadline. The same runs through :class:`KubeSource`'s watch sink.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client

from bgp_speaker.adapters.kube.selection import IncrementalSelection
from bgp_speaker.adapters.kube.source import EIPS, GATEWAYS, PLURALS, RULE_PLURALS, KubeSource
from bgp_speaker.core import kubeovn
from bgp_speaker.settings import KubernetesSourceConfig
from tests.kubeapi import kubeovn as ko

GW = "gw1"
PREFIXES = ("bgp-speaker.kubeovn.io/", "example.org/")
NAMES = [f"e{i}" for i in range(8)]
RULE_NAMES = [f"r{i}" for i in range(6)]
V4 = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.01", "203.0.113.300"]
V6 = ["2001:db8::1", "2001:db8::0:1", "2001:db8::2"]
KINDS: tuple[kubeovn.RuleKind, ...] = ("dnat", "fip", "snat")
Obj = dict[str, Any]


@dataclass
class World:
    """The objects as the API server holds them, and what happens to them."""

    rng: random.Random
    eips: dict[str, Obj] = field(default_factory=dict)
    rules: dict[kubeovn.RuleKind, dict[str, Obj]] = field(default_factory=lambda: {k: {} for k in KINDS})
    gateway: Obj = field(default_factory=lambda: ko.gateway(GW))
    version: int = 0

    def stamp(self, obj: Obj) -> Obj:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return obj

    def view(self) -> kubeovn.View:
        return kubeovn.View(
            eips=list(self.eips.values()),
            rules={k: list(v.values()) for k, v in self.rules.items()},
            gateway=self.gateway,
        )

    def new_eip(self) -> Obj:
        r = self.rng
        obj = ko.eip(
            r.choice(NAMES),
            gateway=r.choice([GW, GW, GW, "gw2", ""]),
            v4ip=r.choice([*V4, "", "2001:db8::9"]),
            v6ip=r.choice(["", "", *V6]),
            ready=r.random() < 0.7,
            redo=r.choice(["", "2026-01-02T15:04:05"]),
            labelled=r.random() < 0.8,
            label_gateway=r.choice([None, None, None, "gw2", GW]),
            annotations=r.choice(
                [
                    {},
                    {ko.ANNOTATION_BGP: "true"},
                    {ko.ANNOTATION_BGP: "True"},
                    {f"{PREFIXES[0]}med": "50"},
                    {f"{PREFIXES[0]}med": "lots", ko.ANNOTATION_BGP: "true"},
                    {f"{PREFIXES[1]}communities": "65000:1", ko.ANNOTATION_BGP: "true"},
                    {f"{PREFIXES[1]}comunities": "65000:1"},
                ]
            ),
        )
        if r.random() < 0.2:
            obj["status"]["ip"] = r.choice(V4)
        if r.random() < 0.1:
            obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return self.stamp(obj)

    def new_rule(self) -> tuple[kubeovn.RuleKind, Obj]:
        r = self.rng
        kind = r.choice(KINDS)
        obj = ko.rule(
            kind, r.choice(RULE_NAMES), eip_name=r.choice([*NAMES, "ghost"]), gateway=GW, v4ip="",
            ready=r.random() < 0.6, labelled=r.random() < 0.5,
        )  # fmt: skip
        if r.random() < 0.15:
            obj["status"]["natGwDp"] = r.choice(["", "gw2"])
        if r.random() < 0.1:
            obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return kind, self.stamp(obj)

    def toggled(self, obj: Obj) -> Obj:
        """The same object with ``status.ready`` flipped (the redo cycle, a rule being applied)."""
        again = copy.deepcopy(obj)
        again["status"]["ready"] = again["status"].get("ready") is not True
        return self.stamp(again)

    def relabelled(self, obj: Obj) -> Obj:
        """The same object with only a label changed (what the controller writes after a rule)."""
        again = copy.deepcopy(obj)
        again["metadata"].setdefault("labels", {})["example.org/touched"] = str(self.version)
        return self.stamp(again)


def random_options(rng: random.Random) -> kubeovn.Options:
    return kubeovn.Options(
        gateway=GW,
        policy=rng.choice(["bound", "bound", "ready", "annotated"]),
        annotation_prefix=rng.choice(PREFIXES),
        hold_down_seconds=rng.choice([0.0, 5.0, 15.0]),
    )


class Both:
    """The incremental selection and the full one, fed the same events."""

    def __init__(self, world: World, options: kubeovn.Options) -> None:
        self.world, self.options = world, options
        self.incremental = IncrementalSelection(options)
        self.hold_down: kubeovn.HoldDown = {}

    def step(self, rng: random.Random) -> None:
        w, inc = self.world, self.incremental
        roll = rng.random()
        if roll < 0.12 and w.eips:
            name = rng.choice(sorted(w.eips))
            w.eips[name] = w.toggled(w.eips[name])
            inc.upsert_eip(w.eips[name])
        elif roll < 0.24 and any(w.rules.values()):
            kind = rng.choice([k for k in KINDS if w.rules[k]])
            name = rng.choice(sorted(w.rules[kind]))
            w.rules[kind][name] = w.toggled(w.rules[kind][name])
            inc.upsert_rule(kind, w.rules[kind][name])
        elif roll < 0.42:
            obj = w.new_eip()
            w.eips[obj["metadata"]["name"]] = obj
            inc.upsert_eip(obj)
        elif roll < 0.48 and w.eips:
            name = rng.choice(sorted(w.eips))
            del w.eips[name]
            inc.delete_eip(name)
        elif roll < 0.66:
            kind, obj = w.new_rule()
            w.rules[kind][obj["metadata"]["name"]] = obj
            inc.upsert_rule(kind, obj)
        elif roll < 0.72 and any(w.rules.values()):
            kind = rng.choice([k for k in KINDS if w.rules[k]])
            name = rng.choice(sorted(w.rules[kind]))
            del w.rules[kind][name]
            inc.delete_rule(kind, name)
        elif roll < 0.80 and any(w.rules.values()):
            kind = rng.choice([k for k in KINDS if w.rules[k]])
            name = rng.choice(sorted(w.rules[kind]))
            w.rules[kind][name] = w.relabelled(w.rules[kind][name])
            inc.upsert_rule(kind, w.rules[kind][name])
        elif roll < 0.85:
            # A relist: unchanged objects come back with their resourceVersion.
            if rng.random() < 0.5:
                inc.replace_eips(list(w.eips.values()))
            else:
                kind = rng.choice(KINDS)
                inc.replace_rules(kind, list(w.rules[kind].values()))
        elif roll < 0.88:
            w.gateway = w.stamp(ko.gateway(GW, ready=rng.random() < 0.5))
            inc.gateway_changed()
        elif roll < 0.92:
            self.options = random_options(rng)
            inc.reconfigure(self.options)
        # else: nothing happens but time passes

    def compare(self, now: float) -> kubeovn.Selection:
        full = kubeovn.select(self.world.view(), options=self.options, hold_down=self.hold_down, now=now)
        self.hold_down = full.hold_down
        mine = self.incremental.select(now)
        assert mine.candidates == full.candidates
        assert mine.refusals == full.refusals
        assert mine.held == full.held
        assert mine.next_deadline == full.next_deadline
        assert dict(mine.hold_down) == dict(full.hold_down)
        return full


def run_seed(seed: int) -> dict[str, int]:
    """One random run; every snapshot is compared. Returns how often each state was seen."""
    rng = random.Random(seed)
    both = Both(World(rng), random_options(rng))
    now = 1000.0
    seen = {"candidates": 0, "refusals": 0, "held": 0, "verified": 0}
    for _ in range(250):
        for _ in range(rng.choice([1, 1, 1, 2, 5])):  # sometimes several events per snapshot
            both.step(rng)
        now += rng.choice([0.0, 0.0, 0.5, 2.0, 6.0, 20.0])
        selection = both.compare(now)
        seen["candidates"] += bool(selection.candidates)
        seen["refusals"] += bool(selection.refusals)
        seen["held"] += bool(selection.held)
        if rng.random() < 0.05:
            assert both.incremental.verify(now) == 0, "the full recomputation found wrong verdicts"
            seen["verified"] += 1
    return seen


@pytest.mark.parametrize("seed", range(40))
def test_incremental_equals_full_on_random_events(seed: int) -> None:
    seen = run_seed(seed)  # compares every snapshot
    assert seen["refusals"], seen


def test_random_runs_exercise_hold_downs_and_checks() -> None:
    """The runs must reach the interesting states, or the comparison proves little."""
    total = {"candidates": 0, "held": 0, "verified": 0}
    for seed in range(10):
        seen = run_seed(seed)
        total = {key: total[key] + seen[key] for key in total}
    assert total["candidates"] > 0
    assert total["held"] > 0
    assert total["verified"] > 0


def test_an_event_re_evaluates_only_what_it_can_affect() -> None:
    world = World(random.Random(0))
    inc = IncrementalSelection(kubeovn.Options(gateway=GW, policy="bound", hold_down_seconds=0.0))
    for i in range(500):
        address = f"198.51.{100 + i // 250}.{i % 250 + 1}"
        world.eips[f"eip-{i}"] = world.stamp(ko.eip(f"eip-{i}", gateway=GW, v4ip=address))
        rule = world.stamp(ko.rule("fip", f"fip-{i}", eip_name=f"eip-{i}", gateway=GW, v4ip=address))
        world.rules["fip"][f"fip-{i}"] = rule
    inc.replace_eips(world.eips.values())
    inc.replace_rules("fip", world.rules["fip"].values())
    assert len(inc.select(1000.0).candidates) == 500
    before = inc.stats["evaluations"]

    unready = world.stamp(copy.deepcopy(world.rules["fip"]["fip-7"]))
    unready["status"]["ready"] = False
    inc.upsert_rule("fip", unready)
    assert "198.51.100.8" not in {str(c.address) for c in inc.select(1001.0).candidates}
    assert inc.stats["evaluations"] - before == 1

    # A label written after the spec changes no fact: nothing is evaluated.
    inc.upsert_rule("fip", world.relabelled(unready))
    inc.select(1002.0)
    assert inc.stats["evaluations"] - before == 1

    # Taking another EIP's address re-evaluates the two EIPs involved, and refuses both.
    thief = world.stamp(ko.eip("eip-0", gateway=GW, v4ip="198.51.100.3"))
    inc.upsert_eip(thief)
    refused = {r.origin for r in inc.select(1003.0).refusals}
    assert {"iptables-eip/eip-0", "iptables-eip/eip-2"} <= refused
    assert inc.stats["evaluations"] - before == 3
    assert inc.verify(1004.0) == 0


def test_hold_down_ends_on_its_own_without_an_event() -> None:
    world = World(random.Random(0))
    inc = IncrementalSelection(kubeovn.Options(gateway=GW, policy="ready", hold_down_seconds=10.0))
    eip = world.stamp(ko.eip("eip-a", gateway=GW, v4ip=V4[0]))
    inc.upsert_eip(eip)
    assert len(inc.select(100.0).candidates) == 1
    unready = world.stamp(ko.eip("eip-a", gateway=GW, v4ip=V4[0], ready=False))
    inc.upsert_eip(unready)
    held = inc.select(101.0)
    assert held.next_deadline == 111.0
    assert [n.reason for n in held.held] == ["held (not ready (status.ready is not true)) for 10 s more"]
    assert inc.select(105.5).held[0].reason.endswith("for 6 s more")
    ended = inc.select(111.0)
    assert not ended.candidates
    assert not ended.held
    assert ended.next_deadline is None
    assert [r.reason for r in ended.refusals] == ["not ready (status.ready is not true)"]


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def test_kube_source_sink_matches_the_full_selection() -> None:
    """The same random runs through KubeSource's watch sink (what the watch threads call)."""
    for seed in range(5):
        rng = random.Random(1000 + seed)
        clock = Clock()
        config = KubernetesSourceConfig(policy="bound", hold_down_seconds=15.0)
        source = KubeSource(
            config=config, gateway=GW, client_config=client.Configuration(), clock=clock,
            full_check_seconds=30.0,
        )  # fmt: skip
        for plural in PLURALS:
            source.replaced(plural, [ko.gateway(GW)] if plural == GATEWAYS else [], "1")
        world = World(rng)
        hold_down: kubeovn.HoldDown = {}
        options = kubeovn.Options(gateway=GW, hold_down_seconds=15.0)
        for _ in range(200):
            roll = rng.random()
            if roll < 0.4:
                obj = world.new_eip()
                world.eips[obj["metadata"]["name"]] = obj
                source.changed(EIPS, "MODIFIED", obj)
            elif roll < 0.5 and world.eips:
                name = rng.choice(sorted(world.eips))
                gone = world.eips.pop(name)
                source.changed(EIPS, "DELETED", gone)
            elif roll < 0.6 and world.eips:
                name = rng.choice(sorted(world.eips))
                world.eips[name] = world.toggled(world.eips[name])
                source.changed(EIPS, "MODIFIED", world.eips[name])
            elif roll < 0.9:
                kind, obj = world.new_rule()
                world.rules[kind][obj["metadata"]["name"]] = obj
                source.changed(RULE_PLURALS[kind], "ADDED", obj)
            else:
                source.replaced(EIPS, list(world.eips.values()), str(world.version))
            clock.now += rng.choice([0.0, 1.0, 7.0])
            snapshot = source.snapshot()
            full = kubeovn.select(world.view(), options=options, hold_down=hold_down, now=clock.now)
            hold_down = full.hold_down
            assert snapshot.candidates == full.candidates
            assert snapshot.refusals == full.refusals
            assert snapshot.details["held"] == [
                {"address": h.address, "origin": h.origin, "reason": h.reason, "until": h.until}
                for h in full.held
            ]
        stats = snapshot.details["selection"]
        assert isinstance(stats, dict)
        assert stats["full"] > 1  # the periodic check ran
        assert stats["mismatches"] == 0
