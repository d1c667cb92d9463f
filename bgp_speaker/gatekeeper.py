"""Glue between the data-plane watcher and the reconciler's gate hook.

The pure :func:`bgp_speaker.core.gating.gate` needs its previous state and someone to wake
the reconciler when a hold-down ends; this small stateful object provides both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bgp_speaker.adapters.dataplane import DataplaneWatcher
from bgp_speaker.aiokit import Trigger
from bgp_speaker.core import gating
from bgp_speaker.core.model import Candidate, Refusal

#: Wake a little after a hold-down deadline so the pass sees it expired.
DEADLINE_SLACK = 0.05


class DataplaneGate:
    def __init__(
        self,
        *,
        watcher: DataplaneWatcher,
        mode: gating.Mode,
        hold_down: float,
        trigger: Trigger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.watcher = watcher
        self.mode = mode
        self.hold_down = hold_down
        self._trigger = trigger
        self._clock = clock
        self._state: gating.GatingState | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.last: gating.GatingResult | None = None

    def __call__(
        self, candidates: tuple[Candidate, ...]
    ) -> tuple[tuple[Candidate, ...], tuple[Refusal, ...]]:
        snapshot = self.watcher.snapshot()
        now = self._clock()
        result = gating.gate(
            candidates,
            view=snapshot.view if snapshot.capable else None,
            mode=self.mode,
            hold_down=self.hold_down,
            now=now,
            previous=self._state,
        )
        self._state = result.state
        self.last = result
        self._schedule(result.next_deadline, now=now)
        return result.kept, result.refusals

    def _schedule(self, deadline: float | None, *, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(
            max(0.0, deadline - now) + DEADLINE_SLACK, self._trigger.pull, "hold-down"
        )

    def status(self) -> dict[str, Any]:
        snapshot = self.watcher.snapshot()
        result = self.last
        return {
            **snapshot.as_dict(),
            "mode": self.mode,
            "gating_active": result.active if result is not None else False,
            "observations": [o.as_dict() for o in result.observations] if result is not None else [],
        }
