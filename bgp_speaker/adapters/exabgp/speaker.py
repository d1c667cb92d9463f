"""``ExabgpSpeaker``: the :class:`bgp_speaker.ports.Speaker` on top of a supervised ExaBGP.

ExaBGP runs as our child (:mod:`.supervisor`) and starts the relay (:mod:`.relay`), which connects
to the API socket we serve (:mod:`.client`). Every new relay connection bumps
:attr:`ExabgpSpeaker.generation`: ExaBGP was restarted, or it respawned the relay; either way what
it announces is unknown to us and the reconciler re-reads it (hazard 6).

:meth:`ExabgpSpeaker.apply` sends a plan in acknowledged batches (:mod:`.batching`); the session
configuration comes from our settings (:mod:`.session_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from bgp_speaker.adapters.exabgp import batching, client, peers, runtime, supervisor
from bgp_speaker.adapters.exabgp.session_config import SOCKET_NAME, session_config_from_settings
from bgp_speaker.core import exabgp_codec as codec
from bgp_speaker.core import exabgp_config
from bgp_speaker.core.model import IPAddress, PeerId, PeerState, PeerStatus, Plan
from bgp_speaker.errors import CommandRejected, ConfigError, SpeakerUnavailable
from bgp_speaker.ports import ApplyResult, Rib
from bgp_speaker.settings import Settings

# session_config_from_settings: re-exported for the composition root.
__all__ = ["CONFIG_NAME", "ExabgpSpeaker", "session_config_from_settings"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "exabgp.conf"


class ExabgpSpeaker:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        router_id: IPAddress | None = None,
        session: exabgp_config.SessionConfig | None = None,
        runtime_dir: Path | None = None,
        command: Sequence[str] = (),
        user: str = "nobody",
        reactor_speed: float = 1.0,
        batch_size: int = 48,
        window: int = 8,
        ack_timeout: float = 30.0,
        restart_backoff_max: float = 30.0,
        relay_python: str | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """Either ``settings`` (with ``router_id``, or ``settings.router_id``: the tuning knobs then
        come from ``settings.exabgp``) or an explicit ``session``. ``session.relay_command`` may be
        empty: the relay on our socket, run by ``relay_python`` (default: this interpreter), is
        filled in. Raises ConfigError."""
        if settings is not None:
            cfg = settings.exabgp
            runtime_dir, command, user = cfg.runtime_dir, cfg.command, cfg.user
            reactor_speed, batch_size, window = cfg.reactor_speed, cfg.batch_size, cfg.window
            ack_timeout, restart_backoff_max = cfg.ack_timeout, cfg.restart_backoff_max
            router_id = router_id or settings.router_id
            if router_id is None:
                raise ConfigError("router_id: not set and not derived from the interconnect interface")
        self._relay_python = relay_python
        self._own_dir = runtime_dir is None
        self.runtime_dir = runtime_dir or Path(tempfile.mkdtemp(prefix="bgp-speaker-"))
        self.socket_path = self.runtime_dir / SOCKET_NAME
        self.config_path = self.runtime_dir / CONFIG_NAME
        self._session: exabgp_config.SessionConfig | None = None
        self._owner = runtime.unprivileged_ids(user)
        self.batch_size = batch_size
        self.window = window
        self.reactor_speed = reactor_speed
        #: Called (no arguments) when the reconciler should run: peer state change, API
        #: (re)connection, ExaBGP exit or restart. :attr:`last_change_reason` says which.
        self.on_change = on_change
        #: Called (no arguments) each time ExaBGP had to be started again.
        self.on_restart: Callable[[], None] | None = None
        self.last_change_reason = ""
        self._peers = peers.PeerTracker(on_change=lambda: self._changed("peer-state"))
        self._peer_as: dict[PeerId, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.channel = client.ApiChannel(
            self.socket_path,
            ack_timeout=ack_timeout,
            owner=self._owner,
            on_event=self._peers.on_event,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            # A silent ExaBGP may be stuck in a blocking write, deaf to SIGTERM (hazard 1).
            on_hung=lambda: self.supervisor.kill("no ack within the timeout"),
        )
        self.supervisor = supervisor.ExabgpSupervisor(
            config_path=self.config_path,
            command=command,
            owner=self._owner,
            reactor_speed=reactor_speed,
            restart_backoff_max=restart_backoff_max,
            on_exit=self._on_exabgp_exit,
            on_restart=self._on_exabgp_restart,
        )
        if settings is not None and router_id is not None:
            relay_command = runtime.default_relay_command(self.socket_path, python=relay_python)
            session = session_config_from_settings(settings, router_id=router_id, relay_command=relay_command)
        if session is not None:
            self.configure(session)

    def configure(self, session: exabgp_config.SessionConfig) -> None:
        if not session.relay_command:
            relay_command = runtime.default_relay_command(self.socket_path, python=self._relay_python)
            session = replace(session, relay_command=relay_command)
        exabgp_config.render(session, redact_secrets=False)  # raises ValueError early
        self._session = session
        self._peer_as = {n.address: n.peer_as for n in session.neighbors}
        self._peers = peers.PeerTracker(self._peer_as, on_change=lambda: self._changed("peer-state"))
        self.channel._on_event = self._peers.on_event
        self.supervisor.secrets = tuple(n.md5_password for n in session.neighbors if n.md5_password)

    # --- status ------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self.channel.generation

    @property
    def available(self) -> bool:
        return self.channel.connected

    @property
    def api_connected(self) -> bool:
        return self.channel.connected

    @property
    def running(self) -> bool:
        return self.supervisor.running

    @property
    def restarting_since(self) -> float | None:
        """Wall-clock start of the current series of ExaBGP (re)starts; None while it is up."""
        return self.supervisor.restarting_since

    @property
    def pid(self) -> int | None:
        return self.supervisor.pid

    @property
    def restarts(self) -> int:
        return self.supervisor.restarts

    def peer_statuses(self) -> Mapping[PeerId, PeerStatus]:
        return self._peers.statuses()

    def status(self) -> dict[str, object]:
        return {
            "running": self.running,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.supervisor.last_exit,
            "api_connected": self.api_connected,
            "generation": self.generation,
            "config": str(self.config_path),
            "reactor_speed": self.reactor_speed,
            "batch_size": self.batch_size,
            "window": self.window,
        }

    def rendered_config(self) -> str:
        """The ExaBGP configuration with passwords redacted, for status pages and logs."""
        assert self._session is not None
        return exabgp_config.render(self._session, redact_secrets=True)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, check_commands: bool = True) -> None:
        """Check that ExaBGP and the relay can run as the unprivileged user (falling back to a
        system python3 for defaults it cannot execute; ConfigError if nothing runs), write the
        config and open the API socket; :meth:`run` then starts ExaBGP."""
        if self._session is None:
            raise RuntimeError("ExabgpSpeaker.start() before configure()")
        if check_commands:
            command, relay_python = await runtime.resolve_commands(
                exabgp_command=self.supervisor.command,
                exabgp_explicit=self.supervisor.command_explicit,
                relay_python=self._session.relay_command[0],
                relay_explicit=self._relay_python is not None,
                owner=self._owner,
            )
            self.supervisor.command = command
            relay_command = (relay_python, *self._session.relay_command[1:])
            self._session = replace(self._session, relay_command=relay_command)
        runtime.prepare_runtime_dir(self.runtime_dir, owner=self._owner)
        text = exabgp_config.render(self._session, redact_secrets=False)
        runtime.write_private(self.config_path, text, owner=self._owner)
        await self.channel.start()
        logger.debug("exabgp config written", extra={"path": str(self.config_path)})

    async def reconfigure(self, session: exabgp_config.SessionConfig) -> bool:
        """Apply a new session configuration to the running ExaBGP: render and write it, then
        reload (:meth:`ExabgpSupervisor.reload`, SIGUSR1), which resets only the neighbors whose
        definition changed. Known peers keep their tracked state; the reconciler must re-read the
        adj-rib-out afterwards (a re-created neighbor starts empty). Raises ConfigError when the
        configuration cannot be rendered; returns whether ExaBGP confirmed the reload."""
        if not session.relay_command:
            assert self._session is not None
            session = replace(session, relay_command=self._session.relay_command)
        try:
            text = exabgp_config.render(session, redact_secrets=False)
        except ValueError as exc:
            raise ConfigError(f"peers: ExaBGP cannot take this configuration: {exc}") from None
        kept = self._peers.statuses()
        self.configure(session)
        for peer, status in kept.items():
            if peer in self._peer_as:
                self._peers._statuses[peer] = status
        runtime.write_private(self.config_path, text, owner=self._owner)
        return await self.supervisor.reload()

    async def run(self) -> None:
        """Keep ExaBGP running (root task of the app's TaskGroup)."""
        await self.supervisor.run()

    async def stop(self) -> None:
        await self.supervisor.stop()
        await self.channel.close()
        for task in list(self._tasks):
            task.cancel()
        if self._own_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    # --- events ------------------------------------------------------------------------------

    def _changed(self, reason: str) -> None:
        self.last_change_reason = reason
        logger.debug("speaker change", extra={"reason": reason})
        if self.on_change is not None:
            self.on_change()

    def _on_connect(self, generation: int) -> None:
        task = asyncio.create_task(self._learn_peer_states(generation), name="exabgp-peer-states")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._changed("api-connected")

    def _on_disconnect(self, generation: int) -> None:
        self._peers.set_all(PeerState.UNKNOWN)
        self._changed("api-disconnected")

    def _on_exabgp_exit(self, code: int) -> None:
        self._peers.set_all(PeerState.DOWN, error=f"exabgp exited with code {code}")
        self._changed("exabgp-exited")

    def _on_exabgp_restart(self, count: int) -> None:
        if self.on_restart is not None:
            self.on_restart()
        self._changed("exabgp-restarted")

    async def _learn_peer_states(self, generation: int) -> None:
        """A respawned relay gets no ``up`` event for sessions already up (hazard 6): ask."""
        since = self._peers.state_events
        try:
            lines = await self.channel.command(codec.show_neighbors_command())
            states = codec.parse_neighbors(lines)
        except (SpeakerUnavailable, CommandRejected, ValueError) as exc:
            logger.warning("could not read peer states", extra={"reason": str(exc)})
            return
        if self.channel.generation == generation:
            self._peers.learned(states, since=since)

    # --- Speaker protocol --------------------------------------------------------------------

    async def read_rib_out(self) -> Rib:
        lines = await self.channel.command(codec.show_rib_out_command())
        rib: Rib = {peer: {} for peer in self._peer_as}
        for line in lines:
            try:
                peer, prefix, attributes = codec.parse_rib_line(line)
            except ValueError as exc:
                logger.warning("adj-rib-out line not understood", extra={"reason": str(exc)})
                continue
            rib.setdefault(peer, {})[prefix] = attributes
        return rib

    async def apply(self, plan: Plan) -> ApplyResult:
        return await batching.apply_plan(
            plan,
            channel=self.channel,
            peer_as=self._peer_as,
            local_as=self._session.local_as if self._session is not None else None,
            batch_size=self.batch_size,
            window=self.window,
        )

    async def withdraw_all_and_wait(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Withdraw everything (``clear adj-rib out``) and wait for ExaBGP's ``done``, then give it
        a moment to put the withdrawals on the wire. True when acknowledged in time."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout(timeout):
                await self.channel.command("clear adj-rib out")
        except (TimeoutError, SpeakerUnavailable, CommandRejected) as exc:
            logger.warning("withdraw-all not acknowledged", extra={"reason": repr(exc)})
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(min(0.5, max(0.0, deadline - asyncio.get_running_loop().time())))
        return True

    async def settle(self, *, linger: float = 0.5) -> None:
        """Wait until ExaBGP has worked through every command sent so far (a cheap queued command
        answers only after them), then ``linger`` for the updates to leave on the wire (``done``
        is not delivery). Raises SpeakerUnavailable."""
        await self.channel.command("show neighbor summary")
        await asyncio.sleep(linger)
