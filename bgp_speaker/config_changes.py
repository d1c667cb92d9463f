"""The rules of the live configuration: how it is merged, and what a change between two means.

The effective configuration is ``merge(base, defaults, gateway)``: the base is the mapping built
from kube-ovn-speaker's arguments (compat mode) or the config file (``run``); ``defaults.yaml``
and ``gateway.<GATEWAY_NAME>.yaml`` come from the ConfigMap. Mappings merge key by key, any
other value (lists included) replaces the one below it. ``BGP_SPEAKER_*`` environment variables
still win over everything (:func:`bgp_speaker.settings.from_mapping`).

:func:`classify` sorts the difference between two valid configurations:

- **route**: pools, ``announce.*``, the Kubernetes announcement policy, hold-down and annotation
  prefix, per-peer ``max_prefixes``. Applied live with a new routing policy; no session is touched.
- **live**: ``shutdown.*``, ``min_established_peers``, ``logging.level``, peer descriptions.
  Applied live, no session is touched.
- **peers**: a session parameter of a peer changed (AS, port, hold time, password, TTLs, passive,
  local address, families, graceful restart), or a peer was added or removed; ``local_as`` and
  ``router_id`` concern every peer. Only those sessions are reset.
- **restart**: everything else (``http``, ``exabgp``, ``interconnect``, ``dataplane``, ``reconcile``,
  ``logging.format``, the source kind and connection). Reported, not applied:
  :func:`keep_restart_fields` keeps the running values until the next start.

Passwords are compared by digest only; no password ever leaves this module in a message.
Everything here is a function of its arguments (and of the password files it is told to
read); :class:`bgp_speaker.livecfg.LiveConfig` holds the running configuration and applies
each new ConfigMap version with these rules.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from bgp_speaker.errors import ConfigError
from bgp_speaker.settings import PeerConfig, Settings, from_mapping

DEFAULTS_KEY = "defaults.yaml"

#: Field paths (dotted, prefixes match) applied live through a new routing policy.
ROUTE_FIELDS = (
    "pools",
    "announce",
    "source.kubernetes.policy",
    "source.kubernetes.hold_down_seconds",
    "source.kubernetes.annotation_prefix",
)
#: Field paths applied live that change neither routes nor sessions.
LIVE_FIELDS = ("shutdown", "min_established_peers", "logging.level")
#: Global session parameters: a change resets every peer.
GLOBAL_SESSION_FIELDS = ("local_as", "router_id")
#: Per-peer fields that are session parameters (a change resets that peer's session).
PEER_SESSION_FIELDS = (
    "asn",
    "port",
    "hold_time",
    "password_file",
    "multihop_ttl",
    "incoming_ttl",
    "passive",
    "local_address",
    "families",
    "graceful_restart_time",
)
PEER_ROUTE_FIELDS = ("max_prefixes",)
PEER_LIVE_FIELDS = ("description",)
#: What a secret change is reported as: never the value.
PASSWORD = "password"


def gateway_key(gateway: str) -> str:
    return f"gateway.{gateway}.yaml"


# --- merging ---------------------------------------------------------------------------------


def merge(base: Mapping[str, Any], *overlays: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with each overlay applied in order: mappings merge key by key, everything else
    (lists included) replaces what was there. The inputs are not modified."""
    result: dict[str, Any] = copy.deepcopy(dict(base))
    for overlay in overlays:
        _merge_into(result, overlay)
    return result


def _merge_into(target: dict[str, Any], overlay: Mapping[str, Any]) -> None:
    for key, value in overlay.items():
        below = target.get(key)
        if isinstance(value, Mapping) and isinstance(below, dict):
            _merge_into(below, value)
        else:
            target[key] = copy.deepcopy(value)


@dataclass(frozen=True, slots=True)
class Overlays:
    """The partial configurations read from the ConfigMap, in merge order."""

    #: (ConfigMap key, parsed mapping), only the keys present.
    layers: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.layers)


def parse_configmap(data: Mapping[str, str] | None, *, gateway: str | None) -> Overlays:
    """The overlays of a ConfigMap's ``data`` (None: no ConfigMap). Raises ConfigError naming the
    key and the problem; other keys (other gateways, the password references) are ignored."""
    if not data:
        return Overlays()
    keys = [DEFAULTS_KEY] + ([gateway_key(gateway)] if gateway else [])
    layers: list[tuple[str, dict[str, Any]]] = []
    for key in keys:
        text = data.get(key)
        if text is None:
            continue
        try:
            parsed: Any = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: not valid YAML: {_one_line(exc)}") from None
        if parsed is None:
            parsed = {}
        if not isinstance(parsed, dict):
            raise ConfigError(f"{key}: the top level must be a mapping, got {type(parsed).__name__}")
        layers.append((key, parsed))
    return Overlays(layers=tuple(layers))


