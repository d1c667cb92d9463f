"""The daemon's end of ExaBGP's process API: a Unix-socket server the relay connects to.

One relay connection at a time; a new one replaces the old and bumps :attr:`ApiChannel.generation`
(ExaBGP respawned the relay, or ExaBGP itself restarted: what it announces is unknown).

Reading rules from the ExaBGP notes:

- ONE reader task per connection that never stops draining: ExaBGP writes acks and events with
  blocking writes, and an unread backlog freezes its whole reactor (hazard 1);
- acks are matched FIFO, which is only correct for the *queued* command kinds (announce,
  withdraw, show, flush, clear): anything else is answered at once and overtakes queued work
  (hazard 2), so :meth:`ApiChannel.command` refuses other kinds;
- text lines that are neither acks nor JSON events are the output of the ``show`` at the head
  of the FIFO (ExaBGP runs queued commands one after another).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bgp_speaker.core import exabgp_codec as codec
from bgp_speaker.errors import CommandRejected, SpeakerUnavailable

logger = logging.getLogger(__name__)

QUEUED_KINDS = ("announce", "withdraw", "show", "flush", "clear")
_READ_LIMIT = 16 * 1024 * 1024
_MAX_LOGGED_EVENTS = 3


def check_queued(line: str) -> None:
    """Raise ValueError unless ``line`` is one ASCII line of a queued command kind."""
    if "\n" in line or "\r" in line or not line.isascii() or not line.isprintable():
        raise ValueError("a command must be one line of printable ASCII")
    words = line.split()
    if len(words) >= 2 and words[0] == "neighbor":
        words = words[2:]
    if not words or words[0] not in QUEUED_KINDS:
        raise ValueError(f"only queued command kinds {QUEUED_KINDS} may be sent, got {line[:60]!r}")


@dataclass(slots=True)
class _Pending:
    line: str
    future: asyncio.Future[bool]
    output: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Outcome of :meth:`ApiChannel.send_many`: acks always acknowledge a prefix of the lines."""

    #: One entry per acknowledged line, in order: True for ``done``, False for ``error``.
    acks: tuple[bool, ...]
    #: The channel went away (or ExaBGP went silent) before every line was acknowledged.
    interrupted: bool


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, generation: int) -> None:
        self.reader = reader
        self.writer = writer
        self.generation = generation
        self.pending: deque[_Pending] = deque()
        self.closed = False
        self.last_progress = time.monotonic()


