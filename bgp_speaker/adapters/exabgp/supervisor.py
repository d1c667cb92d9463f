"""Run ExaBGP as our child: private runtime dir, unprivileged user, restart with back-off.

- the rendered config goes into a private runtime directory (0700; when we are root it is
  handed to the unprivileged user, whose ExaBGP must read it);
- ExaBGP never runs as root: when we are root the child drops to the configured user (its
  supplementary groups, primary group, then uid) before exec, and only then asks the kernel
  for SIGKILL when we die (PR_SET_PDEATHSIG; credential changes clear it), so ExaBGP never
  outlives the daemon;
- its stdout/stderr are forwarded line by line to our logger, secrets scrubbed;
- when it exits it is started again after a jittered back-off; every start after the first
  counts as a restart and calls ``on_restart``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bgp_speaker.adapters.exabgp import runtime
from bgp_speaker.aiokit import Backoff
from bgp_speaker.errors import ConfigError

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_WARNING_WORDS = (
    "error",
    "critical",
    "problem",
    "lost",
    "invalid",
    "failed",
    "could not",
    "refus",
    "too many",
)
_DEBUG_PREFIXES = ("welcome", "advice")
#: A run shorter than this does not reset the restart back-off.
STABLE_SECONDS = 30.0
#: What ExaBGP 5.0.15 logs at the end of a configuration reload (SIGUSR1), and when it refused one.
RELOAD_DONE = "loaded new configuration successfully"
RELOAD_FAILED = "could not load/reload configuration"


def exabgp_env(*, reactor_speed: float) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "exabgp_api_cli": "false",
        "exabgp_log_destination": "stdout",
        "exabgp_log_level": "INFO",
        "exabgp_log_statistics": "false",
        "exabgp_log_processes": "false",
        "exabgp_tcp_bind": "",
        "exabgp_api_ack": "true",
        "exabgp_tcp_attempts": "0",
        "exabgp_reactor_speed": f"{reactor_speed:g}",
        "exabgp_daemon_drop": "false",
    }


def _set_parent_death_signal(parent: int) -> None:
    """Runs in the child after the credential change, before exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)
    if os.getppid() != parent:  # we died before the prctl took effect
        os._exit(126)


def log_level_of(line: str) -> int:
    lowered = line.lower()
    if lowered.startswith(_DEBUG_PREFIXES):
        return logging.DEBUG
    if any(word in lowered for word in _WARNING_WORDS):
        return logging.WARNING
    return logging.INFO


