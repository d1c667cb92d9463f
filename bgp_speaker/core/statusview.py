"""Plain-text view of the status document (``bgp-speaker status``).

Pure: a mapping in, a string out. The document comes from another process, possibly an
older or newer version, so every key may be missing or of an unexpected type; missing
values print as ``-`` and never raise.

Ages ("since") need a reference time: ``now`` if given, else the document's own ``now``
key, else they are printed as UTC timestamps.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

MISSING = "-"


def human_duration(seconds: float) -> str:
    """``0.2s``, ``42s``, ``3m12s``, ``2h05m``, ``3d04h``. Negative values (clock skew) are 0."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def short_duration(seconds: float) -> str:
    """A short run time: ``4.0ms`` below one second, else like :func:`human_duration`."""
    if 0 <= seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return human_duration(seconds)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; no trailing blanks."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(cells[: len(widths)])]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line([*row, *[""] * (len(headers) - len(row))]) for row in rows)]


# -- tolerant accessors ------------------------------------------------------------------


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _records(value: object) -> list[Mapping[str, Any]]:
    """The mappings in a list; anything else in it is skipped."""
    return [item for item in _list(value) if isinstance(item, Mapping)]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: object) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) if value else MISSING
    # Free text from another process: keep the table on one line per row.
    return " ".join(str(value).split())


def _flag(value: object, *, yes: str, no: str) -> str:
    if value is True:
        return yes
    if value is False:
        return no
    return f"{yes.lower()} {MISSING}"


class _Clock:
    def __init__(self, now: float | None) -> None:
        self.now = now

    def age(self, timestamp: object) -> str:
        at = _number(timestamp)
        if at is None:
            return MISSING
        if self.now is None:
            moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        return human_duration(self.now - at)

    def ago(self, timestamp: object) -> str:
        text = self.age(timestamp)
        if text == MISSING:
            return text
        return f"at {text}" if self.now is None else f"{text} ago"


# -- sections ----------------------------------------------------------------------------


def _header(status: Mapping[str, Any], clock: _Clock) -> list[str]:
    title = f"bgp-speaker {_text(status.get('version'))}"
    if status.get("gateway"):
        title += f"  gateway {_text(status.get('gateway'))}"
    lines = [title]

    source = _map(status.get("source"))
    if source:
        state = _flag(source.get("synced"), yes="synced", no="NOT SYNCED")
        parts = [f"{_text(source.get('name'))}: {state}"]
        stale = _number(source.get("stale_seconds"))
        if stale is not None:
            parts.append(f"as of {human_duration(stale)} ago")
        elif "fresh_at" in source:
            parts.append(f"fresh {clock.ago(source.get('fresh_at'))}")
        if source.get("error"):
            parts.append(f"error: {_text(source.get('error'))}")
        lines.append("source     " + ", ".join(parts))

    hops = _map(status.get("next_hops"))
    if hops:
        text = f"ipv4 {_text(hops.get('ipv4'))}  ipv6 {_text(hops.get('ipv6'))}"
        if hops.get("interface"):
            text += f"  interface {_text(hops.get('interface'))}"
        if hops.get("stale") is True:
            text += "  (STALE)"
        lines.append("next hops  " + text)

    exabgp = _map(status.get("exabgp"))
    if exabgp:
        parts = [_flag(exabgp.get("running"), yes="running", no="NOT RUNNING")]
        if exabgp.get("pid") is not None:
            parts.append(f"pid {_text(exabgp.get('pid'))}")
        if exabgp.get("restarts") is not None:
            parts.append(f"restarts {_text(exabgp.get('restarts'))}")
        if exabgp.get("api_connected") is not None:
            parts.append("api connected" if exabgp.get("api_connected") is True else "API DISCONNECTED")
        if exabgp.get("generation") is not None:
            parts.append(f"generation {_text(exabgp.get('generation'))}")
        lines.append("exabgp     " + ", ".join(parts))

    health = _map(status.get("health"))
    if health:
        live = _flag(health.get("live"), yes="live", no="NOT LIVE")
        ready = _flag(health.get("ready"), yes="ready", no="NOT READY")
        lines.append(f"health     {live}, {ready}")
        lines += [f"           reason: {_text(r)}" for r in _list(health.get("reasons"))]
        lines += [f"           note: {_text(n)}" for n in _list(health.get("notes"))]
    return lines


