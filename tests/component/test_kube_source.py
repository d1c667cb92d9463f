"""The kubernetes source with the REAL official client against the HTTP API server double.

Objects are written the way kube-ovn-controller writes them (tests/kubeapi/kubeovn.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from bgp_speaker.adapters.kube import EventRecorder, KubeSource, Timing
from bgp_speaker.adapters.kube.events import MAX_BURST
from bgp_speaker.aiokit import Trigger
from bgp_speaker.core.model import PeerState, PeerStatus, Refusal
from bgp_speaker.errors import ConfigError
from bgp_speaker.ports import SourceSnapshot
from bgp_speaker.settings import KubernetesSourceConfig, ReconcileConfig
from tests.kubeapi import ApiServer
from tests.kubeapi import kubeovn as ko
from tests.polling import DEADLINE, eventually

GW = "gw1"
A, B, C = "203.0.113.10", "203.0.113.11", "203.0.113.12"
PEER = ip_address("192.0.2.1")


@dataclass
class Harness:
    api: ApiServer
    ctl: ko.Controller
    source: KubeSource
    trigger: Trigger
    kubeconfig: Path
    snapshots: list[SourceSnapshot] = field(default_factory=list)

    def snap(self) -> SourceSnapshot:
        snapshot = self.source.snapshot()
        self.snapshots.append(snapshot)
        return snapshot

    def announced(self) -> set[str]:
        return {str(c.address) for c in self.snap().candidates}

    def refusal(self, name: str) -> str | None:
        for r in self.snap().refusals:
            if r.origin == f"iptables-eip/{name}":
                return r.reason
        return None

    def held(self) -> list[dict[str, Any]]:
        return list(self.snap().details.get("held", []))  # type: ignore[call-overload]

    def resource(self, plural: str) -> dict[str, Any]:
        return self.snap().details["resources"][plural]  # type: ignore[index,no-any-return]


@contextlib.asynccontextmanager
async def harness(
    tmp_path: Path, *, hold_down: float = 0.0, policy: str = "bound", coalesce: float = 0.0, **timing: Any
) -> AsyncIterator[Harness]:
    api = await ApiServer(bookmark_interval=0.5).start()
    task: asyncio.Task[None] | None = None
    try:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        config = KubernetesSourceConfig(
            kubeconfig=kubeconfig,
            hold_down_seconds=hold_down,
            policy=policy,  # type: ignore[arg-type]
        )
        timing.setdefault("backoff_max", 1.0)
        timing.setdefault("watch_timeout", 60)
        source = KubeSource.from_settings(config, environ={"GATEWAY_NAME": GW}, timing=Timing(**timing))
        trigger = Trigger(coalesce=coalesce)
        ctl = ko.Controller(api)
        await ctl.create_gateway(GW)
        task = asyncio.create_task(source.run(trigger=trigger))
        h = Harness(api, ctl, source, trigger, kubeconfig)
        await eventually(lambda: h.snap().synced, what="first sync")
        yield h
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await api.stop()


async def test_gateway_name_comes_from_env_or_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_NAME"):
        KubeSource.from_settings(KubernetesSourceConfig(kubeconfig=tmp_path / "none"), environ={})
    with pytest.raises(ConfigError, match="cannot load the Kubernetes client config"):
        KubeSource.from_settings(
            KubernetesSourceConfig(gateway_name="x", kubeconfig=tmp_path / "none"), environ={}
        )


async def test_create_and_delete_eip_and_rule(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        assert h.announced() == set()
        await h.ctl.create_eip("eip-a", gateway=GW, v4ip=A)
        await eventually(
            lambda: h.refusal("eip-a") == "not bound: no FIP/SNAT/DNAT rule references it (spec.eip)"
        )
        await h.ctl.create_rule("fip", "fip-a", eip_name="eip-a")
        await eventually(lambda: h.announced() == {A}, what="EIP announced once bound")
        snap = h.snap()
        assert snap.candidates[0].origin == "iptables-eip/eip-a"
        assert snap.error is None

        await h.ctl.delete_rule("fip", "fip-a")
        await eventually(lambda: h.announced() == set(), what="withdrawn after the FIP is deleted")
        assert h.refusal("eip-a") == "not bound: no FIP/SNAT/DNAT rule references it (spec.eip)"
        await h.ctl.delete_eip("eip-a")
        await eventually(lambda: h.refusal("eip-a") is None, what="the deleted EIP to vanish from the report")
        assert h.source.lookup("iptables-eips", "eip-a") is None


async def test_bind_and_unbind_with_hold_down_then_expiry(tmp_path: Path) -> None:
    async with harness(tmp_path, hold_down=1.0) as h:
        await h.ctl.create_eip("eip-a", gateway=GW, v4ip=A)
        await h.ctl.create_rule("snat", "snat-a", eip_name="eip-a", internal="10.0.1.0/24")
        await eventually(lambda: h.announced() == {A}, what="bound by SNAT")
        await h.ctl.delete_rule("snat", "snat-a")
        held = await eventually(h.held, what="the unbound EIP held")
        assert held[0]["reason"].startswith("held (not bound: no FIP/SNAT/DNAT rule references it")
        assert A in h.announced()
        # No watch event comes when the hold-down ends: the source pulls the trigger itself.
        await eventually(lambda: "kubernetes:hold-down" in h.trigger.reasons, what="the hold-down timer")
        assert h.announced() == set()
        assert h.refusal("eip-a") == "not bound: no FIP/SNAT/DNAT rule references it (spec.eip)"


@pytest.mark.parametrize("hold_down", [0.0, 30.0])
async def test_redo_flap(tmp_path: Path, hold_down: float) -> None:
    """Kube-OVN's redo cycle flips ready false then true: with a hold-down, no flap."""
    async with harness(tmp_path, hold_down=hold_down) as h:
        h.ctl.pause = 0.0
        await h.ctl.create_eip("eip-a", gateway=GW, v4ip=A)
        await h.ctl.create_rule("dnat", "dnat-a", eip_name="eip-a")
        await eventually(lambda: h.announced() == {A})
        seen: list[tuple[bool, bool]] = []
        sampling = True

        async def sample() -> None:
            while sampling:
                snap = h.snap()
                seen.append(
                    (any(str(c.address) == A for c in snap.candidates), bool(snap.details.get("held")))
                )
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        unready = asyncio.create_task(h.ctl.redo_cycle(GW, unready_for=0.5))
        await eventually(
            lambda: h.source.lookup("iptables-eips", "eip-a")["status"]["ready"] is False,  # type: ignore[index]
            what="the redo to be seen",
        )
        await unready
        await eventually(lambda: h.source.lookup("iptables-dnat-rules", "dnat-a")["status"]["ready"] is True)  # type: ignore[index]
        await eventually(lambda: h.announced() == {A} and not h.held(), what="settled after the redo")
        sampling = False
        await sampler
        if hold_down:
            assert all(announced for announced, _ in seen), "the EIP was withdrawn during the redo cycle"
            assert any(held for _, held in seen), "the redo was never observed as held"
        else:
            assert not all(announced for announced, _ in seen), "without hold-down the redo must show"


