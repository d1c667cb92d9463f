"""The Kubernetes API server double inside a lab namespace, for the real daemon running there.

In production the NAT gateway pod reaches the API server over its API attachment. In the lab the
daemon runs in the gateway's network namespace, and the double (``tests.kubeapi``) runs in the test
process: its listening socket is created inside the gateway's namespace (a socket keeps the
namespace it was created in), so the daemon talks to ``127.0.0.1:<port>`` of its own namespace and
no traffic leaves the namespaces of the lab.

- :func:`netns_socket` / :func:`serve_in_netns`: the socket part (``setns`` in a short-lived thread).
- :class:`KubeApi`: the double on its own event-loop thread, driven from blocking test code
  (:meth:`KubeApi.call` for the double's in-process API, :meth:`KubeApi.run` for coroutines such as
  the scripted Kube-OVN controller), with a kubeconfig for the daemon.

Route changes at the core are followed with ``tests.lab.routemonitor.RouteMonitor``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tests.kubeapi import ApiServer
from tests.kubeapi import kubeovn as ko
from tests.lab.netns import Netns

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
F_SETPIPE_SZ = 1031
Obj = dict[str, Any]


def netns_socket(netns: str, host: str, port: int, *, backlog: int = 128) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening inside the network namespace ``netns``.

    ``setns`` only moves the calling thread, so it happens in a thread made for this and ended
    right after: the test process itself never changes namespace.
    """
    result: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
            result.append(sock)
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=make, name=f"netns-socket-{netns}", daemon=True)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def serve_in_netns(server: ApiServer, ns: Netns | str, *, port: int = 0) -> int:
    """Start ``server`` with its listening socket in ``ns``; returns the port.

    :meth:`ApiServer.come_up` after :meth:`ApiServer.go_down` listens in the same namespace again.
    """
    name = ns.name if isinstance(ns, Netns) else ns
    server.socket_factory = functools.partial(netns_socket, name)
    await server.start(port)
    return server.port


class KubeApi:
    """The API server double on its own event-loop thread, listening in ``ns``.

    Blocking test code drives it with :meth:`call` (a plain function run on the loop: the store
    and the watches are not thread-safe) and :meth:`run` (a coroutine, e.g. of :attr:`controller`,
    the scripted kube-ovn-controller). Use as a context manager, or :meth:`start` / :meth:`close`.
    """

    def __init__(self, ns: Netns, *, bookmark_interval: float | None = 1.0, timeout: float = 30.0) -> None:
        self.ns = ns
        self.timeout = timeout
        self.server = ApiServer(bookmark_interval=bookmark_interval)
        self.controller = ko.Controller(self.server)
        self.kubeconfig = ns.lab.tmpdir(f"kube-{ns.short}") / "kubeconfig"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=f"kubeapi-{ns.short}", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def __enter__(self) -> KubeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> KubeApi:
        self._thread.start()
        self.run(serve_in_netns(self.server, self.ns))
        self.server.write_kubeconfig(self.kubeconfig)
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.run(self.server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    # --- running things on the loop -------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def invoke() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(invoke)
        return future.result(self.timeout)

    # --- conveniences -----------------------------------------------------------------------------

    def source_config(self, *, gateway: str, **settings: Any) -> dict[str, Any]:
        """The daemon's ``source`` section for this API server (``settings``: kubernetes keys)."""
        return {
            "kind": "kubernetes",
            "kubernetes": {"gateway_name": gateway, "kubeconfig": str(self.kubeconfig), **settings},
        }

    def get(self, plural: str, name: str) -> Obj:
        return self.call(self.server.get, plural, name)

    def set_ready(self, plural: str, name: str, ready: bool) -> float:
        """One ``status.ready`` write, as the controller does it; returns the wall-clock time just
        before the write (the earliest moment a watcher could learn of it)."""

        def write() -> float:
            at = time.time()
            self.server.patch(plural, name, {"status": {"ready": ready}}, status=True)
            return at

        return self.call(write)

    def go_down(self) -> None:
        self.run(self.server.go_down())

    def come_up(self) -> None:
        self.run(self.server.come_up())

    def events(self, *, kind: str = "IptablesEIP", name: str | None = None) -> list[Obj]:
        """Kubernetes Events posted about objects of ``kind`` (cluster-scoped: namespace default)."""
        return [
            e
            for e in self.call(self.server.list, "events", "default")
            if e.get("involvedObject", {}).get("kind") == kind
            and (name is None or e["involvedObject"].get("name") == name)
        ]
