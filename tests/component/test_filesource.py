"""The file source against a real directory and real inotify events (no root needed)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from ipaddress import ip_address
from pathlib import Path

import pytest

from bgp_speaker.adapters.filesource import FileSource
from bgp_speaker.aiokit import Trigger
from bgp_speaker.core.model import AttributeOverrides
from bgp_speaker.ports import SourceSnapshot
from tests.polling import eventually

DEADLINE = 10.0

Start = Callable[[FileSource], Awaitable[Trigger]]


async def pulled(trigger: Trigger) -> set[str]:
    reasons = await trigger.wait(DEADLINE)
    assert reasons != {"timer"}, "the trigger was not pulled"
    return reasons


def addresses(snapshot: SourceSnapshot) -> list[str]:
    return [str(c.address) for c in snapshot.candidates]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    tasks: list[asyncio.Task[None]] = []

    async def starter(source: FileSource) -> Trigger:
        trigger = Trigger()
        tasks.append(asyncio.create_task(source.run(trigger=trigger)))
        await eventually(lambda: source.snapshot().details["watching"] is True, what="watch started")
        return trigger

    yield starter
    for task in tasks:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_valid_file_yields_candidates_with_overrides(tmp_path: Path, start: Start) -> None:
    path = tmp_path / "eips.yaml"
    path.write_text(
        "eips:\n"
        "  - ip: 203.0.113.10\n"
        "  - ip: 2001:db8::10\n"
        '    communities: ["65000:10"]\n'
        '    large_communities: ["65000:1:2"]\n'
        "    med: 10\n"
        "    local_preference: 200\n"
        "    as_path_prepend: 2\n"
    )
    source = FileSource(path)
    assert source.snapshot().synced is False
    trigger = await start(source)
    assert await pulled(trigger) == {"file"}

    snap = source.snapshot()
    assert snap.synced
    assert snap.error is None
    assert snap.refusals == ()
    assert snap.fresh_at is not None
    first, second = snap.candidates
    assert first.address == ip_address("203.0.113.10")
    assert first.origin == "file:eips.yaml[0]"
    assert first.overrides == AttributeOverrides()
    assert second.address == ip_address("2001:db8::10")
    assert second.origin == "file:eips.yaml[1]"
    assert second.overrides == AttributeOverrides(
        communities=("65000:10",),
        large_communities=("65000:1:2",),
        med=10,
        local_preference=200,
        as_path_prepend=2,
    )


async def test_change_pulls_trigger_and_same_content_does_not(tmp_path: Path, start: Start) -> None:
    path = tmp_path / "eips.yaml"
    path.write_text("eips: [{ip: 203.0.113.10}]\n")
    source = FileSource(path)
    trigger = await start(source)
    await pulled(trigger)

    path.write_text("eips: [{ip: 203.0.113.10}, {ip: 203.0.113.11}]\n")
    await pulled(trigger)
    assert addresses(source.snapshot()) == ["203.0.113.10", "203.0.113.11"]

    # Same meaning, different text: read, but nothing to reconcile.
    pulls, reads = trigger.pulls, source.snapshot().details["reads"]
    path.write_text("# a comment\neips:\n  - ip: 203.0.113.10\n  - {ip: 203.0.113.11}\n")
    await eventually(lambda: source.snapshot().details["reads"] != reads, what="re-read after the write")
    assert trigger.pulls == pulls
    assert not trigger.pending


async def test_atomic_rename_is_seen(tmp_path: Path, start: Start) -> None:
    path = tmp_path / "eips.yaml"
    write_atomically(path, "eips: [{ip: 203.0.113.10}]\n")
    source = FileSource(path)
    trigger = await start(source)
    await pulled(trigger)

    write_atomically(path, "eips: [{ip: 203.0.113.20}]\n")
    await pulled(trigger)
    assert addresses(source.snapshot()) == ["203.0.113.20"]


async def test_configmap_symlink_swap_is_seen(tmp_path: Path, start: Start) -> None:
    """The layout and update sequence of a Kubernetes ConfigMap volume."""

    def publish(version: str, text: str) -> None:
        target = tmp_path / f"..{version}"
        target.mkdir()
        (target / "eips.yaml").write_text(text)
        tmp_link = tmp_path / "..data_tmp"
        tmp_link.symlink_to(target.name)
        os.replace(tmp_link, tmp_path / "..data")

    publish("2024_01_01", "eips: [{ip: 203.0.113.10}]\n")
    path = tmp_path / "eips.yaml"
    path.symlink_to("..data/eips.yaml")
    source = FileSource(path)
    trigger = await start(source)
    await pulled(trigger)
    assert addresses(source.snapshot()) == ["203.0.113.10"]

    publish("2024_01_02", "eips: [{ip: 203.0.113.30}]\n")
    await pulled(trigger)
    assert addresses(source.snapshot()) == ["203.0.113.30"]


async def test_delete_then_recreate(tmp_path: Path, start: Start) -> None:
    path = tmp_path / "eips.yaml"
    path.write_text("eips: [{ip: 203.0.113.10}]\n")
    source = FileSource(path)
    trigger = await start(source)
    await pulled(trigger)

    path.unlink()
    await eventually(lambda: source.snapshot().error is not None, what="error after delete")
    snap = source.snapshot()
    assert snap.synced
    assert addresses(snap) == ["203.0.113.10"]
    assert str(path) in (snap.error or "")

    path.write_text("eips: [{ip: 203.0.113.40}]\n")
    await pulled(trigger)
    snap = source.snapshot()
    assert snap.error is None
    assert addresses(snap) == ["203.0.113.40"]


async def test_malformed_entries_are_refused_one_by_one(tmp_path: Path, start: Start) -> None:
    path = tmp_path / "eips.yaml"
    path.write_text(
        "eips:\n"
        "  - ip: 203.0.113.10\n"
        "  - ip: 203.0.113.300\n"
        "  - ip: 203.0.113.12\n"
        '    communities: ["65000:70000"]\n'
        "  - ip: 203.0.113.13\n"
        '    med: "ten"\n'
        "  - ip: 203.0.113.14\n"
        "    colour: blue\n"
        "  - ip: 203.0.113.15\n"
        "    communities: [65000:10]\n"
        "  - 203.0.113.16\n"
        "  - ip: 203.0.113.17\n"
    )
    source = FileSource(path)
    trigger = await start(source)
    await pulled(trigger)

    snap = source.snapshot()
    assert snap.error is None
    assert addresses(snap) == ["203.0.113.10", "203.0.113.17"]
    assert [c.origin for c in snap.candidates] == ["file:eips.yaml[0]", "file:eips.yaml[7]"]
    refused = {r.origin: r for r in snap.refusals}
    assert sorted(refused) == [f"file:eips.yaml[{i}]" for i in range(1, 7)]
    checks = {
        1: ("ip", "203.0.113.300"),
        2: ("communities[0]", "65000:70000"),
        3: ("med", "ten"),
        4: ("colour", "unknown key"),
        5: ("communities[0]", "quote"),
        6: ("entry", "203.0.113.16"),
    }
    for index, (field, value) in checks.items():
        reason = refused[f"file:eips.yaml[{index}]"].reason
        assert reason.startswith(f"{field}:"), reason
        assert value in reason, reason
    assert refused["file:eips.yaml[1]"].address == "203.0.113.300"


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ("eips: [{ip: 203.0.113.10}\n", "not valid YAML"),
        ("- ip: 203.0.113.10\n", "top level must be a mapping"),
        ("eip: []\n", "'eip'"),
        ("eips: 203.0.113.10\n", "eips: must be a list"),
        ("", "top level must be a mapping"),
        ('{"eips": [}', "not valid JSON"),
    ],
)
async def test_broken_file_keeps_last_good_until_fixed(
    tmp_path: Path, start: Start, broken: str, expected: str
) -> None:
    path = tmp_path / "eips.yaml"
    path.write_text("eips: [{ip: 203.0.113.10}]\n")
    source = FileSource(path)
    trigger = await start(source)
    await pulled(trigger)
    pulls = trigger.pulls

    path.write_text(broken)
    await eventually(lambda: source.snapshot().error is not None, what="error reported")
    snap = source.snapshot()
    assert snap.synced
    assert addresses(snap) == ["203.0.113.10"]
    error = snap.error or ""
    assert str(path) in error
    assert expected in error, error
    assert snap.fresh_at is not None
    assert snap.fresh_at == snap.details["loaded_at"]
    assert trigger.pulls == pulls

    path.write_text("eips: [{ip: 203.0.113.10}, {ip: 203.0.113.11}]\n")
    await pulled(trigger)
    snap = source.snapshot()
    assert snap.error is None
    assert addresses(snap) == ["203.0.113.10", "203.0.113.11"]


async def test_json_file(tmp_path: Path, start: Start) -> None:
    path = tmp_path / "eips.json"
    path.write_text(
        '{"eips": [{"ip": "203.0.113.10", "communities": ["65000:10"], "med": 5},\n'
        '          {"ip": "2001:db8::10", "bogus": true}]}\n'
    )
    source = FileSource(path)
    trigger = await start(source)
    await pulled(trigger)
    snap = source.snapshot()
    assert addresses(snap) == ["203.0.113.10"]
    assert snap.candidates[0].overrides == AttributeOverrides(communities=("65000:10",), med=5)
    (refusal,) = snap.refusals
    assert refusal.origin == "file:eips.json[1]"
    assert refusal.reason.startswith("bogus: unknown key")


async def test_missing_file_then_created(tmp_path: Path, start: Start) -> None:
    path = tmp_path / "eips.yaml"
    source = FileSource(path)
    trigger = await start(source)
    snap = source.snapshot()
    assert snap.synced is False
    assert snap.error is not None
    assert str(path) in snap.error
    assert "cannot read" in snap.error
    assert not trigger.pending

    write_atomically(path, "eips: []\n")
    await pulled(trigger)
    snap = source.snapshot()
    assert snap.synced
    assert snap.error is None
    assert snap.candidates == ()


async def test_missing_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    source = FileSource(tmp_path / "absent" / "eips.yaml")
    task = asyncio.create_task(source.run(trigger=Trigger()))
    try:
        await eventually(lambda: source.snapshot().error is not None, what="error reported")
        snap = source.snapshot()
        assert snap.synced is False
        assert "cannot watch" in (snap.error or "")
        assert not task.done()
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def test_latency_from_write_to_trigger(tmp_path: Path, start: Start) -> None:
    """Measures; does not judge. Run with ``-s`` to see the numbers."""
    path = tmp_path / "eips.yaml"
    path.write_text("eips: []\n")
    source = FileSource(path)
    trigger = await start(source)
    await pulled(trigger)

    samples: list[float] = []
    for i in range(200):
        text = f"eips: [{{ip: 203.0.113.{i % 250}}}, {{ip: 2001:db8::{i + 1:x}}}]\n"
        began = time.perf_counter()
        if i % 2:
            write_atomically(path, text)
        else:
            path.write_text(text)
        await pulled(trigger)
        samples.append(time.perf_counter() - began)
        assert addresses(source.snapshot())[1] == f"2001:db8::{i + 1:x}"

    cuts = statistics.quantiles(samples, n=100)
    print(
        f"\nfile source: write -> trigger over {len(samples)} changes: "
        f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms, max {max(samples) * 1000:.2f} ms"
    )
