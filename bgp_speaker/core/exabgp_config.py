"""Render the ExaBGP 5.0.15 configuration file (pure).

The shape follows the ExaBGP notes' recommendation: every boolean written explicitly (a bare
``passive;`` means true but a bare ``adj-rib-out;`` means false), the ``family`` block always
written (without it ExaBGP offers every family it knows), route-refresh on, graceful restart
off, no static routes (everything is announced over the API), and one ``process`` block that
runs our relay with the JSON encoder.

``render(config, redact_secrets=True)`` is what may be shown in logs or status; the file given
to ExaBGP is rendered with ``redact_secrets=False``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bgp_speaker.core.model import Family, IPAddress

#: Name of the ``process`` block (the relay) and of the ``api`` block that uses it.
PROCESS_NAME = "bgpspeaker"
REDACTED = "REDACTED"
MD5_MAX_LENGTH = 80

# Words of a ``run`` line: ExaBGP splits on whitespace and ends the statement at ``;``.
_RUN_WORD = re.compile(r"^[A-Za-z0-9_./=:@%+,-]+$")
_DESCRIPTION_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:/()@+=-]")


@dataclass(frozen=True, slots=True)
class NeighborConfig:
    address: IPAddress
    peer_as: int
    port: int = 179
    #: ``None`` lets the kernel choose (ExaBGP ``local-address auto``).
    local_address: IPAddress | None = None
    hold_time: int = 9
    md5_password: str | None = None
    outgoing_ttl: int | None = None
    incoming_ttl: int | None = None
    passive: bool = False
    families: tuple[Family, ...] = (Family.IPV4, Family.IPV6)
    description: str = ""
    #: RFC 4724 restart time to advertise; ``None`` disables graceful restart.
    graceful_restart_time: int | None = None

    def __repr__(self) -> str:  # never show the password, even in a traceback
        secret = "set" if self.md5_password else "unset"
        return f"NeighborConfig(address={self.address}, peer_as={self.peer_as}, md5_password={secret})"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    router_id: IPAddress
    local_as: int
    neighbors: tuple[NeighborConfig, ...]
    #: argv of the helper ExaBGP runs from its ``process`` block.
    relay_command: tuple[str, ...]


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _check_asn(value: int, *, what: str) -> int:
    if not 1 <= value <= 4294967295:
        raise ValueError(f"{what} must be 1-4294967295, got {value}")
    return value


def _password(value: str, *, redact: bool) -> str:
    if redact:
        return REDACTED
    if not 1 <= len(value) <= MD5_MAX_LENGTH:
        raise ValueError(f"md5 password must be 1-{MD5_MAX_LENGTH} characters")
    if not value.isascii() or not value.isprintable() or '"' in value or "'" in value:
        raise ValueError("md5 password must be printable ASCII without quote characters")
    # ExaBGP unescapes backslash sequences inside quoted strings.
    return value.replace("\\", "\\\\")


def _description(value: str) -> str:
    return _DESCRIPTION_UNSAFE.sub("_", value)[:200]


def _run_line(command: tuple[str, ...]) -> str:
    if not command:
        raise ValueError("relay command is empty")
    for word in command:
        if not _RUN_WORD.match(word):
            raise ValueError(f"relay command word {word!r} contains characters ExaBGP cannot take in `run`")
    return " ".join(command)


def _neighbor(config: SessionConfig, neighbor: NeighborConfig, *, index: int, redact: bool) -> list[str]:
    _check_asn(neighbor.peer_as, what="peer AS")
    if neighbor.hold_time != 0 and not 3 <= neighbor.hold_time <= 65535:
        raise ValueError(f"hold time must be 0 or 3-65535, got {neighbor.hold_time}")
    if not 1 <= neighbor.port <= 65535:
        raise ValueError(f"port must be 1-65535, got {neighbor.port}")
    if not neighbor.families:
        raise ValueError(f"neighbor {neighbor.address} has no address family")
    local = "auto" if neighbor.local_address is None else str(neighbor.local_address)
    lines = [
        f"neighbor {neighbor.address} {{",
        f"    router-id {config.router_id};",
        f"    local-address {local};",
        f"    local-as {config.local_as};",
        f"    peer-as {neighbor.peer_as};",
        f"    connect {neighbor.port};",
        f"    hold-time {neighbor.hold_time};",
        f"    passive {_bool(neighbor.passive)};",
    ]
    if neighbor.description:
        lines.append(f'    description "{_description(neighbor.description)}";')
    if neighbor.md5_password is not None:
        lines.append(f'    md5-password "{_password(neighbor.md5_password, redact=redact)}";')
        lines.append("    md5-base64 false;")
    for keyword, ttl in (("outgoing-ttl", neighbor.outgoing_ttl), ("incoming-ttl", neighbor.incoming_ttl)):
        if ttl is not None:
            if not 1 <= ttl <= 255:
                raise ValueError(f"{keyword} must be 1-255, got {ttl}")
            lines.append(f"    {keyword} {ttl};")
    families = " ".join(f"{family.value} unicast;" for family in sorted(set(neighbor.families)))
    lines += [
        "    group-updates true;",
        "    adj-rib-out true;",
        "    adj-rib-in false;",
        "    manual-eor false;",
        f"    family {{ {families} }}",
        "    capability { route-refresh enable; graceful-restart "
        + (str(neighbor.graceful_restart_time) if neighbor.graceful_restart_time else "disable")
        + "; }",
        # api block names are global in ExaBGP: one per neighbor.
        f"    api {PROCESS_NAME}-{index} {{",
        f"        processes [ {PROCESS_NAME} ];",
        "        neighbor-changes;",
        "        receive { parsed; notification; }",
        "    }",
        "}",
    ]
    return lines


def render(config: SessionConfig, *, redact_secrets: bool) -> str:
    """The whole ExaBGP configuration file. Raises ValueError on a value ExaBGP would misread."""
    _check_asn(config.local_as, what="local AS")
    if config.router_id.version != 4:
        raise ValueError(f"router id must be an IPv4 address, got {config.router_id}")
    if not config.neighbors:
        raise ValueError("at least one neighbor is required")
    addresses = [n.address for n in config.neighbors]
    if len(set(addresses)) != len(addresses):
        raise ValueError("a neighbor address is listed twice")
    lines = [
        "# Generated by bgp-speaker; do not edit: it is rewritten at every start.",
        f"process {PROCESS_NAME} {{",
        f"    run {_run_line(config.relay_command)};",
        "    encoder json;",
        "    respawn true;",
        "}",
    ]
    for index, neighbor in enumerate(config.neighbors, start=1):
        lines.append("")
        lines += _neighbor(config, neighbor, index=index, redact=redact_secrets)
    return "\n".join(lines) + "\n"