async def test_other_gateway_conflicts_invalid_missing_and_v6_only(tmp_path: Path) -> None:
    async with harness(tmp_path, policy="ready") as h:
        h.api.apply(ko.eip("theirs", gateway="gw2", v4ip=B))
        h.api.apply(ko.eip("claims", gateway=GW, v4ip=C, label_gateway="gw2"))
        h.api.apply(ko.eip("bad-ip", gateway=GW, v4ip="203.0.113.999"))
        h.api.apply(ko.eip("no-ip", gateway=GW))
        h.api.apply(ko.eip("dup", gateway=GW, v4ip=B))
        await h.ctl.create_eip("v6only", gateway=GW, v6ip="2001:db8::10")
        await h.ctl.create_eip("ok", gateway=GW, v4ip=A)
        await eventually(lambda: h.announced() == {A}, what="only the good EIP")
        assert h.refusal("theirs") is None
        assert h.refusal("claims") == (
            "claims another gateway: spec.natGwDp is 'gw1' but label "
            "ovn.kubernetes.io/vpc-nat-gw-name is 'gw2'"
        )
        assert h.refusal("bad-ip") == "invalid spec.v4ip '203.0.113.999': not an IP address"
        assert (
            h.refusal("no-ip")
            == "missing fields: neither spec.v4ip nor spec.v6ip is set (no address allocated yet)"
        )
        assert h.refusal("dup") == f"duplicate address: {B} is also on IptablesEIP theirs"
        v6 = h.refusal("v6only")
        assert v6 is not None
        assert "never readies a v6-only EIP" in v6

        # Made ready anyway (as a future Kube-OVN might), a v6-only EIP is a /128.
        h.api.patch("iptables-eips", "v6only", {"status": {"ready": True}}, status=True)
        await eventually(lambda: h.announced() == {A, "2001:db8::10"}, what="the /128 candidate")


