"""Shared pieces of the router runners: base class, neighbor spec, route and peer records, polling."""

from __future__ import annotations

import abc
import ipaddress
import logging
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Self, TypeVar

from tests.lab.netns import LabError, Netns

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RouterError(LabError):
    """A router did not start, did not become ready, or answered something we cannot parse."""


@dataclass(frozen=True)
class Neighbor:
    """One BGP neighbor of a router running in the lab.

    ``passive`` routers only accept the connection (the core router's role); active ones connect out
    (the speaker's role). ``local_address`` binds the session to one of the router's addresses.
    """

    address: str
    remote_as: int
    password: str | None = None
    hold_time: int = 9
    ipv4: bool = True
    ipv6: bool = True
    passive: bool = True
    local_address: str | None = None
    multihop: bool = False

    @property
    def ident(self) -> str:
        """A name usable as a BIRD protocol name: ``n_10_99_0_11``."""
        return "n_" + re.sub(r"[^0-9A-Za-z]", "_", self.address)

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class Route:
    """One path a router learned: prefix, next hop and the attributes tests compare."""

    prefix: str
    next_hop: str | None
    peer: str | None = None
    as_path: tuple[int, ...] = ()
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    origin: str | None = None
    best: bool = True


@dataclass(frozen=True)
class PeerState:
    """Session state of one neighbor. ``since`` changes whenever the session (re)establishes or drops."""

    address: str
    state: str
    established: bool
    since: str
    info: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def wait_for(
    predicate: Callable[[], T | Literal[False] | None],
    *,
    timeout: float,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    ``None`` and ``False`` mean "not yet", so ``lambda: cond and value`` returns ``value``.

    Raises :class:`TimeoutError` after ``timeout`` seconds; exceptions of the predicate propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def kernel_routes(
    ns: Netns, *, family: int = 4, proto: str | None = None, table: str = "main"
) -> dict[str, str]:
    """Routes of ``ns`` as ``{prefix: gateway}`` from ``ip -j route show``.

    Host routes appear with their length (``203.0.113.10/32``). A route without a gateway maps to
    ``"dev <ifname>"``; a multipath route maps to its gateways joined by ``,``.
    """
    argv = [f"-{family}", "route", "show", "table", table]
    if proto is not None:
        argv += ["proto", proto]
    result: dict[str, str] = {}
    for entry in ns.ip_json(*argv):
        dst = str(entry["dst"])
        if dst != "default" and "/" not in dst:
            dst = f"{dst}/{32 if family == 4 else 128}"
        if "gateway" in entry:
            result[dst] = str(entry["gateway"])
        elif "nexthops" in entry:
            result[dst] = ",".join(str(h.get("gateway", h.get("dev", ""))) for h in entry["nexthops"])
        else:
            result[dst] = f"dev {entry.get('dev', '')}"
    return result


class RouterRunner(abc.ABC):
    """What every router runner shares: a namespace, a work directory, daemons started in order.

    A subclass names itself (:attr:`kind`, which also names the work directory), its main daemon
    (:attr:`daemon`, the one :attr:`proc` gives) and its config file (:attr:`config_name`), and provides
    :meth:`render` (the config text), :meth:`_launch` (start the daemons with :meth:`_spawn`),
    :meth:`_answers` (the daemon answers queries) and :meth:`peer_state`. :meth:`start` writes the config,
    launches and waits until the daemons answer; any of them exiting meanwhile raises
    :class:`RouterError` with the tail of the logs.

    Every ``*.log`` and ``*.out`` file of the work directory is a log: each daemon's output goes to
    ``<name>.out``.
    """

    kind: ClassVar[str]
    daemon: ClassVar[str]
    config_name: ClassVar[str]
    start_timeout: ClassVar[float] = 20.0

    def __init__(
        self,
        ns: Netns,
        *,
        router_id: str,
        local_as: int,
        neighbors: Sequence[Neighbor] = (),
        workdir: Path | None = None,
    ) -> None:
        self.ns = ns
        self.router_id = router_id
        self.local_as = local_as
        self.neighbors = list(neighbors)
        self.workdir = workdir or ns.lab.tmpdir(f"{self.kind}-{ns.short}")
        self.config_path = self.workdir / self.config_name
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The main daemon's process, once started."""
        return self.procs.get(self.daemon)

    @abc.abstractmethod
    def render(self) -> str:
        """The text of :attr:`config_path`."""

    @abc.abstractmethod
    def _launch(self, *, timeout: float) -> None:
        """Start the daemons (config already written); waits for what a later daemon depends on."""

    @abc.abstractmethod
    def _answers(self) -> bool:
        """True once the main daemon answers queries."""

    @abc.abstractmethod
    def peer_state(self, address: str) -> PeerState:
        """Session state of the neighbor ``address``."""

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, *, timeout: float | None = None) -> Self:
        """Write the config, start the daemons and wait until they answer (``start_timeout`` by default)."""
        timeout = self.start_timeout if timeout is None else timeout
        self.config_path.write_text(self.render())
        self._launch(timeout=timeout)
        wait_for(self._ready, timeout=timeout, message=f"{self.daemon} in {self.ns.short} ready")
        logger.info("router started", extra={"op": "start", "router": self.kind, "netns": self.ns.name})
        return self

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        """Start one daemon in the namespace, its output to ``<workdir>/<name>.out``."""
        with (self.workdir / f"{name}.out").open("wb") as out:
            self.procs[name] = self.ns.popen(argv, stdout=out)

    def _check_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RouterError(f"{name} exited with {proc.returncode}: {self.log_tail()}")

    def _ready(self) -> bool:
        self._check_running()
        return self._answers()

    def stop(self) -> None:
        """Stop the daemons, the last started first."""
        for name in reversed(list(self.procs)):
            self.ns.lab.stop_process(self.procs.pop(name))

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of every log in the work directory, each under its file name."""
        paths = sorted(self.workdir.glob("*.log")) + sorted(self.workdir.glob("*.out"))
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in paths
        )

    # -- queries ---------------------------------------------------------------------------------------

    def wait_established(self, address: str, *, timeout: float = 30.0) -> PeerState:
        return wait_for(
            lambda: (s := self.peer_state(address)).established and s,
            timeout=timeout,
            message=f"{self.kind} session with {address} Established",
        )
