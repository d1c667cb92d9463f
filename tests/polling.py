"""Waiting in async tests: poll a condition until it holds, and fail only after a generous deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")

DEADLINE = 30.0


async def eventually(
    check: Callable[[], T | Literal[False] | None],
    *,
    timeout: float = DEADLINE,
    interval: float = 0.01,
    what: str = "condition",
) -> T:
    """Poll ``check()`` every ``interval`` seconds until it returns a truthy value, and return that value.

    ``None`` and ``False`` mean "not yet". Fails the test with an :class:`AssertionError` naming ``what``
    after ``timeout`` seconds; exceptions of ``check`` propagate.
    """
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
