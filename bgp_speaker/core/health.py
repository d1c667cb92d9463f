"""Liveness and readiness verdicts, and the classification of refusal reasons.

Pure functions of flags and timestamps; the caller passes ``now`` so that every verdict
can be computed again, in a test, from the same inputs. Only differences of timestamps
are used: any clock works (``time.monotonic()`` suits heartbeats) as long as ``now`` and
the timestamps passed with it come from the same one.

The split follows what a Kubernetes probe does with the answer:

- *liveness* failing restarts the container, so it only fails when restarting would
  help: the reconcile loop stopped beating, or ExaBGP is gone and does not come back.
  A BGP peer being down is never a liveness failure: restarting us does not bring a
  core router back, and would drop the sessions that are still up.
- *readiness* failing takes the pod out of service endpoints and out of a rollout's
  progress: it says "this gateway does not announce anything useful yet". A source
  that went stale (API outage) only adds a note, since we keep announcing the last
  good set, which is the right thing to do while the API is away.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one probe. ``reasons`` explain a failure; ``notes`` are informative
    (something is degraded but does not change the answer)."""

    ok: bool
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _seconds(value: float) -> str:
    return f"{value:.1f}s"


def liveness(
    *,
    now: float,
    loop_heartbeat: float | None,
    exabgp_running: bool,
    exabgp_restarting_since: float | None,
    max_heartbeat_age: float,
    max_restart_seconds: float,
) -> Verdict:
    """Is the process worth keeping?

    ``loop_heartbeat`` is the wall-clock time of the reconcile loop's last turn (``None``
    before the first one: the caller should seed it with its start time). The loop must
    beat even when it has nothing to do, e.g. on each periodic wake-up.

    ``exabgp_restarting_since`` is when the current restart attempt series began, or
    ``None`` when no restart is under way.
    """
    reasons: list[str] = []
    notes: list[str] = []
    if loop_heartbeat is None:
        reasons.append("the reconcile loop has not reported a heartbeat yet")
    else:
        age = now - loop_heartbeat
        if age > max_heartbeat_age:
            reasons.append(
                f"the reconcile loop last beat {_seconds(age)} ago (more than {_seconds(max_heartbeat_age)})"
            )
    if not exabgp_running:
        if exabgp_restarting_since is None:
            reasons.append("ExaBGP is not running and no restart is under way")
        else:
            restarting = max(0.0, now - exabgp_restarting_since)
            if restarting > max_restart_seconds:
                reasons.append(
                    f"ExaBGP has been restarting for {_seconds(restarting)} "
                    f"(more than {_seconds(max_restart_seconds)})"
                )
            else:
                notes.append(f"ExaBGP restarting for {_seconds(restarting)}")
    return Verdict(ok=not reasons, reasons=tuple(reasons), notes=tuple(notes))


def required_sessions(*, min_established: int, configured_peers: int) -> int:
    """How many established sessions readiness needs: the minimum, capped at the peer count."""
    return max(0, min(min_established, configured_peers))


def readiness(
    *,
    first_sync_done: bool,
    established_peers: int,
    configured_peers: int,
    min_established: int,
    source_synced: bool,
    source_stale_seconds: float | None,
    source_stale_after: float = 60.0,
    source_error: str | None = None,
    next_hops_stale: bool = False,
) -> Verdict:
    """Does this gateway announce what it should?

    Ready once the first full sync (source loaded, ExaBGP told, its answer recorded) is
    done and ``min(min_established, configured_peers)`` sessions are established. A source
    that lost sync after that, or is older than ``source_stale_after`` seconds, or reports
    an error, adds a note only; so do stale next hops and peers that are down while the
    minimum is still met.
    """
    reasons: list[str] = []
    notes: list[str] = []
    if not first_sync_done:
        reasons.append("the first full sync is not done yet")
    required = required_sessions(min_established=min_established, configured_peers=configured_peers)
    if established_peers < required:
        reasons.append(
            f"{established_peers} of {configured_peers} BGP sessions established, {required} required"
        )
    elif established_peers < configured_peers:
        notes.append(f"{established_peers} of {configured_peers} BGP sessions established")
    if first_sync_done:
        if not source_synced:
            notes.append("the source is not in sync; the last good set is still announced")
        elif source_stale_seconds is not None and source_stale_seconds > source_stale_after:
            notes.append(
                f"the source is stale for {_seconds(source_stale_seconds)}; "
                "the last good set is still announced"
            )
    if source_error:
        notes.append(f"source error: {source_error}")
    if next_hops_stale:
        notes.append("the next hops are stale (interconnect interface state unknown)")
    return Verdict(ok=not reasons, reasons=tuple(reasons), notes=tuple(notes))


class RefusalKind(enum.StrEnum):
    """A short, bounded label for a refusal reason (metric label values must not be free text)."""

    OUTSIDE_POOLS = "outside_pools"
    NO_NEXT_HOP = "no_next_hop"
    PREFIX_CAP = "prefix_cap"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    OTHER = "other"


# First match wins; matched against the lower-cased reason text.
_KIND_MARKERS: tuple[tuple[RefusalKind, tuple[str, ...]], ...] = (
    (RefusalKind.OUTSIDE_POOLS, ("outside the allowed pool", "not in any pool", "outside pool")),
    (RefusalKind.NO_NEXT_HOP, ("next hop", "next-hop", "nexthop")),
    (RefusalKind.PREFIX_CAP, ("prefix cap", "max_prefixes", "max-prefixes", "maximum prefixes")),
    (RefusalKind.DUPLICATE, ("duplicate",)),
    (
        RefusalKind.INVALID,
        ("invalid", "malformed", "not a valid", "does not appear to be", "unparsable", "not an ip"),
    ),
)


def refusal_kind(reason: str) -> RefusalKind:
    """Classify a refusal's human-readable reason into a :class:`RefusalKind`."""
    text = reason.lower()
    for kind, markers in _KIND_MARKERS:
        if any(marker in text for marker in markers):
            return kind
    return RefusalKind.OTHER
