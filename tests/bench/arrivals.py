"""Route arrivals at the core: when each EIP's route entered (or left) the core's kernel table.

Route arrivals are timestamped by streaming ``ip -n <core> -4 monitor route`` into a reader thread, so
nothing polls the kernel table while a measurement runs. If netlink drops notifications (ENOBUFS under
a large burst), the count falls back to ``ip route show`` and the result says so.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.lab.netns import Netns


@dataclass
class RouteMonitor:
    """``ip -4 monitor route`` in ``ns``, streamed: prefix -> monotonic time of its latest change.

    Only routes with ``proto`` ``proto`` are counted. ``present`` is the set the monitor believes is
    installed; ``arrived``/``removed`` map a host address to when it was last added/deleted.
    """

    ns: Netns
    proto: str = "bird"
    present: set[str] = field(default_factory=set)
    arrived: dict[str, float] = field(default_factory=dict)
    removed: dict[str, float] = field(default_factory=dict)
    overflow: bool = False
    _proc: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self, *, initial: Iterable[str] = ()) -> RouteMonitor:
        self.present = set(initial)
        self._proc = subprocess.Popen(
            ["ip", "-n", self.ns.name, "-4", "monitor", "route"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            bufsize=1 << 20,
        )
        self._thread = threading.Thread(target=self._read, name="route-monitor", daemon=True)
        self._thread.start()
        time.sleep(0.2)  # the netlink subscription is in place once ip has started
        return self

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        needle = f" proto {self.proto} ".encode()
        for raw in self._proc.stdout:
            now = time.monotonic()
            if b"No buffer space" in raw or b"ENOBUFS" in raw:
                self.overflow = True
                continue
            if needle not in raw:
                continue
            deleted = raw.startswith(b"Deleted ")
            words = raw.split()
            dst = (words[1] if deleted else words[0]).decode()
            dst = dst.removesuffix("/32")
            with self._cond:
                if deleted:
                    self.present.discard(dst)
                    self.removed[dst] = now
                else:
                    self.present.add(dst)
                    self.arrived[dst] = now
                self._cond.notify_all()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=3)
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None

    def __enter__(self) -> RouteMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self) -> int:
        with self._cond:
            return len(self.present)

    def wait_arrival(self, address: str, *, since: float, timeout: float) -> float | None:
        """Monotonic time ``address`` was added at or after ``since``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                at = self.arrived.get(address)
                if at is not None and at >= since:
                    return at
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def resync(self) -> bool:
        """Replace ``present`` with the kernel table (after lost notifications); True if it differed."""
        table = kernel_set(self.ns, proto=self.proto)
        with self._cond:
            differed = table != self.present
            self.present = table
            self.overflow = self.overflow or differed
            self._cond.notify_all()
        return differed

    def wait_count(self, predicate: str, target: int, *, timeout: float, stall: float = 0.0) -> bool:
        """Wait until the count is >= target (``predicate="ge"``) or <= target (``"le"``).

        With ``stall`` > 0, give up early once the count has not moved for that long. True when reached.
        After 3 s without movement the set is checked against the kernel table once (netlink may have
        dropped notifications under a burst; then ``overflow`` is set and times are approximate).
        """
        deadline = time.monotonic() + timeout
        last, moved_at, checked = -1, time.monotonic(), False
        while True:
            with self._cond:
                n = len(self.present)
                if (n >= target) if predicate == "ge" else (n <= target):
                    return True
                now = time.monotonic()
                if n != last:
                    last, moved_at, checked = n, now, False
                if now >= deadline or (stall > 0 and now - moved_at >= stall):
                    return False
                if checked or now - moved_at < 3.0:
                    self._cond.wait(min(0.2, deadline - now))
                    continue
            checked = True
            self.resync()

    def last_change(self, addresses: Iterable[str], *, removed: bool = False) -> float | None:
        book = self.removed if removed else self.arrived
        with self._cond:
            times = [book.get(a) for a in addresses]
        if any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)


def kernel_count(ns: Netns, *, proto: str = "bird") -> int:
    """Routes of ``proto`` in the main IPv4 table (one ``ip route show``; fine outside a measurement)."""
    out = ns.ip("-4", "route", "show", "proto", proto).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def kernel_set(ns: Netns, *, proto: str = "bird") -> set[str]:
    out = ns.ip("-4", "route", "show", "proto", proto).stdout
    return {line.split()[0].removesuffix("/32") for line in out.splitlines() if line.strip()}