async def test_malformed_objects_are_skipped_and_reported(tmp_path: Path) -> None:
    async with harness(tmp_path, policy="ready") as h:
        await h.ctl.create_eip("ok", gateway=GW, v4ip=A)
        await eventually(lambda: h.announced() == {A})
        h.api.inject("iptables-eips", {"type": "ADDED", "object": {"metadata": {}}})
        h.api.inject("iptables-eips", {"type": "ADDED", "object": "garbage"})
        h.api.inject("iptables-eips", "not an event at all")
        weird = ko.eip("weird", gateway=GW, v4ip=B)
        weird["spec"] = "not a mapping"
        h.api.inject("iptables-eips", {"type": "ADDED", "object": weird})
        await h.ctl.create_eip("after", gateway=GW, v4ip=C)
        await eventually(lambda: h.announced() == {A, C}, what="the watch to survive malformed events")
        details = h.snap().details
        assert details["malformed_total"] == 3
        assert h.resource("iptables-eips")["connected"]
        assert (
            h.refusal("weird") == "claims another gateway: label ovn.kubernetes.io/vpc-nat-gw-name is 'gw1' "
            "but spec.natGwDp is missing"
        )


async def test_watch_dropped_mid_stream_resumes_without_relist(tmp_path: Path) -> None:
    async with harness(tmp_path, policy="ready") as h:
        await h.ctl.create_eip("eip-a", gateway=GW, v4ip=A)
        await eventually(lambda: h.announced() == {A})
        lists = h.api.count("list", "iptables-eips")
        watches = h.api.count("watch", "iptables-eips")
        h.api.drop_watches()
        await h.ctl.create_eip("eip-b", gateway=GW, v4ip=B)  # may land before or after the reconnect
        await eventually(lambda: h.announced() == {A, B}, what="the change made around the drop")
        await eventually(lambda: h.api.count("watch", "iptables-eips") > watches, what="a new watch")
        assert h.api.count("list", "iptables-eips") == lists, "a dropped watch must resume, not relist"
        await eventually(lambda: h.resource("iptables-eips")["connected"])


