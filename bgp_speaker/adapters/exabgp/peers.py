"""BGP session state of each configured neighbor, as far as ExaBGP's events and answers tell.

Only ``up`` means Established; ``connected`` is TCP only (hazard 7). A respawned relay gets no
``up`` for a session already up (hazard 6), so the speaker also feeds in the answer of
``show neighbor json`` after every (re)connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from bgp_speaker.core import exabgp_codec as codec
from bgp_speaker.core.model import PeerId, PeerState, PeerStatus

logger = logging.getLogger(__name__)


class PeerTracker:
    def __init__(self, peers: Iterable[PeerId] = (), *, on_change: Callable[[], None] | None = None) -> None:
        self._statuses: dict[PeerId, PeerStatus] = {peer: PeerStatus(peer=peer) for peer in peers}
        self.on_change = on_change
        #: Count of state events seen; ``_touched[peer]`` is the count at that peer's last one.
        self.state_events = 0
        self._touched: dict[PeerId, int] = {}

    def statuses(self) -> dict[PeerId, PeerStatus]:
        return dict(self._statuses)

    def set_state(self, peer: PeerId, state: PeerState, *, error: str | None = None) -> None:
        old = self._statuses.get(peer, PeerStatus(peer=peer))
        if old.state is state and error is None:
            return
        lost = old.state is PeerState.ESTABLISHED and state is not PeerState.ESTABLISHED
        self._statuses[peer] = PeerStatus(
            peer=peer,
            state=state,
            since=time.time() if old.state is not state else old.since,
            last_error=error if error is not None else old.last_error,
            flaps=old.flaps + (1 if lost else 0),
        )
        if old.state is not state:
            logger.info(
                "bgp peer state", extra={"peer": str(peer), "state": state.value, "reason": error or ""}
            )
            if self.on_change is not None:
                self.on_change()

    def set_all(self, state: PeerState, *, error: str | None = None) -> None:
        for peer in list(self._statuses):
            self.set_state(peer, state, error=error)

    def learned(self, states: Mapping[PeerId, PeerState], *, since: int) -> None:
        """States read with ``show neighbor json``, asked when :attr:`state_events` was ``since``.

        A state event that arrived meanwhile may be newer than the answer (the answer is applied
        only once its ``done`` arrives): such peers keep the event's state. Unknown peers are
        ignored."""
        for peer, state in states.items():
            if peer in self._statuses and self._touched.get(peer, -1) < since:
                self.set_state(peer, state)

    def on_event(self, event: codec.Event) -> None:
        if isinstance(event, codec.StateEvent):
            self._touched[event.peer] = self.state_events
            self.state_events += 1
            state = codec.STATE_OF_EVENT.get(event.state, PeerState.UNKNOWN)
            error = (event.reason or None) if state is PeerState.DOWN else None
            self.set_state(event.peer, state, error=error)
        elif isinstance(event, codec.NotificationEvent):
            text = f"notification {event.direction} {event.code}/{event.subcode} {event.message}".strip()
            logger.warning("bgp notification", extra={"peer": str(event.peer), "reason": text})
            old = self._statuses.get(event.peer, PeerStatus(peer=event.peer))
            self._statuses[event.peer] = replace(old, last_error=text)
        elif isinstance(event, codec.ShutdownEvent):
            logger.info("exabgp is shutting down")
