"""EIPs from a YAML or JSON file, followed live with inotify.

File format (see ``config/eips.example.yaml``)::

    eips:
      - ip: 203.0.113.10
      - ip: 2001:db8::10
        communities: ["65000:10"]
        large_communities: ["65000:1:2"]
        med: 10
        local_preference: 200
        as_path_prepend: 2

The format is chosen by content: a file whose first non-blank character is ``{`` or ``[``
is read as JSON, anything else as YAML. Communities are validated exactly like the
``announce`` section of the speaker config.

Behaviour:

- Every entry becomes a candidate whose origin is ``file:<name>[<index>]``. An entry that
  is wrong (bad address, bad community, wrong type, unknown key) becomes a refusal that
  names the field and the value; the other entries keep working.
- A file that cannot be used at all (unreadable, not YAML/JSON, top level not a mapping,
  no ``eips`` list, an unknown top-level key) keeps the LAST GOOD snapshot and sets
  ``error``: the speaker keeps announcing what it announced. ``eips: []`` is the way to
  ask for nothing; an empty or truncated file is an error, never a mass withdrawal.
- A file missing at start leaves the source unsynced (``synced=False``) with an error,
  so nothing is withdrawn before a first good load.
- The file's DIRECTORY is watched (inotify, no polling), so in-place writes, editor
  saves, atomic ``write tmp + rename``, delete + recreate and the Kubernetes ConfigMap
  volume's ``..data`` symlink swap are all seen. Only events for the file's name or
  ``..data`` cause a re-read, and the trigger is pulled only when the parsed content
  changed (or on the first good load).
- ``fresh_at``: while the watch is running and the last read succeeded, the view is
  current by construction, so the snapshot reports the time it is taken; otherwise the
  time of the last good read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asyncinotify import Inotify, Mask

from bgp_speaker.adapters.filesource.parsing import EntryMemo, parse
from bgp_speaker.aiokit import Backoff, Trigger
from bgp_speaker.core.model import Candidate, Refusal
from bgp_speaker.errors import SourceError
from bgp_speaker.ports import SourceSnapshot

logger = logging.getLogger(__name__)

#: Name Kubernetes gives the symlink it swaps atomically in a ConfigMap/Secret volume.
CONFIGMAP_DATA_LINK = "..data"

_WATCH_MASK = (
    Mask.CLOSE_WRITE
    | Mask.MOVED_TO
    | Mask.MOVED_FROM
    | Mask.CREATE
    | Mask.DELETE
    | Mask.ATTRIB
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.ONLYDIR
)


def load_file(path: Path) -> SourceSnapshot:
    """Read the file once (for a config check): its snapshot, with ``error`` set if unusable."""
    source = FileSource(path)
    source.reload()
    return source.snapshot()


@dataclass(frozen=True, slots=True)
class _Good:
    candidates: tuple[Candidate, ...]
    refusals: tuple[Refusal, ...]
    loaded_at: float


class FileSource:
    """A :class:`~bgp_speaker.ports.CandidateSource` backed by one file."""

    name = "file"

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._good: _Good | None = None
        self._error: str | None = None
        self._watching = False
        self._reads = 0
        self._changes = 0
        self._memo = EntryMemo()

    def snapshot(self) -> SourceSnapshot:
        details: dict[str, object] = {
            "path": str(self.path),
            "watching": self._watching,
            "reads": self._reads,
            "changes": self._changes,
        }
        good = self._good
        if good is None:
            return SourceSnapshot(synced=False, error=self._error, details=details)
        details["loaded_at"] = good.loaded_at
        fresh = self._clock() if self._watching and self._error is None else good.loaded_at
        return SourceSnapshot(
            candidates=good.candidates,
            refusals=good.refusals,
            synced=True,
            fresh_at=fresh,
            error=self._error,
            details=details,
        )

    def reload(self) -> bool:
        """Read the file now. Returns True when the candidates or refusals changed, or on
        the first good load; on failure keep the last good view and record the error."""
        self._reads += 1
        try:
            try:
                text = self.path.read_bytes().decode("utf-8-sig")
            except OSError as exc:
                raise SourceError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
            except UnicodeDecodeError as exc:
                raise SourceError(f"{self.path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
            candidates, refusals = parse(text, where=str(self.path), name=self.path.name, memo=self._memo)
        except SourceError as exc:
            if str(exc) != self._error:
                logger.warning(
                    "EIP file unusable, keeping the last good view",
                    extra={"source": self.name, "path": str(self.path), "reason": str(exc)},
                )
            self._error = str(exc)
            return False
        if self._error is not None:
            logger.info("EIP file usable again", extra={"source": self.name, "path": str(self.path)})
        self._error = None
        previous = self._good
        self._good = _Good(candidates=candidates, refusals=refusals, loaded_at=self._clock())
        if previous is not None and (previous.candidates, previous.refusals) == (candidates, refusals):
            return False
        self._changes += 1
        logger.info(
            "EIP file loaded",
            extra={
                "source": self.name,
                "path": str(self.path),
                "candidates": len(candidates),
                "refused": len(refusals),
            },
        )
        for refusal in refusals:
            logger.warning(
                "EIP file entry refused",
                extra={"source": self.name, "origin": refusal.origin, "reason": refusal.reason},
            )
        return True

    def _relevant(self, name: Path | None, mask: Mask) -> bool:
        if mask & (Mask.Q_OVERFLOW | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.IGNORED):
            return True
        if name is None:
            return False
        text = str(name)
        if text == CONFIGMAP_DATA_LINK:
            return bool(mask & Mask.MOVED_TO)
        if text != self.path.name:
            return False
        if mask & Mask.CREATE:
            # A new regular file is read at CLOSE_WRITE, once complete; a new symlink has
            # no CLOSE_WRITE, so it is read now.
            return self.path.is_symlink()
        return True

    async def run(self, *, trigger: Trigger) -> None:
        """Watch the directory forever; re-read on relevant events. If the directory
        cannot be watched (missing, removed), retry with back-off."""
        directory = self.path.parent
        backoff = Backoff(initial=0.5, maximum=30.0)
        while True:
            try:
                with Inotify() as inotify:
                    inotify.add_watch(directory, _WATCH_MASK)
                    # Watch first, then read: no change can slip between the two.
                    self._watching = True
                    if self.reload():
                        trigger.pull(self.name)
                    backoff.reset()
                    async for event in inotify:
                        if self._relevant(event.name, event.mask) and self.reload():
                            trigger.pull(self.name)
                        if event.mask & Mask.IGNORED:
                            raise SourceError(f"{directory}: the watched directory went away")
            except (OSError, SourceError) as exc:
                reason = str(exc) if isinstance(exc, SourceError) else f"{directory}: cannot watch: {exc}"
                self._error = reason
                logger.warning(
                    "EIP file watch lost, retrying",
                    extra={"source": self.name, "path": str(self.path), "reason": reason},
                )
            finally:
                self._watching = False
            await asyncio.sleep(backoff.next_delay())