def _peers(status: Mapping[str, Any], clock: _Clock) -> list[str]:
    peers = _records(status.get("peers"))
    if not peers:
        return ["PEERS: none"]
    rows = [
        [
            _text(p.get("address")),
            _text(p.get("asn")),
            _text(p.get("state")),
            clock.age(p.get("since")),
            f"{_text(p.get('announced'))}/{_text(p.get('desired'))}",
            _text(p.get("flaps")),
            _text(p.get("last_error")),
        ]
        for p in peers
    ]
    headers = ["ADDRESS", "AS", "STATE", "SINCE", "ANNOUNCED/DESIRED", "FLAPS", "LAST ERROR"]
    return [f"PEERS ({len(peers)})", *table(headers, rows)]


def _routes(status: Mapping[str, Any]) -> list[str]:
    routes = _records(status.get("routes"))
    if not routes:
        return ["ROUTES: none"]
    # One column per peer: the configured ones first, then any only named by a route.
    columns: list[str] = [_text(p.get("address")) for p in _records(status.get("peers"))]
    for route in routes:
        columns += [str(peer) for peer in _map(route.get("peers")) if str(peer) not in columns]
    columns = list(dict.fromkeys(c for c in columns if c != MISSING))
    with_med = any(route.get("med") is not None for route in routes)
    headers = ["PREFIX", "NEXT HOP", "COMMUNITIES", *(["MED"] if with_med else []), *columns]
    rows = []
    for route in routes:
        communities = [*_list(route.get("communities")), *_list(route.get("large_communities"))]
        per_peer = {str(k): v for k, v in _map(route.get("peers")).items()}
        rows.append(
            [
                _text(route.get("prefix")),
                _text(route.get("next_hop")),
                _text(communities),
                *([_text(route.get("med"))] if with_med else []),
                *(_text(per_peer.get(column)) for column in columns),
            ]
        )
    return [f"ROUTES ({len(routes)})", *table(headers, rows)]


def _refused(status: Mapping[str, Any]) -> list[str]:
    refused = _records(status.get("refused"))
    if not refused:
        return ["REFUSED: none"]
    with_peer = any(r.get("peer") for r in refused)
    headers = ["ADDRESS", "ORIGIN", *(["PEER"] if with_peer else []), "REASON"]
    rows = [
        [
            _text(r.get("address")),
            _text(r.get("origin")),
            *([_text(r.get("peer"))] if with_peer else []),
            _text(r.get("reason")),
        ]
        for r in refused
    ]
    return [f"REFUSED ({len(refused)})", *table(headers, rows)]


def _last_reconcile(status: Mapping[str, Any], clock: _Clock) -> list[str]:
    last = _map(status.get("last_reconcile"))
    if not last:
        return ["last reconcile: none yet"]
    parts = [_text(last.get("result"))]
    if "at" in last:
        parts.append(clock.ago(last.get("at")))
    duration = _number(last.get("duration_seconds"))
    if duration is not None:
        parts.append(f"took {short_duration(duration)}")
    announced, withdrawn = last.get("announced"), last.get("withdrawn")
    if announced is not None or withdrawn is not None:
        parts.append(f"announced {_text(announced)}, withdrawn {_text(withdrawn)}")
    if last.get("error"):
        parts.append(f"error: {_text(last.get('error'))}")
    return ["last reconcile: " + ", ".join(parts)]


def _config(status: Mapping[str, Any]) -> list[str]:
    """The live configuration and missing capabilities, when there is something to say."""
    lines: list[str] = []
    config = _map(status.get("config"))
    if config:
        overlays = ", ".join(_text(k) for k in config.get("overlays") or []) or "none"
        state = "valid" if config.get("valid") else f"REJECTED: {_text(config.get('error'))}"
        lines.append(
            f"config: ConfigMap version {_text(config.get('version'))}, overlays {overlays}, {state}"
        )
        pending = config.get("pending_restart") or []
        if pending:
            lines.append("config: needs a restart to apply: " + ", ".join(_text(p) for p in pending))
    degraded = _map(status.get("capabilities")).get("degraded") or []
    if degraded:
        lines.append("capabilities: no NET_ADMIN; not acting: " + ", ".join(_text(d) for d in degraded))
    return lines


def render(status: Mapping[str, Any], *, now: float | None = None) -> str:
    """The whole view, sections separated by blank lines, ending with a newline."""
    status = _map(status)
    clock = _Clock(now if now is not None else _number(status.get("now")))
    sections = [
        _header(status, clock),
        _peers(status, clock),
        _routes(status),
        _refused(status),
        _last_reconcile(status, clock),
        _config(status),
    ]
    sections = [section for section in sections if section]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
