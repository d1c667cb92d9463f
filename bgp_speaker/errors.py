"""Exception taxonomy. Library exceptions are translated at the adapter boundary.

::

    BgpSpeakerError
    ├── ConfigError                 bad config file or value (permanent until fixed)
    ├── SpeakerError                anything about the ExaBGP API
    │   ├── SpeakerUnavailable      no API channel, EOF, or an ack timed out -> full resync
    │   └── CommandRejected         ExaBGP answered ``error`` to one command
    ├── SourceError                 a source could not be read (keeps the last good view)
    ├── NetlinkError                an interface/route operation failed
    └── StatusUnavailable           the status endpoint is unreachable or gave no valid document
"""

from __future__ import annotations


class BgpSpeakerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BgpSpeakerError):
    """The configuration is invalid; ``str()`` names every bad field and value."""


class SpeakerError(BgpSpeakerError):
    pass


class SpeakerUnavailable(SpeakerError):
    """The ExaBGP API channel is gone or silent; what it announced must be re-read."""


class CommandRejected(SpeakerError):
    def __init__(self, command: str, detail: str = "") -> None:
        super().__init__(f"ExaBGP rejected {command!r}" + (f": {detail}" if detail else ""))
        self.command = command
        self.detail = detail


class SourceError(BgpSpeakerError):
    pass


class NetlinkError(BgpSpeakerError):
    pass


class StatusUnavailable(BgpSpeakerError):
    """The ``/status`` endpoint of a running speaker could not be read (``bgp-speaker status``)."""
