"""Small asyncio building blocks: a coalescing trigger, back-off, guarded tasks."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class Trigger:
    """A one-slot, level-triggered wake-up: any number of pulls collapse into one wake.

    Sources call :meth:`pull` on every event; the reconciler awaits :meth:`wait`, which
    returns once at least one pull happened since the previous wait, then lingers for
    ``coalesce`` seconds so that a burst of events becomes a single pass.
    """

    def __init__(self, *, coalesce: float = 0.0) -> None:
        self._event = asyncio.Event()
        self._coalesce = coalesce
        self.pulls = 0
        self.reasons: set[str] = set()
        self._first_pull: float | None = None
        #: Monotonic time of the first pull behind the last wake-up (None after a timeout).
        self.first_pull_at: float | None = None

    def pull(self, reason: str = "") -> None:
        self.pulls += 1
        if reason:
            self.reasons.add(reason)
        if self._first_pull is None:
            self._first_pull = time.monotonic()
        self._event.set()

    @property
    def pending(self) -> bool:
        return self._event.is_set()

    async def wait(self, max_wait: float | None = None) -> set[str]:
        """Wait for a pull (or ``max_wait`` seconds); return and reset the reasons seen."""
        try:
            await asyncio.wait_for(self._event.wait(), max_wait)
        except TimeoutError:
            self.first_pull_at = None
            return {"timer"}
        if self._coalesce > 0:
            await asyncio.sleep(self._coalesce)
        self._event.clear()
        self.first_pull_at, self._first_pull = self._first_pull, None
        reasons, self.reasons = self.reasons, set()
        return reasons


class Backoff:
    """Jittered exponential back-off: 0.5, 1, 2, ... capped, reset on success."""

    def __init__(self, *, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * (self.factor**self.attempt))
        self.attempt += 1
        return base * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempt = 0


def guarded(coro: Coroutine[Any, Any, None], *, name: str) -> Coroutine[Any, Any, None]:
    """Wrap a root task so that its exit (normal or not) is logged with its name."""

    async def runner() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            logger.debug("task cancelled", extra={"task": name})
            raise
        except Exception:
            logger.exception("task failed", extra={"task": name})
            raise
        else:
            logger.info("task exited", extra={"task": name})

    return runner()
