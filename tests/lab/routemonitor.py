"""``ip -ts monitor route`` in a lab namespace, read by a thread: every route added or deleted,
with the kernel's timestamp, so a test can prove a route never flapped or time its arrival."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import re
import subprocess
import threading
import time
from dataclasses import dataclass

from tests.lab.netns import LabError, Netns

F_SETPIPE_SZ = 1031

_MONITOR_RE = re.compile(r"^\[(?P<ts>[^\]]+)\]\s+(?P<deleted>Deleted\s+)?(?P<rest>.*)$")
_PROBE = "192.0.2.254/32"  # TEST-NET-1 blackhole: proves the monitor is subscribed


@dataclass(frozen=True)
class RouteEvent:
    at: float  # wall clock (time.time) when ``ip monitor`` read the netlink message
    added: bool
    prefix: str  # host routes with their length: 203.0.113.10/32
    via: str | None
    line: str


def _parse(line: str) -> RouteEvent | None:
    m = _MONITOR_RE.match(line.strip())
    if m is None:
        return None
    words = m["rest"].split()
    if not words:
        return None
    if words[0] in ("blackhole", "unreachable", "prohibit", "local", "broadcast", "multicast", "unicast"):
        words = words[1:] or [""]
    dst = words[0]
    if not dst or dst == "default":
        return None
    if "/" not in dst:
        dst = f"{dst}/{128 if ':' in dst else 32}"
    via = words[words.index("via") + 1] if "via" in words[:-1] else None
    at = datetime.datetime.strptime(m["ts"], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
    return RouteEvent(at=at, added=not m["deleted"], prefix=dst, via=via, line=line.rstrip())


class RouteMonitor:
    """``ip -ts -n <ns> monitor route``, read by a thread; every add/delete with its timestamp."""

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self.events: list[RouteEvent] = []
        #: True once netlink dropped notifications (ENOBUFS): the record has gaps.
        self.overflow = False
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> RouteMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, timeout: float = 10.0) -> RouteMonitor:
        self._proc = subprocess.Popen(
            ["ip", "-ts", "-n", self.ns.name, "monitor", "route"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.ns.lab.track(self._proc)
        assert self._proc.stdout is not None
        with contextlib.suppress(OSError):  # room for bursts while the reader thread is busy
            fcntl.fcntl(self._proc.stdout.fileno(), F_SETPIPE_SZ, 1 << 20)
        self._reader = threading.Thread(target=self._read, name=f"route-monitor-{self.ns.short}", daemon=True)
        self._reader.start()
        # Subscribed only once a change made now is seen: probe with a route no traffic uses.
        deadline = time.monotonic() + timeout
        while True:
            self.ns.ip("route", "replace", "blackhole", _PROBE)
            self.ns.ip("route", "del", "blackhole", _PROBE, check=False)
            try:
                self.wait(_PROBE, added=False, timeout=0.5)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise LabError(f"ip monitor route in {self.ns.short} reports nothing") from None
        return self

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            if b"No buffer space" in raw:
                self.overflow = True
                continue
            event = _parse(raw.decode(errors="replace"))
            if event is None:
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def stop(self) -> None:
        if self._proc is not None:
            self.ns.lab.stop_process(self._proc, grace=1.0)
            self._proc = None
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None

    def mark(self) -> int:
        """A position in :attr:`events`: pass it as ``since`` to look only at what comes after."""
        with self._cond:
            return len(self.events)

    def find(self, prefix: str, *, added: bool = True, since: int = 0) -> RouteEvent | None:
        with self._cond:
            for event in self.events[since:]:
                if event.prefix == prefix and event.added == added:
                    return event
        return None

    def wait(self, prefix: str, *, added: bool = True, since: int = 0, timeout: float = 30.0) -> RouteEvent:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if event.prefix == prefix and event.added == added:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    what = "added" if added else "deleted"
                    raise TimeoutError(f"timed out after {timeout}s waiting for {prefix} {what}")
                self._cond.wait(left)

    def wait_count(self, prefixes: set[str], *, since: int = 0, timeout: float = 60.0) -> float:
        """Wait until every prefix of ``prefixes`` was added; returns the time of the last one."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        last = 0.0
        index = since
        with self._cond:
            while True:
                for event in self.events[index:]:
                    if event.added and event.prefix in prefixes and event.prefix not in seen:
                        seen.add(event.prefix)
                        last = max(last, event.at)
                index = len(self.events)
                if len(seen) == len(prefixes):
                    return last
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(seen)} of {len(prefixes)} routes added after {timeout}s")
                self._cond.wait(min(left, 1.0))

    def changes(self, prefix: str, *, since: int = 0) -> list[RouteEvent]:
        with self._cond:
            return [e for e in self.events[since:] if e.prefix == prefix]
