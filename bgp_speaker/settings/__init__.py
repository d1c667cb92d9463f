"""The speaker's configuration: one frozen pydantic model, loaded from YAML plus env.

- :mod:`.sections`: one model per concern (peers, interconnect, announce, source, ...) and the
  constrained value types they share.
- :mod:`.root`: :class:`Settings`, the whole configuration of one speaker, and its loading
  (:func:`load`, :func:`from_mapping`) with ``BGP_SPEAKER_*`` environment overrides.

Every field has a description; ``config/reference.md`` is generated from them.
"""

from bgp_speaker.settings.root import (
    ENV_PREFIX,
    Settings,
    format_validation_error,
    from_mapping,
    load,
    parse_address,
)
from bgp_speaker.settings.sections import (
    AnnounceConfig,
    Asn,
    Cidr,
    Community,
    DataplaneConfig,
    ExabgpConfig,
    FileSourceConfig,
    HttpConfig,
    InterconnectConfig,
    KubernetesSourceConfig,
    LargeCommunity,
    LoggingConfig,
    PeerConfig,
    ReconcileConfig,
    ShutdownConfig,
    SourceConfig,
    Strict,
)

__all__ = [
    "ENV_PREFIX",
    "AnnounceConfig",
    "Asn",
    "Cidr",
    "Community",
    "DataplaneConfig",
    "ExabgpConfig",
    "FileSourceConfig",
    "HttpConfig",
    "InterconnectConfig",
    "KubernetesSourceConfig",
    "LargeCommunity",
    "LoggingConfig",
    "PeerConfig",
    "ReconcileConfig",
    "Settings",
    "ShutdownConfig",
    "SourceConfig",
    "Strict",
    "format_validation_error",
    "from_mapping",
    "load",
    "parse_address",
]
