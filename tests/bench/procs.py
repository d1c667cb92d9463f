"""Process accounting from /proc: CPU time and memory of a process tree, by role.

A role names what a process is (speaker, relay, exabgp, gobgpd, bird, or its executable), so a
measurement can say which part of the tree used what. Nothing here asserts.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


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
