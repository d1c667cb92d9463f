"""List+watch of one cluster-scoped ``kubeovn.io/v1`` resource, in a thread.

The official client is synchronous, so each resource gets one daemon thread that loops:

1. **list** (only when it has no resourceVersion: at start and after 410 Gone); the items
   replace the previous ones in one step, so a relist never shows an empty view;
2. **watch** from that resourceVersion with ``allowWatchBookmarks`` and a server-side
   ``timeoutSeconds``; every ``ADDED``/``MODIFIED``/``DELETED`` object and every
   ``BOOKMARK`` advances the resourceVersion;
3. the server ending the watch (its timeout) is normal: watch again at once, from the
   last resourceVersion;
4. ``ERROR`` 410 (or a 410 answer) means the resourceVersion was compacted: relist;
5. any other failure (refused connection, cut stream, read timeout, 5xx) is reported and
   retried after a jittered back-off; ``Retry-After`` is honoured.

The stream is read with the client's own API call (``watch=True``, ``_preload_content=False``)
and decoded line by line here, so that the moment the stream is established is known (for
staleness) and ``BOOKMARK``/``ERROR`` are handled explicitly. Everything found is handed to
the event loop through ``post`` (``loop.call_soon_threadsafe``); the thread owns no state the
loop reads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client

from bgp_speaker.adapters.kube import client as kclient
from bgp_speaker.aiokit import Backoff

logger = logging.getLogger(__name__)

GROUP, VERSION = "kubeovn.io", "v1"
Obj = dict[str, Any]


class Sink(Protocol):
    """Loop-side receiver of what a watcher finds (called on the event loop only)."""

    def replaced(self, plural: str, items: list[Obj], resource_version: str) -> None: ...

    def changed(self, plural: str, kind: str, obj: Obj) -> None: ...

    def connected(self, plural: str) -> None: ...

    def bookmark(self, plural: str) -> None: ...

    def failed(self, plural: str, error: str, *, expired: bool = False) -> None: ...

    def malformed(self, plural: str, detail: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Timing:
    #: Server-side watch timeout; the server ends the stream and we watch again.
    watch_timeout: int = 300
    connect_timeout: float = 5.0
    #: Extra read timeout beyond ``watch_timeout`` before a silent stream counts as dead.
    read_slack: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class _Expired(Exception):
    pass


def _well_formed(obj: object) -> str | None:
    """None when the object can be stored; otherwise what is wrong with it."""
    if not isinstance(obj, dict):
        return f"not an object ({type(obj).__name__})"
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        return "no metadata.name"
    return None


class Watcher:
    def __init__(
        self,
        api: client.CustomObjectsApi,
        plural: str,
        *,
        post: Callable[[Callable[[], None]], None],
        sink: Sink,
        field_selector: str | None = None,
        timing: Timing = Timing(),
    ) -> None:
        self.api = api
        self.plural = plural
        self.field_selector = field_selector
        self.timing = timing
        self._post = post
        self._sink = sink
        self._stop = threading.Event()
        self._response: Any = None
        self._lock = threading.Lock()
        self._outbox: list[Callable[[], None]] = []
        self._drain_scheduled = False
        self.thread = threading.Thread(target=self._main, name=f"kube-watch-{plural}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to end, and cut its open stream so a blocked read returns now."""
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            try:
                shutdown = getattr(response, "shutdown", None)
                if shutdown is not None:
                    shutdown()
                response.close()
            except Exception:  # closing from another thread may race with the reader
                logger.debug("closing the watch stream raised", extra={"resource": self.plural})

    # --- thread side ----------------------------------------------------------------------------

    def _emit(self, call: Callable[[], None]) -> None:
        """Queue ``call`` for the loop. One loop callback drains everything queued meanwhile,
        so a burst of events costs the loop one wake-up, not one per event."""
        if self._stop.is_set():
            return
        with self._lock:
            self._outbox.append(call)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        try:
            self._post(self._drain)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self._stop.set()

    def _drain(self) -> None:
        """Loop side: run every queued call, in order."""
        with self._lock:
            calls, self._outbox = self._outbox, []
            self._drain_scheduled = False
        for call in calls:
            call()

    def _main(self) -> None:
        backoff = Backoff(initial=self.timing.backoff_initial, maximum=self.timing.backoff_max)
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                    backoff.reset()
                version, healthy = self._watch(version)
                if healthy:
                    backoff.reset()
                continue
            except _Expired:
                version = None
                self._emit(
                    lambda: self._sink.failed(self.plural, "resourceVersion expired (410 Gone)", expired=True)
                )
                continue
            except client.ApiException as exc:
                if exc.status == 410:
                    version = None
                    self._emit(
                        lambda: self._sink.failed(
                            self.plural, "resourceVersion expired (410 Gone)", expired=True
                        )
                    )
                    continue
                error, delay = kclient.describe(exc), kclient.retry_after(exc)
            except Exception as exc:  # every transport failure: urllib3, socket, bad JSON body
                if self._stop.is_set():
                    break
                error, delay = kclient.describe(exc), None
            wait = max(backoff.next_delay(), delay or 0.0)
            self._emit(lambda e=error: self._sink.failed(self.plural, e))  # type: ignore[misc]
            logger.warning(
                "watch failed; retrying",
                extra={"resource": self.plural, "reason": error, "delay": round(wait, 2)},
            )
            self._stop.wait(wait)

    def _request(self, **kwargs: Any) -> Any:
        return self.api.list_cluster_custom_object(
            GROUP,
            VERSION,
            self.plural,
            field_selector=self.field_selector,
            _preload_content=False,
            **kwargs,
        )

    def _list(self) -> str:
        response = self._request(_request_timeout=(self.timing.connect_timeout, 60.0))
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        version = str(body["metadata"]["resourceVersion"])
        items: list[Obj] = []
        for item in body.get("items") or []:
            problem = _well_formed(item)
            if problem is None:
                items.append(item)
            else:
                self._emit(lambda p=problem: self._sink.malformed(self.plural, f"list: {p}"))  # type: ignore[misc]
        self._emit(lambda: self._sink.replaced(self.plural, items, version))
        return version

    def _lines(self, response: Any) -> Iterator[bytes]:
        buffer = b""
        for chunk in response.stream(amt=None, decode_content=False):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield line

    def _watch(self, version: str) -> tuple[str, bool]:
        """Stream events until the server ends the watch. Returns (version, healthy)."""
        started = time.monotonic()
        response = self._request(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.timing.watch_timeout,
            _request_timeout=(
                self.timing.connect_timeout,
                self.timing.watch_timeout + self.timing.read_slack,
            ),
        )
        with self._lock:
            self._response = response
        if self._stop.is_set():
            response.close()
        self._emit(lambda: self._sink.connected(self.plural))
        delivered = False
        try:
            for line in self._lines(response):
                version = self._handle(line, version)
                delivered = True
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
        return version, delivered or time.monotonic() - started >= 5.0

    def _handle(self, line: bytes, version: str) -> str:
        try:
            event = json.loads(line)
            kind, obj = event["type"], event["object"]
        except (ValueError, KeyError, TypeError):
            self._emit(lambda: self._sink.malformed(self.plural, f"undecodable watch line: {line[:120]!r}"))
            return version
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                raise _Expired
            message = obj.get("message", "") if isinstance(obj, dict) else str(obj)
            raise client.ApiException(status=code or 500, reason=f"watch error: {message}")
        new_version = version
        if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
            new_version = str(obj["metadata"].get("resourceVersion") or version)
        if kind == "BOOKMARK":
            self._emit(lambda: self._sink.bookmark(self.plural))
            return new_version
        problem = _well_formed(obj)
        if kind not in ("ADDED", "MODIFIED", "DELETED") or problem is not None:
            detail = f"{kind} event: {problem or 'unknown event type'}"
            self._emit(lambda: self._sink.malformed(self.plural, detail))
            return new_version
        self._emit(lambda: self._sink.changed(self.plural, kind, obj))
        return new_version