class ApiChannel:
    def __init__(
        self,
        path: Path,
        *,
        ack_timeout: float = 30.0,
        owner: tuple[int, int] | None = None,
        on_event: Callable[[codec.Event], None] | None = None,
        on_connect: Callable[[int], None] | None = None,
        on_disconnect: Callable[[int], None] | None = None,
        on_hung: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.ack_timeout = ack_timeout
        #: Acknowledgements seen since start, by result (for bgp_speaker_commands_total).
        self.acks: dict[str, int] = {"done": 0, "error": 0, "timeout": 0}
        self._owner = owner
        self._on_event = on_event
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_hung = on_hung
        self._server: asyncio.Server | None = None
        self._conn: _Connection | None = None
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.generation = 0
        self.events_seen = 0

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path), limit=_READ_LIMIT)
        os.chmod(self.path, 0o600)
        if self._owner is not None:
            os.chown(self.path, *self._owner)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._conn is not None:
            self._drop(self._conn, reason="channel closed")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def wait_connected(self, within: float | None = None) -> int:
        """Wait for a relay connection; returns the generation. Raises SpeakerUnavailable."""
        try:
            await asyncio.wait_for(self._connected.wait(), within)
        except TimeoutError:
            raise SpeakerUnavailable(f"no API connection from ExaBGP within {within} s") from None
        return self.generation

    def disconnect(self) -> None:
        """Drop the current relay connection (ExaBGP respawns the relay)."""
        if self._conn is not None:
            self._drop(self._conn, reason="dropped on request")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._conn is not None:
            self._drop(self._conn, reason="replaced by a new relay connection")
        self.generation += 1
        conn = _Connection(reader, writer, self.generation)
        self._conn = conn
        self._connected.set()
        logger.info("exabgp api connected", extra={"generation": conn.generation})
        task = asyncio.create_task(self._read(conn), name=f"exabgp-api-reader-{conn.generation}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._on_connect is not None:
            self._on_connect(conn.generation)

    def _drop(self, conn: _Connection, *, reason: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        if self._conn is conn:
            self._conn = None
            self._connected.clear()
        while conn.pending:
            pending = conn.pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(SpeakerUnavailable(f"ExaBGP API connection lost: {reason}"))
        conn.writer.close()
        logger.info("exabgp api disconnected", extra={"generation": conn.generation, "reason": reason})
        if self._on_disconnect is not None:
            self._on_disconnect(conn.generation)

    # --- reading ---------------------------------------------------------------------------

    async def _read(self, conn: _Connection) -> None:
        reason = "EOF from the relay"
        try:
            while True:
                try:
                    raw = await conn.reader.readline()
                except ValueError:  # a line over the limit: skip it, keep draining
                    logger.warning("exabgp api line too long, skipped", extra={"limit": _READ_LIMIT})
                    continue
                if not raw:
                    break
                if not raw.endswith(b"\n"):
                    break  # EOF in the middle of a line
                self._dispatch(conn, raw[:-1].decode("utf-8", "replace").rstrip("\r"))
        except (ConnectionError, OSError) as exc:
            reason = f"read error: {exc}"
        finally:
            self._drop(conn, reason=reason)

    def _dispatch(self, conn: _Connection, line: str) -> None:
        kind = codec.classify(line)
        if kind is codec.LineKind.EVENT:
            self.events_seen += 1
            try:
                event = codec.parse_event(line)
            except ValueError as exc:
                logger.warning("exabgp event not understood", extra={"reason": str(exc)})
                return
            if self._on_event is not None:
                self._on_event(event)
            return
        if kind is codec.LineKind.TEXT:
            if conn.pending:
                conn.pending[0].output.append(line)
            else:
                logger.info("exabgp api text", extra={"line": line[:200]})
            return
        conn.last_progress = time.monotonic()
        if not conn.pending:
            logger.warning("exabgp ack without a pending command", extra={"ack": line})
            return
        pending = conn.pending.popleft()
        self.acks["done" if kind is codec.LineKind.DONE else "error"] += 1
        if not pending.future.done():
            pending.future.set_result(kind is codec.LineKind.DONE)

    # --- writing ---------------------------------------------------------------------------

    def _submit(self, line: str) -> _Pending:
        check_queued(line)
        conn = self._conn
        if conn is None or conn.closed:
            raise SpeakerUnavailable("no ExaBGP API connection")
        if not conn.pending:
            conn.last_progress = time.monotonic()
        pending = _Pending(line=line, future=asyncio.get_running_loop().create_future())
        conn.pending.append(pending)
        conn.writer.write(line.encode("ascii") + b"\n")
        return pending

    async def _drain(self) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            raise SpeakerUnavailable("no ExaBGP API connection")
        try:
            await conn.writer.drain()
        except (ConnectionError, OSError) as exc:
            self._drop(conn, reason=f"write error: {exc}")
            raise SpeakerUnavailable(f"ExaBGP API write failed: {exc}") from exc

    async def _wait(self, pending: _Pending) -> bool:
        """Wait for the ack; ExaBGP counts as hung after ``ack_timeout`` without any ack."""
        while True:
            conn = self._conn
            try:
                return await asyncio.wait_for(asyncio.shield(pending.future), self.ack_timeout)
            except TimeoutError:
                if conn is None or conn.closed:
                    continue  # the future is failed by _drop
                idle = time.monotonic() - conn.last_progress
                if idle >= self.ack_timeout:
                    self.acks["timeout"] += 1
                    logger.warning(
                        "exabgp ack timeout", extra={"seconds": round(idle, 1), "op": pending.line[:80]}
                    )
                    self._drop(conn, reason=f"no ack for {idle:.1f} s")
                    if self._on_hung is not None:
                        self._on_hung()

    async def command(self, line: str) -> list[str]:
        """Send one queued-kind command; return the text it produced (``show`` output).

        Raises CommandRejected on ``error``, SpeakerUnavailable when the channel goes away or
        ExaBGP stays silent, ValueError for a line that may not be sent."""
        pending = self._submit(line)
        await self._drain()
        if not await self._wait(pending):
            raise CommandRejected(line)
        return pending.output

    async def send_many(self, lines: Sequence[str], *, window: int) -> BatchResult:
        """Pipeline ``lines`` with at most ``window`` unacknowledged, sending one more per ack."""
        for line in lines:
            check_queued(line)
        acks: list[bool] = []
        inflight: deque[_Pending] = deque()
        try:
            for line in lines:
                while len(inflight) >= window:
                    acks.append(await self._wait(inflight.popleft()))
                inflight.append(self._submit(line))
                await self._drain()
            while inflight:
                acks.append(await self._wait(inflight.popleft()))
        except SpeakerUnavailable:
            collecting = True
            for pending in inflight:  # acks that arrived before the loss still count, in order
                if not pending.future.done() or pending.future.cancelled():
                    collecting = False
                elif pending.future.exception() is not None:
                    collecting = False  # failed by _drop (exception now marked as retrieved)
                elif collecting:
                    acks.append(pending.future.result())
            return BatchResult(acks=tuple(acks), interrupted=True)
        return BatchResult(acks=tuple(acks), interrupted=False)