class ExabgpSupervisor:
    def __init__(
        self,
        *,
        config_path: Path,
        command: Sequence[str] = (),
        owner: tuple[int, int] | None = None,
        reactor_speed: float = 1.0,
        restart_backoff_max: float = 30.0,
        secrets: Sequence[str] = (),
        on_start: Callable[[int], None] | None = None,
        on_restart: Callable[[int], None] | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.config_path = config_path
        self.command = tuple(command) or runtime.default_command()
        self.command_explicit = bool(command)
        self.owner = owner
        self.reactor_speed = reactor_speed
        self._backoff = Backoff(initial=0.5, maximum=restart_backoff_max)
        self.secrets = tuple(s for s in secrets if s)
        self._on_start = on_start
        self._on_restart = on_restart
        self._on_exit = on_exit
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self.restarts = 0
        self.starts = 0
        self.last_exit: int | None = None
        self._reload_waiters: list[asyncio.Future[bool]] = []
        self._series_start: float | None = time.time()  # not up yet: the first start is under way
        self._started_wall = 0.0

    def stopping(self) -> bool:
        return self._stopping

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def restarting_since(self) -> float | None:
        """Wall-clock start of the current series of (re)starts: set when ExaBGP exits after a
        stable run (or at creation), cleared once a run has lasted STABLE_SECONDS or on stop."""
        if self._stopping:
            return None
        if self.running and time.time() - self._started_wall >= STABLE_SECONDS:
            self._series_start = None
        if self.running:
            return None
        return self._series_start if self._series_start is not None else time.time()

    def _scrub(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, "REDACTED")
        return line

    async def _spawn(self) -> asyncio.subprocess.Process:
        parent = os.getpid()
        kwargs: dict[str, object] = {}
        if self.owner is not None:
            kwargs = {"user": self.owner[0], "group": self.owner[1], "extra_groups": []}
        argv = [*self.command, "server", str(self.config_path)]
        # user/group/extra_groups are applied in the child before preexec_fn runs, so the
        # parent-death signal is set after the credential change (which would clear it).
        try:
            return await self._exec(argv, parent, kwargs)
        except OSError as exc:
            who = f"uid {self.owner[0]}" if self.owner else "our user"
            raise ConfigError(
                f"cannot start ExaBGP ({argv[0]}) as {who}: {exc.strerror}; the interpreter and the "
                "exabgp package must be readable and executable by that user (exabgp.command, exabgp.user)"
            ) from exc

    async def _exec(
        self, argv: list[str], parent: int, kwargs: dict[str, object]
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=exabgp_env(reactor_speed=self.reactor_speed),
            cwd=str(self.config_path.parent),
            start_new_session=True,
            preexec_fn=lambda: _set_parent_death_signal(parent),
            **kwargs,  # type: ignore[arg-type]
        )

    async def _forward_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:
                continue
            if not raw:
                return
            line = self._scrub(raw.decode("utf-8", "replace").rstrip())
            if line:
                logger.log(log_level_of(line), "exabgp: %s", line, extra={"pid": proc.pid})
                self._reload_answer(line)

    async def run(self) -> None:
        """Keep ExaBGP running until :meth:`stop`."""
        while not self.stopping():
            proc = await self._spawn()
            self._proc = proc
            self.starts += 1
            self._started_wall = time.time()
            started = asyncio.get_running_loop().time()
            logger.info("exabgp started", extra={"pid": proc.pid, "starts": self.starts})
            if self.starts > 1:
                self.restarts += 1
                if self._on_restart is not None:
                    self._on_restart(self.restarts)
            if self._on_start is not None:
                self._on_start(proc.pid)
            try:
                await self._forward_output(proc)
                code = await proc.wait()
            except asyncio.CancelledError:
                await self._terminate(proc, grace=2.0)
                raise
            self.last_exit = code
            stable = asyncio.get_running_loop().time() - started > STABLE_SECONDS
            if stable or self._series_start is None:
                self._series_start = time.time()
            if self._on_exit is not None:
                self._on_exit(code)
            if self.stopping():
                break
            if stable:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            logger.warning("exabgp exited, restarting", extra={"code": code, "delay": round(delay, 2)})
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _terminate(self, proc: asyncio.subprocess.Process, *, grace: float) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            logger.warning("exabgp ignored SIGTERM, killing it", extra={"pid": proc.pid})
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def reload(self, *, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """Make the running ExaBGP re-read its configuration file (SIGUSR1) and wait until it
        logs the outcome. ExaBGP 5.0.15 then compares every neighbor with its previous definition
        (``Neighbor.__eq__``: the description is not compared): an unchanged neighbor keeps its
        session and its adj-rib-out; a changed one is torn down and re-established; one whose
        identity changed (peer address, local address, local AS, peer AS, router id) is removed
        and started anew with an empty adj-rib-out; the API process is not restarted.

        False when ExaBGP is not running (it reads the file when it starts), refused the file,
        or did not say within ``timeout``."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return False
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._reload_waiters.append(answer)
        try:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR1)
            async with asyncio.timeout(timeout):
                return await answer
        except TimeoutError:
            logger.warning("exabgp did not confirm the configuration reload", extra={"pid": proc.pid})
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._reload_waiters.remove(answer)

    def _reload_answer(self, line: str) -> None:
        if not self._reload_waiters or (RELOAD_DONE not in line and RELOAD_FAILED not in line):
            return
        for waiter in self._reload_waiters:
            if not waiter.done():
                waiter.set_result(RELOAD_DONE in line)

    def kill(self, reason: str) -> None:
        """SIGKILL the running ExaBGP (it is then restarted by :meth:`run`)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            logger.warning("killing exabgp", extra={"pid": proc.pid, "reason": reason})
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def stop(self, *, grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. No restart afterwards."""
        self._stopping = True
        self._wake.set()
        if self._proc is not None:
            await self._terminate(self._proc, grace=grace)
