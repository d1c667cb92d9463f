"""The root of the settings model: :class:`Settings`, the whole configuration, and its loading.

Precedence (highest first): ``BGP_SPEAKER_*`` environment variables (nested keys joined
with ``__``, e.g. ``BGP_SPEAKER_HTTP__LISTEN``), then the YAML file, then the defaults of
the sections (:mod:`bgp_speaker.settings.sections`). Validation errors become one
:class:`bgp_speaker.errors.ConfigError` naming every bad field path and value.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bgp_speaker.core import model
from bgp_speaker.errors import ConfigError
from bgp_speaker.settings.sections import (
    AnnounceConfig,
    Asn,
    Cidr,
    DataplaneConfig,
    ExabgpConfig,
    HttpConfig,
    InterconnectConfig,
    LoggingConfig,
    PeerConfig,
    ReconcileConfig,
    ShutdownConfig,
    SourceConfig,
)

ENV_PREFIX = "BGP_SPEAKER_"


class Settings(BaseSettings):
    """The whole configuration of one speaker (one NAT gateway)."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix=ENV_PREFIX, env_nested_delimiter="__"
    )

    local_as: Asn = Field(description="Our AS number.")
    router_id: IPv4Address | None = Field(
        None, description="BGP router ID; default: the interconnect IPv4 address."
    )
    interconnect: InterconnectConfig = Field(
        default_factory=lambda: InterconnectConfig(),
        description="The interconnect interface, its next hops and the optional interconnect routing mode.",
    )
    peers: tuple[PeerConfig, ...] = Field(min_length=1, description="The core routers.")
    pools: tuple[Cidr, ...] = Field(
        min_length=1,
        description="Allow-list of EIP ranges; an address outside all of them is never announced.",
    )
    announce: AnnounceConfig = Field(
        default_factory=lambda: AnnounceConfig(), description="Default BGP attributes of every EIP route."
    )
    source: SourceConfig = Field(description="Where the EIPs to announce come from.")
    http: HttpConfig = Field(
        default_factory=lambda: HttpConfig(), description="The health, status and metrics endpoint."
    )
    shutdown: ShutdownConfig = Field(
        default_factory=lambda: ShutdownConfig(), description="What happens on SIGTERM."
    )
    dataplane: DataplaneConfig = Field(
        default_factory=lambda: DataplaneConfig(),
        description="Gating announcements on the NAT rules really installed in the gateway.",
    )
    exabgp: ExabgpConfig = Field(
        default_factory=lambda: ExabgpConfig(), description="How the ExaBGP child process is run and driven."
    )
    reconcile: ReconcileConfig = Field(
        default_factory=lambda: ReconcileConfig(), description="Timing of the reconcile loop."
    )
    logging: LoggingConfig = Field(
        default_factory=lambda: LoggingConfig(), description="Log level and format."
    )
    min_established_peers: int = Field(
        1,
        ge=0,
        description="/readyz needs at least this many established sessions (capped at the peer count).",
    )

    @model_validator(mode="after")
    def _unique_peers(self) -> Settings:
        seen: set[str] = set()
        for peer in self.peers:
            if str(peer.address) in seen:
                raise ValueError(f"peer {peer.address} is listed twice")
            seen.add(str(peer.address))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    # --- conversions into core values -------------------------------------------------

    def routing_policy(self) -> model.RoutingPolicy:
        return model.RoutingPolicy(
            peers=tuple(
                model.PeerPolicy(
                    peer=p.address,
                    local_as=self.local_as,
                    peer_as=p.asn,
                    families=frozenset(model.Family(f) for f in p.families),
                    max_prefixes=p.max_prefixes,
                )
                for p in self.peers
            ),
            pools=tuple(ip_network(p) for p in self.pools),
            defaults=model.AttributeOverrides(
                communities=self.announce.communities,
                large_communities=self.announce.large_communities,
                med=self.announce.med,
                local_preference=self.announce.local_preference,
                as_path_prepend=self.announce.as_path_prepend,
            ),
        )


def format_validation_error(error: ValidationError, *, origin: str) -> str:
    """One line per problem: ``origin: field.path: message (got VALUE)``."""
    items = error.errors(include_url=False)
    locations = [tuple(item["loc"]) for item in items]
    lines = []
    for item in items:
        loc = tuple(item["loc"])
        # A list with a bad element also fails its length check; the element error says it all.
        if item["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locations):
            continue
        path = ".".join(str(part) for part in loc) or "(top level)"
        message = str(item["msg"]).removeprefix("Value error, ")
        value = item.get("input")
        shown = ""
        if (
            not isinstance(value, dict | list | tuple)
            and repr(value) not in message
            and str(value) not in message
        ):
            shown = f" (got {value!r})"
        lines.append(f"{origin}: {path}: {message}{shown}")
    return "\n".join(lines)


def load(path: Path, *, environ: dict[str, str] | None = None) -> Settings:
    """Read, parse and validate the config file. Raises :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        raw: Any = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    return from_mapping(raw, origin=str(path), environ=environ)


def from_mapping(raw: dict[str, Any], *, origin: str, environ: dict[str, str] | None = None) -> Settings:
    saved = None
    if environ is not None:
        saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
        for key in saved:
            del os.environ[key]
        os.environ.update({k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)})
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin=origin)) from None
    finally:
        if saved is not None:
            for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
                del os.environ[key]
            os.environ.update(saved)


def parse_address(text: str) -> model.IPAddress:
    return ip_address(text)
