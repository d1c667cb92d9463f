"""The sections of the settings model: one strict, frozen pydantic model per concern.

Each section (peers, interconnect, announce, source, dataplane, http, shutdown, exabgp,
reconcile, logging) validates its own fields and describes every one of them;
``config/reference.md`` is generated from those descriptions. The constrained value types
(:data:`Community`, :data:`LargeCommunity`, :data:`Cidr`, :data:`Asn`) and :class:`Strict`, the
base of every section, are shared with the other models that read configuration-like input
(the EIP file). :class:`bgp_speaker.settings.root.Settings` puts the sections together.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    field_validator,
    model_validator,
)

from bgp_speaker.errors import ConfigError


def _community(value: str) -> str:
    parts = value.split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) <= 0xFFFF for p in parts):
        raise ValueError(f"standard community must be ASN:VALUE with both parts 0-65535, got {value!r}")
    return f"{int(parts[0])}:{int(parts[1])}"


def _large_community(value: str) -> str:
    parts = value.split(":")
    if len(parts) != 3 or not all(p.isdigit() and int(p) <= 0xFFFFFFFF for p in parts):
        raise ValueError(
            f"large community must be GLOBAL:LOCAL1:LOCAL2 with parts 0-4294967295, got {value!r}"
        )
    return ":".join(str(int(p)) for p in parts)


def _network(value: str) -> str:
    try:
        return str(ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"not a CIDR with host bits clear: {value!r} ({exc})") from None


Community = Annotated[str, AfterValidator(_community)]
LargeCommunity = Annotated[str, AfterValidator(_large_community)]
Cidr = Annotated[str, AfterValidator(_network)]
Asn = Annotated[int, Field(ge=1, le=4294967295)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PeerConfig(Strict):
    address: IPvAnyAddress = Field(description="Address of the core router to peer with.")
    asn: Asn = Field(description="The peer's AS number.")
    port: int = Field(179, ge=1, le=65535, description="TCP port the peer listens on.")
    hold_time: int = Field(
        9,
        description="BGP hold time in seconds (0, or 3-65535). Keepalives go every hold/3. "
        "9 s detects a dead link in about 10 s; upstream's 90 s takes a minute and a half.",
    )
    password_file: Path | None = Field(
        None,
        description="File holding the TCP-MD5 password (first line). Never given on the command line "
        "and never logged.",
    )
    multihop_ttl: int | None = Field(
        None, ge=1, le=255, description="eBGP multihop: TTL of the packets we send (ExaBGP outgoing-ttl)."
    )
    incoming_ttl: int | None = Field(
        None,
        ge=1,
        le=255,
        description="GTSM (RFC 5082): minimum TTL accepted from the peer; 255 for a directly "
        "connected peer that also runs GTSM.",
    )
    passive: bool = Field(False, description="Wait for the peer to connect instead of connecting out.")
    local_address: IPvAnyAddress | None = Field(
        None, description="Source address of the session; default: chosen by the kernel route to the peer."
    )
    families: tuple[Literal["ipv4", "ipv6"], ...] = Field(
        ("ipv4", "ipv6"), description="Address families negotiated and announced to this peer."
    )
    max_prefixes: int | None = Field(
        None, ge=0, description="Outbound prefix cap: never announce more than this to the peer."
    )
    description: str = Field("", max_length=200, description="Free text shown in status and logs.")
    graceful_restart_time: int | None = Field(
        None,
        ge=1,
        le=4095,
        description="Advertise the Graceful Restart capability (RFC 4724) with this restart time in "
        "seconds: the peer keeps our routes as stale this long when the session drops. Empty: off. "
        "It slows EIP failover, so leave it off unless riding out speaker restarts matters more.",
    )

    @field_validator("hold_time")
    @classmethod
    def _hold(cls, value: int) -> int:
        if value != 0 and not 3 <= value <= 65535:
            raise ValueError(f"hold time must be 0 or 3-65535 seconds, got {value}")
        return value

    def read_password(self) -> str | None:
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"peers[{self.address}].password_file: cannot read {self.password_file}: {exc.strerror}"
            ) from None
        password = text.splitlines()[0] if text else ""
        if not password or len(password) > 80 or '"' in password or not password.isprintable():
            raise ConfigError(
                f"peers[{self.address}].password_file: {self.password_file} must hold one printable line "
                "of 1-80 characters without double quotes"
            )
        return password


class InterconnectConfig(Strict):
    interface: str = Field("net1", min_length=1, max_length=15, description="The interconnect interface.")
    next_hop_ipv4: IPv4Address | None = Field(
        None,
        description="Explicit IPv4 next hop; default: the interface's primary IPv4 address, followed live.",
    )
    manage_routes: bool = Field(
        False,
        description="Interconnect mode: remove the on-link routes Kube-OVN's EIP masks create on the "
        "interface, keep the default route via the interconnect gateway, and stop ARP for EIPs.",
    )
    gateway_ipv4: IPv4Address | None = Field(
        None,
        description="Interconnect gateway (the core router) for the default route; default: env GATEWAY_V4.",
    )
    next_hop_ipv6: IPv6Address | None = Field(
        None,
        description="Explicit IPv6 next hop; default: the interface's first global IPv6 address. "
        "/128 routes are never sent with an IPv4 next hop.",
    )


class AnnounceConfig(Strict):
    communities: tuple[Community, ...] = Field((), description="Standard communities on every EIP route.")
    large_communities: tuple[LargeCommunity, ...] = Field(
        (), description="Large communities (RFC 8092) on every EIP route."
    )
    med: int | None = Field(None, ge=0, le=4294967295, description="MULTI_EXIT_DISC on every EIP route.")
    local_preference: int | None = Field(
        None, ge=0, le=4294967295, description="LOCAL_PREF (iBGP peers only) on every EIP route."
    )
    as_path_prepend: int = Field(0, ge=0, le=16, description="Extra copies of our AS in front of the path.")


class FileSourceConfig(Strict):
    path: Path = Field(description="YAML or JSON file with `eips: [{ip: ...}, ...]`, followed with inotify.")


class KubernetesSourceConfig(Strict):
    gateway_name: str | None = Field(
        None,
        description="The VpcNatGateway this speaker serves; default: env GATEWAY_NAME (set by Kube-OVN).",
    )
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig for local runs; default: in-cluster service account, then $KUBECONFIG."
    )
    policy: Literal["bound", "ready", "annotated"] = Field(
        "bound",
        description="`bound`: ready EIPs of this gateway with at least one ready FIP/SNAT/DNAT rule; "
        "`ready`: every ready EIP of this gateway; `annotated`: ready EIPs annotated "
        "ovn.kubernetes.io/bgp=true (upstream kube-ovn-speaker behaviour).",
    )
    hold_down_seconds: float = Field(
        15.0,
        ge=0,
        le=3600,
        description="Keep announcing an EIP this long after it stops qualifying, to ride through "
        "Kube-OVN's redo cycle (ready flips false then true on every gateway restart).",
    )
    annotation_prefix: str = Field(
        "bgp-speaker.kubeovn.io/",
        description="Prefix of our per-EIP attribute annotations (communities, large-communities, med, "
        "as-path-prepend).",
    )
    events: bool = Field(True, description="Post Kubernetes Events on the IptablesEIP objects.")
    events_per_minute: int = Field(60, ge=1, description="Rate limit for posted Events.")


class SourceConfig(Strict):
    kind: Literal["file", "kubernetes"] = Field("file", description="Where EIPs come from.")
    file: FileSourceConfig | None = Field(None, description="Settings of the file source.")
    kubernetes: KubernetesSourceConfig = Field(
        default_factory=lambda: KubernetesSourceConfig(), description="Settings of the Kubernetes source."
    )

    @model_validator(mode="after")
    def _complete(self) -> SourceConfig:
        if self.kind == "file" and self.file is None:
            raise ValueError("source.kind is 'file' but source.file.path is not set")
        return self


class DataplaneConfig(Strict):
    mode: Literal["off", "observe", "require"] = Field(
        "off",
        description="`require`: announce an EIP only while its NAT rules are installed in the gateway's "
        "iptables/nftables; `observe`: report mismatches only; `off`: do not read the tables.",
    )
    hold_down_seconds: float = Field(
        5.0, ge=0, le=600, description="Grace period before a missing rule withdraws its EIP."
    )
    poll_seconds: float = Field(
        2.0, gt=0, le=300, description="Cheap periodic read of the NAT tables when no monitor is available."
    )


class HttpConfig(Strict):
    listen: str = Field(
        "0.0.0.0:10667", description="HOST:PORT of the health/status/metrics endpoint; empty disables it."
    )


class ShutdownConfig(Strict):
    graceful_shutdown: bool = Field(
        True,
        description="On SIGTERM first re-announce every route with GRACEFUL_SHUTDOWN (65535:0, RFC 8326) "
        "so the core moves traffic away, then withdraw.",
    )
    drain_seconds: float = Field(
        3.0,
        ge=0,
        le=600,
        description="How long to wait between the graceful-shutdown announce and the withdrawal.",
    )
    withdraw_timeout: float = Field(
        5.0, gt=0, le=120, description="Longest wait for ExaBGP to acknowledge the final withdrawal."
    )


class ExabgpConfig(Strict):
    command: tuple[str, ...] = Field(
        (), description="How to start ExaBGP; default: the `exabgp` installed beside this Python."
    )
    user: str = Field(
        "nobody",
        description="When running as root: the unprivileged user ExaBGP runs as (its group too). "
        "ExaBGP never runs as root.",
    )
    runtime_dir: Path | None = Field(
        None, description="Directory for the rendered config and the API socket; default: a private temp dir."
    )
    reactor_speed: float = Field(
        1.0,
        gt=0,
        le=10,
        description="ExaBGP reactor tick (exabgp_reactor_speed). Only idle CPU depends on it: during bulk "
        "work the speaker keeps ExaBGP's loop awake with acknowledged small batches.",
    )
    batch_size: int = Field(
        48, ge=1, le=2000, description="Prefixes per `announce attributes ... nlri` command."
    )
    window: int = Field(
        8,
        ge=1,
        le=1024,
        description="Commands in flight before waiting for acks. 8 measured best with 48-prefix batches: "
        "20k IPv4 routes in ~1.7 s at reactor speed 1.0 (64: ~2.3 s; one big command: ~5.7 s).",
    )
    ack_timeout: float = Field(
        30.0, gt=0, description="Seconds without any ack before ExaBGP counts as hung."
    )
    restart_backoff_max: float = Field(30.0, gt=0, description="Longest wait between ExaBGP restarts.")


class ReconcileConfig(Strict):
    coalesce_seconds: float = Field(
        0.005, ge=0, le=5, description="Events within this window are handled by one reconcile pass."
    )
    resync_seconds: float = Field(
        60.0, gt=0, description="Periodic full pass that re-reads ExaBGP's adj-rib-out to catch drift."
    )


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["text", "json"] = Field("text", description="`text` (key=value) or `json` lines.")
