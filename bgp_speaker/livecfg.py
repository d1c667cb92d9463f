"""Live configuration: the running configuration, and each new ConfigMap version applied to it.

:class:`LiveConfig` keeps the configuration the daemon runs with and, for every new version of
the ConfigMap, builds the candidate, sorts out what changed and hands it to its :class:`Target`
(the running daemon): route and live changes as a new routing policy, session changes as an
ExaBGP reload, restart-only changes reported and kept at their running values. A version that
cannot be used is rejected as a whole. The rules (merge order, what each field change means)
are the pure functions of :mod:`bgp_speaker.config_changes`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bgp_speaker.config_changes import (
    Changes,
    Overlays,
    PeerChange,
    build,
    classify,
    keep_restart_fields,
    parse_configmap,
    password_digests,
)
from bgp_speaker.errors import ConfigError
from bgp_speaker.settings import Settings

__all__ = ["Changes", "ConfigStatus", "LiveConfig", "Overlays", "PeerChange", "Target"]

logger = logging.getLogger(__name__)


@dataclass
class ConfigStatus:
    """The ``config`` section of /status."""

    valid: bool = True
    #: Why the newest ConfigMap version was not applied (field and value), if it was not.
    error: str | None = None
    #: ConfigMap keys merged into the running configuration.
    overlays: tuple[str, ...] = ()
    #: Fields changed in the ConfigMap that wait for the next start.
    pending_restart: tuple[str, ...] = ()
    applied_at: float | None = None
    rejected_at: float | None = None
    version: str | None = None
    last_changes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "error": self.error,
            "overlays": list(self.overlays),
            "pending_restart": list(self.pending_restart),
            "applied_at": self.applied_at,
            "rejected_at": self.rejected_at,
            "version": self.version,
            "last_changes": self.last_changes,
        }


class Target(Protocol):
    """What a configuration change is applied to: the running daemon."""

    def apply_routes(self, settings: Settings) -> None:
        """New routing policy, source options and live settings; pull the trigger."""

    async def apply_sessions(self, settings: Settings, changes: Changes) -> None:
        """Render the ExaBGP configuration again and make ExaBGP reload it."""

    def config_event(self, reason: str, type_: str, message: str) -> None:
        """A Kubernetes Event (on the gateway), if events are on."""

    def config_state(self, *, valid: bool, pending_restart: int) -> None:
        """Metrics."""


class LiveConfig:
    """The running configuration and each new ConfigMap version applied to it.

    A version that does not parse or validate (or names a password file that cannot be read)
    is rejected as a whole: the last good configuration keeps running, and the reason is logged,
    in :meth:`status`, in the ``bgp_speaker_config_valid`` metric and in an Event.
    """

    def __init__(
        self,
        *,
        base: Mapping[str, Any],
        origin: str,
        gateway: str | None,
        environ: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base = copy.deepcopy(dict(base))
        self.origin = origin
        self.gateway = gateway
        self.environ = environ
        self.state = ConfigStatus()
        self._clock = clock
        self._running: Settings | None = None
        self._passwords: dict[str, str | None] = {}

    @property
    def running(self) -> Settings:
        assert self._running is not None, "LiveConfig.initial() first"
        return self._running

    def _candidate(self, data: Mapping[str, str] | None) -> tuple[Settings, Overlays]:
        overlays = parse_configmap(data, gateway=self.gateway)
        return build(self.base, overlays, origin=self.origin, environ=self.environ), overlays

    def initial(self, data: Mapping[str, str] | None, *, version: str | None = None) -> Settings:
        """The configuration to start with. A bad ConfigMap falls back to the base alone; a bad
        base raises ConfigError (nothing good to fall back to)."""
        try:
            settings, overlays = self._candidate(data)
        except ConfigError as exc:
            settings = build(self.base, Overlays(), origin=self.origin, environ=self.environ)
            overlays = Overlays()
            self._reject(str(exc), version=version)
        else:
            self.state.valid, self.state.error = True, None
            self.state.applied_at = self._clock()
        self._running = settings
        self._passwords = password_digests(settings)
        self.state.overlays, self.state.version = overlays.keys, version
        return settings

    async def update(
        self, data: Mapping[str, str] | None, *, version: str | None, target: Target
    ) -> Changes | None:
        """Apply a new ConfigMap version (None: no ConfigMap). Returns what changed, or None
        when the version was rejected."""
        running = self.running
        try:
            candidate, overlays = self._candidate(data)
            passwords = password_digests(candidate)
        except ConfigError as exc:
            self._reject(str(exc), version=version, target=target)
            return None
        changes = classify(running, candidate, old_passwords=self._passwords, new_passwords=passwords)
        applied = keep_restart_fields(running, candidate, changes.restart)
        if changes.restart:
            logger.warning(
                "configuration change needs a restart; not applied",
                extra={"fields": ",".join(changes.restart), "version": version or ""},
            )
            if changes.restart != self.state.pending_restart:
                target.config_event(
                    "ConfigNeedsRestart",
                    "Warning",
                    "changed settings take effect at the next start: " + ", ".join(changes.restart),
                )
        if changes.sessions:
            for peer in changes.peers:
                logger.warning(
                    "resetting the BGP session" if peer.change == "reset" else f"peer {peer.change}",
                    extra={"peer": peer.peer, "op": peer.change, "reason": peer.describe()},
                )
                target.config_event(
                    "PeerReset" if peer.change == "reset" else "PeerConfigured",
                    "Warning" if peer.change == "reset" else "Normal",
                    f"BGP session with {peer.describe()}; "
                    + ("resetting it" if peer.change == "reset" else "session reloaded"),
                )
            try:
                await target.apply_sessions(applied, changes)
            except ConfigError as exc:
                self._reject(str(exc), version=version, target=target)
                return None
        if changes.route or changes.live or changes.peers:
            target.apply_routes(applied)
        self._running, self._passwords = applied, passwords
        state = self.state
        state.valid, state.error, state.pending_restart = True, None, changes.restart
        state.overlays, state.version = overlays.keys, version
        target.config_state(valid=True, pending_restart=len(changes.restart))
        if not changes.empty:
            state.applied_at, state.last_changes = self._clock(), changes.as_dict()
            logger.info(
                "configuration applied",
                extra={
                    "version": version or "",
                    "route": ",".join(changes.route),
                    "live": ",".join(changes.live),
                    "peers": "; ".join(p.describe() for p in changes.peers),
                },
            )
            applied_now = [*changes.route, *changes.live, *(p.describe() for p in changes.peers)]
            if applied_now:
                target.config_event("ConfigApplied", "Normal", "applied live: " + "; ".join(applied_now))
        return changes

    def _reject(self, reason: str, *, version: str | None, target: Target | None = None) -> None:
        logger.error(
            "live configuration rejected; keeping the last good one",
            extra={"reason": reason, "version": version or "", "configmap_version": version or ""},
        )
        was = (self.state.valid, self.state.error)
        self.state.valid, self.state.error = False, reason
        self.state.rejected_at, self.state.version = self._clock(), version
        if target is not None:
            target.config_state(valid=False, pending_restart=len(self.state.pending_restart))
            if was != (False, reason):
                target.config_event("ConfigInvalid", "Warning", f"kept the last good configuration: {reason}")

    def status(self) -> dict[str, Any]:
        return self.state.as_dict()
