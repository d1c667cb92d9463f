"""A Kubernetes API server double that speaks real HTTP, for the official client.

Routes (JSON only, no auth)::

    /api/v1/{plural}                                  list / watch across namespaces
    /api/v1/namespaces/{ns}/{plural}[/{name}]         namespaced core kinds
    /apis/{group}/{version}/{plural}[/{name}[/status]]   cluster-scoped custom kinds
    /apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/status]]

Lists carry ``metadata.resourceVersion``; ``?watch=1`` streams newline-delimited JSON events
(``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``/``ERROR``) from the given resourceVersion,
or synthetic ``ADDED`` events for the current state when none is given, honouring
``labelSelector``, ``fieldSelector``, ``allowWatchBookmarks`` and ``timeoutSeconds``.
A compacted resourceVersion yields an ``ERROR`` event carrying a 410 ``Status`` (and a 410
response for a list with ``resourceVersionMatch=Exact``), as kube-apiserver does.

Test controls: :meth:`ApiServer.drop_watches`, :meth:`ApiServer.compact`,
:meth:`ApiServer.go_down` / :meth:`ApiServer.come_up` / :meth:`ApiServer.outage`,
:meth:`ApiServer.send_bookmarks`, and :attr:`ApiServer.requests` (a Counter of
``(verb, plural)``). Objects can be driven in-process with :meth:`create`, :meth:`apply`,
:meth:`patch`, :meth:`delete`, or over HTTP with any client.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.kubeapi.store import ApiError, Change, Obj, ResourceType, Store, field_matcher, label_matcher

_Ns = "{ns}"


class _Watch:
    def __init__(self, rtype: ResourceType, namespace: str | None, match: Any) -> None:
        self.rtype = rtype
        self.namespace = namespace
        self.match = match
        self.queue: asyncio.Queue[Obj | None] = asyncio.Queue()
        self.drop = asyncio.Event()

    def offer(self, change: Change) -> None:
        if change.rtype != self.rtype:
            return
        ns = change.obj["metadata"].get("namespace", "")
        if self.namespace is not None and ns != self.namespace:
            return
        event = _event_for(change, self.match)
        if event is not None:
            self.queue.put_nowait(event)


def _event_for(change: Change, match: Any) -> Obj | None:
    """Filter one change through a watch's selectors, as the watch cache does."""
    now_in = change.type != "DELETED" and match(change.obj)
    was_in = change.old is not None and match(change.old)
    if change.type == "DELETED":
        return {"type": "DELETED", "object": change.obj} if was_in else None
    if now_in:
        return {"type": "MODIFIED" if was_in else "ADDED", "object": change.obj}
    if was_in:
        return {"type": "DELETED", "object": change.obj}
    return None


