"""A plan as ExaBGP commands, sent in acknowledged batches with a window of commands in flight.

Throughput: ExaBGP's reactor runs at most 50 queued steps (about one per prefix) per loop
iteration and sleeps between iterations unless an API line arrived. :func:`apply_plan` therefore
cuts announcements into commands of ``batch_size`` (< 50) prefixes and keeps ``window`` of them
in flight: each iteration finishes a command, we answer with the next one, and ExaBGP never
sleeps while work remains, while its idle tick can stay slow.

A command ExaBGP answers with ``error`` is retried prefix by prefix, so that one bad prefix does
not block the others; what still fails, or cannot be rendered, is reported as rejected. A lost
connection interrupts the plan: what was acknowledged so far is reported as applied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from bgp_speaker.adapters.exabgp import client
from bgp_speaker.core import exabgp_codec as codec
from bgp_speaker.core import plan as planning
from bgp_speaker.core.model import PeerId, Plan, Step, Withdraw
from bgp_speaker.ports import ApplyResult

logger = logging.getLogger(__name__)

#: One command: the step it carries (one family, at most batch_size prefixes) and its line.
Unit = tuple[Step, str]


def command_units(
    steps: Sequence[Step],
    *,
    peer_as: Mapping[PeerId, int],
    local_as: int | None,
    batch_size: int,
    rejected: list[tuple[Step, str]],
) -> list[Unit]:
    """The commands of ``steps``; steps that cannot be sent are appended to ``rejected``.
    ``local_as`` may be None only while no peer is configured."""
    units: list[Unit] = []
    for step in steps:
        step_peer_as = peer_as.get(step.peer)
        if step_peer_as is None:
            rejected.append((step, f"{step.peer} is not a configured neighbor"))
            continue
        for group in codec.by_family(step.prefixes):
            part: Step = replace(step, prefixes=group)
            for chunk in planning.split(part, size=batch_size):
                assert local_as is not None
                try:
                    lines = codec.render_step(chunk, local_as=local_as, peer_as=step_peer_as)
                except ValueError as exc:
                    rejected.append((chunk, str(exc)))
                    logger.warning("step refused", extra={"peer": str(step.peer), "reason": str(exc)})
                    continue
                units.extend((chunk, line) for line in lines)
    return units


async def apply_plan(
    plan: Plan,
    *,
    channel: client.ApiChannel,
    peer_as: Mapping[PeerId, int],
    local_as: int | None,
    batch_size: int,
    window: int,
) -> ApplyResult:
    """Send ``plan`` over ``channel`` and report what ExaBGP acknowledged."""
    applied: list[Step] = []
    rejected: list[tuple[Step, str]] = []

    def units(steps: Sequence[Step]) -> list[Unit]:
        return command_units(
            steps, peer_as=peer_as, local_as=local_as, batch_size=batch_size, rejected=rejected
        )

    failed: list[Step] = []
    result = await _send(channel, units(plan.steps), applied, failed, window=window)
    if not result.interrupted:
        for step in failed:  # isolate: one bad prefix must not block the others
            if len(step.prefixes) == 1:
                rejected.append((step, "ExaBGP answered error"))
                continue
            singles = [replace(step, prefixes=(prefix,)) for prefix in step.prefixes]
            retry_failed: list[Step] = []
            result = await _send(channel, units(singles), applied, retry_failed, window=window)
            rejected.extend((single, "ExaBGP answered error") for single in retry_failed)
            if result.interrupted:
                break
    for step, reason in rejected:
        logger.warning(
            "step rejected",
            extra={
                "peer": str(step.peer),
                "prefix": str(step.prefixes[0]),
                "reason": reason,
                "op": "withdraw" if isinstance(step, Withdraw) else "announce",
            },
        )
    return ApplyResult(applied=tuple(applied), rejected=tuple(rejected), interrupted=result.interrupted)


async def _send(
    channel: client.ApiChannel,
    units: Sequence[Unit],
    applied: list[Step],
    failed: list[Step],
    *,
    window: int,
) -> client.BatchResult:
    if not units:
        return client.BatchResult(acks=(), interrupted=False)
    if not channel.connected:
        return client.BatchResult(acks=(), interrupted=True)
    result = await channel.send_many([line for _, line in units], window=window)
    for (step, _), ok in zip(units, result.acks, strict=False):
        (applied if ok else failed).append(step)
    return result