def build(
    base: Mapping[str, Any],
    overlays: Overlays,
    *,
    origin: str,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Merge and validate; every peer's password file must be readable. Raises ConfigError."""
    label = origin if not overlays.layers else f"{origin} + ConfigMap {', '.join(overlays.keys)}"
    settings = from_mapping(
        merge(base, *(layer for _, layer in overlays.layers)), origin=label, environ=environ
    )
    for peer in settings.peers:
        peer.read_password()
    return settings


def password_digests(settings: Settings) -> dict[str, str | None]:
    """Peer address -> digest of its password (None without one). Raises ConfigError when a
    password file cannot be read."""
    digests: dict[str, str | None] = {}
    for peer in settings.peers:
        password = peer.read_password()
        digests[str(peer.address)] = (
            None if password is None else hashlib.sha256(password.encode()).hexdigest()
        )
    return digests


# --- classification --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerChange:
    peer: str
    change: Literal["added", "removed", "reset"]
    #: Field names that changed (``password`` for a new password; never its value).
    fields: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.change == "reset":
            return f"{self.peer}: {', '.join(self.fields)} changed"
        return f"{self.peer}: {self.change}"


@dataclass(frozen=True, slots=True)
class Changes:
    route: tuple[str, ...] = ()
    live: tuple[str, ...] = ()
    peers: tuple[PeerChange, ...] = ()
    #: The ExaBGP config text changes although no session needs a reset (a description).
    rerender: bool = False
    restart: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.route or self.live or self.peers or self.rerender or self.restart)

    @property
    def sessions(self) -> bool:
        """The ExaBGP configuration must be rendered again and reloaded."""
        return bool(self.peers) or self.rerender

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": list(self.route),
            "live": list(self.live),
            "peers": [{"peer": p.peer, "change": p.change, "fields": list(p.fields)} for p in self.peers],
            "restart": list(self.restart),
        }


def _paths(old: Any, new: Any, prefix: str) -> list[str]:
    """Dotted paths where two JSON-like values differ; recurses into mappings only."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else str(key)
            found.extend(_paths(old.get(key), new.get(key), path))
        return found
    return [] if old == new else [prefix]


def _matches(path: str, rules: Iterable[str]) -> bool:
    return any(path == rule or path.startswith(rule + ".") for rule in rules)


def classify(
    old: Settings,
    new: Settings,
    *,
    old_passwords: Mapping[str, str | None] | None = None,
    new_passwords: Mapping[str, str | None] | None = None,
) -> Changes:
    """What changed from ``old`` to ``new`` and how it applies. ``*_passwords`` map a peer
    address to a digest of its password (:func:`password_digests`): a password file whose
    content changed resets that peer although the settings are equal."""
    old_dump = old.model_dump(mode="json", exclude={"peers"})
    new_dump = new.model_dump(mode="json", exclude={"peers"})
    route: list[str] = []
    live: list[str] = []
    restart: list[str] = []
    global_session: list[str] = []
    for path in _paths(old_dump, new_dump, ""):
        if _matches(path, ROUTE_FIELDS):
            route.append(path)
        elif _matches(path, LIVE_FIELDS):
            live.append(path)
        elif _matches(path, GLOBAL_SESSION_FIELDS):
            global_session.append(path)
        else:
            restart.append(path)
    peers, rerender = _peer_changes(
        old.peers,
        new.peers,
        global_session=global_session,
        changed_passwords=_changed(old_passwords or {}, new_passwords or {}),
        route=route,
        live=live,
    )
    return Changes(
        route=tuple(route), live=tuple(live), peers=peers, rerender=rerender, restart=tuple(restart)
    )


def _changed(old: Mapping[str, str | None], new: Mapping[str, str | None]) -> Collection[str]:
    return {peer for peer in set(old) & set(new) if old[peer] != new[peer]}


def _peer_changes(
    old: Iterable[PeerConfig],
    new: Iterable[PeerConfig],
    *,
    global_session: list[str],
    changed_passwords: Collection[str],
    route: list[str],
    live: list[str],
) -> tuple[tuple[PeerChange, ...], bool]:
    before = {str(p.address): p for p in old}
    after = {str(p.address): p for p in new}
    changes: list[PeerChange] = []
    rerender = False
    for address in sorted(set(before) - set(after)):
        changes.append(PeerChange(peer=address, change="removed"))
    for address, peer in after.items():
        was = before.get(address)
        if was is None:
            changes.append(PeerChange(peer=address, change="added"))
            continue
        fields = [name for name in PEER_SESSION_FIELDS if getattr(was, name) != getattr(peer, name)]
        if address in changed_passwords and "password_file" not in fields:
            fields.append(PASSWORD)
        fields.extend(name for name in global_session if name not in fields)
        if fields:
            changes.append(PeerChange(peer=address, change="reset", fields=tuple(fields)))
        for name in PEER_ROUTE_FIELDS:
            if getattr(was, name) != getattr(peer, name):
                route.append(f"peers[{address}].{name}")
        for name in PEER_LIVE_FIELDS:
            if getattr(was, name) != getattr(peer, name):
                live.append(f"peers[{address}].{name}")
                rerender = True
    return tuple(changes), rerender and not changes


# --- applying --------------------------------------------------------------------------------


def keep_restart_fields(running: Settings, candidate: Settings, paths: Iterable[str]) -> Settings:
    """``candidate`` with every field of ``paths`` set back to its ``running`` value: the
    configuration that can be applied now."""
    result: BaseModel = candidate
    for path in paths:
        result = _restore(result, running, path.split("."))
    assert isinstance(result, Settings)
    return result


def _restore(new: BaseModel, old: BaseModel, path: list[str]) -> BaseModel:
    head, rest = path[0], path[1:]
    old_value = getattr(old, head)
    new_value = getattr(new, head)
    if rest and isinstance(old_value, BaseModel) and isinstance(new_value, BaseModel):
        return new.model_copy(update={head: _restore(new_value, old_value, rest)})
    return new.model_copy(update={head: old_value})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
