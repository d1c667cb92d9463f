"""Our settings as ExaBGP's session configuration: the neighbors, their passwords and the relay.

:func:`session_config_from_settings` turns :class:`bgp_speaker.settings.Settings` into the
:class:`bgp_speaker.core.exabgp_config.SessionConfig` that :mod:`bgp_speaker.core.exabgp_config`
renders; :func:`render_config` is the text the daemon would write (``render-exabgp``).
:class:`bgp_speaker.adapters.exabgp.speaker.ExabgpSpeaker` writes it into its runtime directory,
beside the API socket (:data:`SOCKET_NAME`) the relay connects to.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bgp_speaker.adapters.exabgp import runtime
from bgp_speaker.core import exabgp_config
from bgp_speaker.core.model import Family, IPAddress
from bgp_speaker.settings import Settings

SOCKET_NAME = "api.sock"


def session_config_from_settings(
    settings: Settings, *, router_id: IPAddress, relay_command: tuple[str, ...]
) -> exabgp_config.SessionConfig:
    """Raises ConfigError when a password file cannot be read."""
    return exabgp_config.SessionConfig(
        router_id=router_id,
        local_as=settings.local_as,
        relay_command=relay_command,
        neighbors=tuple(
            exabgp_config.NeighborConfig(
                address=peer.address,
                peer_as=peer.asn,
                port=peer.port,
                local_address=peer.local_address,
                hold_time=peer.hold_time,
                md5_password=peer.read_password(),
                outgoing_ttl=peer.multihop_ttl,
                incoming_ttl=peer.incoming_ttl,
                passive=peer.passive,
                families=tuple(Family(f) for f in peer.families),
                description=peer.description,
                graceful_restart_time=peer.graceful_restart_time,
            )
            for peer in settings.peers
        ),
    )


def render_config(settings: Settings, *, router_id: IPAddress, redact_secrets: bool) -> str:
    """The ExaBGP configuration the daemon would write (for ``render-exabgp``)."""
    runtime_dir = settings.exabgp.runtime_dir or Path(tempfile.gettempdir()) / "bgp-speaker-RUNTIME"
    relay_command = runtime.default_relay_command(runtime_dir / SOCKET_NAME)
    session = session_config_from_settings(settings, router_id=router_id, relay_command=relay_command)
    return exabgp_config.render(session, redact_secrets=redact_secrets)