async def test_410_gone_relists_without_losing_state(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        await h.ctl.create_eip("eip-a", gateway=GW, v4ip=A)
        await h.ctl.create_rule("fip", "fip-a", eip_name="eip-a")
        await eventually(lambda: h.announced() == {A})
        since = len(h.snapshots)
        lists = h.api.count("list", "iptables-eips")
        h.api.compact()
        h.api.drop_watches()
        await eventually(lambda: h.resource("iptables-eips")["relists"] >= 1, what="a 410 relist")
        await eventually(lambda: h.api.count("list", "iptables-eips") > lists)
        assert h.announced() == {A}
        await h.ctl.create_eip("eip-b", gateway=GW, v4ip=B)
        await h.ctl.create_rule("fip", "fip-b", eip_name="eip-b")
        await eventually(lambda: h.announced() == {A, B}, what="watching again after the relist")
        assert all(A in {str(c.address) for c in s.candidates} for s in h.snapshots[since:]), (
            "state lost on relist"
        )


@pytest.mark.parametrize("outage", [3.0, 30.0])
async def test_api_server_down_keeps_last_good_view(tmp_path: Path, outage: float) -> None:
    async with harness(tmp_path, policy="ready", backoff_max=2.0) as h:
        await h.ctl.create_eip("eip-a", gateway=GW, v4ip=A)
        await eventually(lambda: h.announced() == {A})
        await h.api.go_down()
        await eventually(lambda: h.snap().error, what="the outage to be noticed")
        stale_marks: list[float] = []
        frozen: set[float | None] = set()
        end = time.monotonic() + outage
        while time.monotonic() < end:
            snap = h.snap()
            assert {str(c.address) for c in snap.candidates} == {A}, "never withdraw because of an outage"
            assert snap.synced
            assert snap.error
            assert snap.fresh_at is not None
            frozen.add(snap.fresh_at)
            stale_marks.append(time.time() - snap.fresh_at)
            await asyncio.sleep(0.25)
        assert len(frozen) == 1, "fresh_at must stay at the moment the view was last known current"
        assert stale_marks[-1] > stale_marks[0], "staleness must grow during the outage"
        # Changes during the outage are seen once it is back.
        h.api.apply(ko.eip("eip-b", gateway=GW, v4ip=B))
        failures = h.resource("iptables-eips")["failures"]
        assert failures >= 1
        up_at = time.time()
        await h.api.come_up()
        await eventually(lambda: h.announced() == {A, B}, what="recovery after the outage")
        await eventually(lambda: h.snap().error is None, what="the error to clear")
        snap = h.snap()
        assert snap.fresh_at is not None
        assert snap.fresh_at >= up_at, "fresh again once every watch is re-established"


async def test_burst_of_1000_objects(tmp_path: Path) -> None:
    coalesce = ReconcileConfig().coalesce_seconds  # what the reconciler uses by default
    async with harness(tmp_path, coalesce=coalesce) as h:
        passes = 0
        done = asyncio.Event()
        expected = {f"198.51.{100 + i // 250}.{i % 250 + 1}" for i in range(500)}

        async def reconcile() -> None:
            nonlocal passes
            while True:
                await h.trigger.wait()
                passes += 1
                if h.announced() == expected:
                    done.set()

        consumer = asyncio.create_task(reconcile())
        try:
            for i, ip in enumerate(sorted(expected)):
                h.api.apply(ko.eip(f"eip-{i}", gateway=GW, v4ip=ip))
                h.api.apply(ko.rule("fip", f"fip-{i}", eip_name=f"eip-{i}", gateway=GW, v4ip=ip))
            await asyncio.wait_for(done.wait(), DEADLINE)
        finally:
            consumer.cancel()
        events = sum(h.resource(p)["events"] for p in ("iptables-eips", "iptables-fip-rules"))
        assert events == 1000
        print(f"1000 objects -> {passes} reconcile passes")
        assert passes < events


async def test_events_posted_aggregated_and_rate_limited(tmp_path: Path) -> None:
    async with harness(tmp_path, policy="ready") as h:
        await h.ctl.create_eip("eip-a", gateway=GW, v4ip=A)
        await eventually(lambda: h.announced() == {A})
        config = h.source._client_config  # the same cluster connection
        recorder = EventRecorder(client_config=config, gateway=GW, source=h.source, events_per_minute=3)
        runner = asyncio.create_task(recorder.run())
        try:
            recorder.announced(["iptables-eip/eip-a", "file:x[0]"])
            recorder.announced(["iptables-eip/eip-a"])  # no change: no second event
            recorder.peer_changed(PeerStatus(peer=PEER, state=PeerState.ESTABLISHED))
            recorder.refused(
                [Refusal(address=A, origin="iptables-eip/eip-a", reason="outside the allowed pools")]
            )
            await eventually(lambda: len(h.api.list("events", "default")) == 3, what="three events")
            events = {e["reason"]: e for e in h.api.list("events", "default")}
            assert events["Announced"]["involvedObject"]["kind"] == "IptablesEIP"
            assert (
                events["Announced"]["involvedObject"]["uid"]
                == h.source.lookup("iptables-eips", "eip-a")["metadata"]["uid"]
            )  # type: ignore[index]
            assert events["Announced"]["message"] == f"announced {A}/32 over BGP by {GW}"
            assert events["Announced"]["source"]["component"] == "bgp-speaker"
            assert events["PeerUp"]["involvedObject"]["kind"] == "VpcNatGateway"
            assert events["Refused"]["type"] == "Warning"
            assert "outside the allowed pools" in events["Refused"]["message"]
            # The bucket (3 a minute, burst 3) is empty now: a flood is held back, then dropped.
            for i in range(50):
                recorder.withdrawn([f"iptables-eip/flood-{i}"])
            await asyncio.sleep(0.5)
            assert len(h.api.list("events", "default")) == 3
            # One minute's worth (but at least MAX_BURST) may wait in the queue; the rest is dropped.
            assert recorder.stats["dropped"] == 50 - MAX_BURST
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def test_peer_flaps_aggregate_into_one_event(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        recorder = EventRecorder(client_config=h.source._client_config, gateway=GW, source=h.source)
        runner = asyncio.create_task(recorder.run())
        try:
            for state in (PeerState.ESTABLISHED, PeerState.DOWN, PeerState.ESTABLISHED):
                recorder.peer_changed(PeerStatus(peer=PEER, state=state, last_error="hold timer expired"))
                await eventually(lambda: not recorder._pending, what="the queue to drain")
            events = {e["reason"]: e for e in h.api.list("events", "default")}
            assert set(events) == {"PeerUp", "PeerDown"}
            assert events["PeerUp"]["count"] == 2
            assert events["PeerDown"]["message"] == f"BGP session with {PEER} is down: hold timer expired"
            assert recorder.stats["patched"] == 1
            assert h.api.count("patch", "events") == 1
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def test_event_failures_are_counted_not_raised(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        recorder = EventRecorder(client_config=h.source._client_config, gateway=GW, source=h.source)
        runner = asyncio.create_task(recorder.run())
        try:
            await h.api.go_down()
            recorder.withdrawn(["iptables-eip/eip-a"])
            await eventually(lambda: recorder.stats["failed"] == 1, what="the failure to be counted")
            assert not runner.done()
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