class ApiServer:
    def __init__(
        self,
        *,
        bookmark_interval: float | None = None,
        host: str = "127.0.0.1",
        socket_factory: Callable[[str, int], socket.socket] | None = None,
    ) -> None:
        self.store = Store()
        self.host = host
        #: Makes the bound listening socket for (host, port), e.g. inside another network namespace.
        self.socket_factory = socket_factory
        self.port = 0
        self.bookmark_interval = bookmark_interval
        self.requests: Counter[tuple[str, str]] = Counter()
        self.down = False
        self._watches: set[_Watch] = set()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.base_events.Server | None = None
        self.store.listeners.add(self._broadcast)

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, port: int = 0) -> ApiServer:
        app = web.Application(middlewares=[self._count])
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            for ns in ("/namespaces/{ns}", ""):
                app.router.add_route("*", f"{prefix}{ns}/{{plural}}", self._collection)
                app.router.add_route("*", f"{prefix}{ns}/{{plural}}/{{name}}", self._item)
                app.router.add_route("*", f"{prefix}{ns}/{{plural}}/{{name}}/{{sub}}", self._item)
        app.router.add_get("/version", self._version)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await self._listen(port)
        return self

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        if self.socket_factory is not None:
            sock = self.socket_factory(self.host, port)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
        self.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._runner.server, sock=sock)  # type: ignore[arg-type]
        self.down = False

    async def stop(self) -> None:
        await self.go_down()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def go_down(self) -> None:
        """Stop accepting connections and cut every open one (watches included)."""
        self.down = True
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_watches()
        if self._runner is not None and self._runner.server is not None:
            for conn in list(self._runner.server.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        await asyncio.sleep(0)

    async def come_up(self) -> None:
        """Listen again on the same port."""
        await self._listen(self.port)

    async def outage(self, seconds: float) -> None:
        await self.go_down()
        await asyncio.sleep(seconds)
        await self.come_up()

    def drop_watches(self) -> None:
        """Cut every open watch mid-stream (the connection is aborted, no clean end)."""
        for watch in list(self._watches):
            watch.drop.set()

    def compact(self) -> None:
        """Forget history: the next watch from any resourceVersion held now gets 410 Gone."""
        self.store.compact()

    def inject(self, plural: str, event: Any) -> None:
        """Send a raw event (any JSON, even malformed) to every open watch of ``plural``."""
        for watch in list(self._watches):
            if watch.rtype.plural == plural:
                watch.queue.put_nowait(event)

    def send_bookmarks(self) -> None:
        for watch in list(self._watches):
            watch.queue.put_nowait(self._bookmark(watch.rtype))

    def open_watches(self, plural: str | None = None) -> int:
        return sum(1 for w in self._watches if plural is None or w.rtype.plural == plural)

    def count(self, verb: str | None = None, plural: str | None = None) -> int:
        return sum(
            n
            for (v, p), n in self.requests.items()
            if (verb is None or v == verb) and (plural is None or p == plural)
        )

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "nobody", "user": {}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "nobody"}}],
            "current-context": "double",
        }
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    # --- in-process API -------------------------------------------------------------------------

    def create(self, obj: Obj, *, namespace: str = "", keep_status: bool = True) -> Obj:
        """Create as a client would; ``keep_status`` also stores the status in the same write."""
        return self.store.create(self._rtype_of(obj), obj, namespace=namespace, keep_status=keep_status)

    def apply(self, obj: Obj) -> Obj:
        """Create or replace the whole object (spec, metadata and status) in one write."""
        rtype = self._rtype_of(obj)
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rtype.namespaced else ""
        if (rtype.plural, ns, meta["name"]) in self.store.objects:
            body = copy.deepcopy(obj)
            body["metadata"].pop("resourceVersion", None)
            return self.store.replace(rtype, meta["name"], body, namespace=ns, subresource="all")
        return self.store.create(rtype, obj, namespace=ns, keep_status=True)

    def get(self, plural: str, name: str, namespace: str = "") -> Obj:
        return copy.deepcopy(self.store.get(self.store.rtype(plural), name, namespace))

    def list(self, plural: str, namespace: str | None = None) -> list[Obj]:
        return copy.deepcopy(self.store.items(self.store.rtype(plural), namespace))

    def patch(self, plural: str, name: str, patch: Obj, *, namespace: str = "", status: bool = False) -> Obj:
        return self.store.patch(
            self.store.rtype(plural),
            name,
            patch,
            content_type="application/merge-patch+json",
            namespace=namespace,
            subresource="status" if status else "all",
        )

    def delete(self, plural: str, name: str, *, namespace: str = "") -> Obj:
        return self.store.delete(self.store.rtype(plural), name, namespace=namespace)

    def _rtype_of(self, obj: Obj) -> ResourceType:
        for rtype in self.store.types.values():
            if rtype.kind == obj.get("kind") and rtype.api_version == obj.get("apiVersion"):
                return rtype
        raise ApiError(404, "NotFound", f"no resource for {obj.get('apiVersion')}/{obj.get('kind')}")

    # --- HTTP -----------------------------------------------------------------------------------

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        plural = request.match_info.get("plural", request.path)
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(request.method)
        if verb is None:
            if "name" in request.match_info:
                verb = "get"
            else:
                verb = "watch" if request.query.get("watch") in ("1", "true") else "list"
        self.requests[(verb, plural)] += 1
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0-double"})

    def _resolve(self, request: web.Request) -> tuple[ResourceType, str | None]:
        info = request.match_info
        rtype = self.store.rtype(info["plural"])
        group = info.get("group", "")
        if group != rtype.group or info["version"] != rtype.version:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({request.path})"
            )
        ns = info.get("ns")
        if ns is not None and not rtype.namespaced:
            raise ApiError(404, "NotFound", f"{rtype.plural} is not namespaced")
        return rtype, ns

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        rtype, ns = self._resolve(request)
        if request.method == "GET":
            if request.query.get("watch") in ("1", "true"):
                return await self._watch(request, rtype, ns)
            return self._list(request, rtype, ns)
        if request.method == "POST":
            if rtype.namespaced and ns is None:
                raise ApiError(405, "MethodNotAllowed", "create needs a namespace")
            obj = self.store.create(rtype, await request.json(), namespace=ns or "")
            return web.json_response(obj, status=201)
        raise ApiError(405, "MethodNotAllowed", f"{request.method} not allowed on a collection")

    async def _item(self, request: web.Request) -> web.StreamResponse:
        rtype, ns = self._resolve(request)
        name, sub = request.match_info["name"], request.match_info.get("sub", "")
        if sub not in ("", "status") or (sub == "status" and not rtype.status_subresource):
            raise ApiError(404, "NotFound", f"no subresource {sub!r}")
        namespace = ns or ""
        if request.method == "GET":
            return web.json_response(self.store.get(rtype, name, namespace))
        if request.method == "PUT":
            return web.json_response(
                self.store.replace(rtype, name, await request.json(), namespace=namespace, subresource=sub)
            )
        if request.method == "PATCH":
            patched = self.store.patch(
                rtype,
                name,
                await request.json(),
                content_type=request.content_type,
                namespace=namespace,
                subresource=sub,
            )
            return web.json_response(patched)
        if request.method == "DELETE":
            return web.json_response(self.store.delete(rtype, name, namespace=namespace))
        raise ApiError(405, "MethodNotAllowed", f"{request.method} not allowed")

    def _matcher(self, request: web.Request) -> Any:
        labels = label_matcher(request.query.get("labelSelector"))
        fields = field_matcher(request.query.get("fieldSelector"))
        return lambda obj: labels(obj) and fields(obj)

    def _list(self, request: web.Request, rtype: ResourceType, ns: str | None) -> web.Response:
        rv = request.query.get("resourceVersion")
        exact = request.query.get("resourceVersionMatch") == "Exact"
        if rv and rv != "0" and exact and int(rv) < self.store.oldest_rv:
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.store.oldest_rv})")
        match = self._matcher(request)
        items = sorted(
            (o for o in self.store.items(rtype, ns) if match(o)),
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )
        body = {
            "apiVersion": rtype.api_version,
            "kind": f"{rtype.kind}List",
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": items,
        }
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    def _bookmark(self, rtype: ResourceType) -> Obj:
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": rtype.kind,
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
            },
        }

    def _broadcast(self, change: Change) -> None:
        for watch in list(self._watches):
            watch.offer(change)

    async def _watch(self, request: web.Request, rtype: ResourceType, ns: str | None) -> web.StreamResponse:
        match = self._matcher(request)
        watch = _Watch(rtype, ns, match)
        rv_text = request.query.get("resourceVersion", "")
        bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true")
        timeout = float(request.query.get("timeoutSeconds", "0") or 0) or None
        backlog: list[Obj] = []
        if rv_text in ("", "0"):
            backlog = [{"type": "ADDED", "object": o} for o in self.store.items(rtype, ns) if match(o)]
        else:
            try:
                changes = self.store.changes_since(rtype, int(rv_text))
            except ApiError as exc:
                backlog = [{"type": "ERROR", "object": exc.status()}]
            else:
                for change in changes:
                    if ns is None or change.obj["metadata"].get("namespace", "") == ns:
                        event = _event_for(change, match)
                        if event is not None:
                            backlog.append(event)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if backlog and backlog[0]["type"] == "ERROR":
            await response.write(json.dumps(backlog[0]).encode() + b"\n")
            await response.write_eof()
            return response
        self._watches.add(watch)
        try:
            for event in backlog:
                await response.write(json.dumps(event).encode() + b"\n")
            async for event in self._events(watch, timeout=timeout, bookmarks=bookmarks):
                await response.write(json.dumps(event).encode() + b"\n")
        except ConnectionError:
            return response
        finally:
            self._watches.discard(watch)
        if watch.drop.is_set():
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response

    async def _events(self, watch: _Watch, *, timeout: float | None, bookmarks: bool) -> AsyncIterator[Obj]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not watch.drop.is_set():
            wait = None if deadline is None else deadline - loop.time()
            if bookmarks and self.bookmark_interval is not None:
                wait = self.bookmark_interval if wait is None else min(wait, self.bookmark_interval)
            if wait is not None and wait <= 0:
                return
            getter = asyncio.ensure_future(watch.queue.get())
            dropper = asyncio.ensure_future(watch.drop.wait())
            done, _ = await asyncio.wait({getter, dropper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in (getter, dropper):
                if task not in done:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if getter in done:
                event = getter.result()
                unwanted_bookmark = (
                    isinstance(event, dict) and event.get("type") == "BOOKMARK" and not bookmarks
                )
                if event is None or unwanted_bookmark:
                    continue
                yield event
            elif (
                not done
                and bookmarks
                and self.bookmark_interval is not None
                and (deadline is None or loop.time() < deadline)
            ):
                yield self._bookmark(watch.rtype)
