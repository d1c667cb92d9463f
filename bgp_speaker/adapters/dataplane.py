"""Read the NAT gateway's own tables: which EIPs have NAT rules installed right now.

The sidecar shares the gateway pod's network namespace, so the tables Kube-OVN's
``nat-gateway.sh`` writes are readable here with CAP_NET_ADMIN:

- the iptables nat chains, on the backend nat-gateway.sh uses: ``iptables-legacy`` when the legacy
  nat table holds the gateway's chains, otherwise the nf_tables backend (``iptables-nft``);
- the nftables table ``ip kube-ovn`` (share DNAT).

Changes are followed two ways. ``nft monitor`` reports every nf_tables change in the namespace
(iptables-nft rules and the kube-ovn table) and makes the next read immediate. A cheap periodic
read (``poll_seconds``) covers the legacy backend, which has no change notification, and anything
the monitor missed. Either way the trigger is pulled only when the parsed view changed.

Without CAP_NET_ADMIN every read fails with EPERM: the snapshot then says ``capable=False`` with the
reason, the app skips gating and shows it in /status, and it is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bgp_speaker.aiokit import Backoff, Trigger
from bgp_speaker.core import natrules
from bgp_speaker.core.natrules import NatView

logger = logging.getLogger(__name__)

LEGACY_SAVE = "iptables-legacy-save"
NFT_SAVE = "iptables-nft-save"
NFT = "nft"
CAP_NET_ADMIN = 12
#: Poll interval while the tables are unreadable (nothing to gain from reading faster).
INCAPABLE_POLL_SECONDS = 30.0
#: After a monitor event, wait this long for the rest of a burst (nat-gateway.sh runs several commands).
MONITOR_COALESCE_SECONDS = 0.05
_PERMISSION_MARKERS = ("permission denied", "operation not permitted", "you must be root")


@dataclass(frozen=True, slots=True)
class DataplaneSnapshot:
    """The current data-plane view and how trustworthy it is."""

    #: None until the first read; False when the tables cannot be read (see ``reason``).
    capable: bool | None = None
    reason: str | None = None
    #: ``legacy`` or ``nft`` (iptables backend holding the gateway's chains) or ``none``.
    backend: str | None = None
    #: The last good view; None when never read or not capable.
    view: NatView | None = None
    #: Wall-clock time of the last successful read.
    read_at: float | None = None
    #: The last read error other than missing capability (the view is then the last good one).
    error: str | None = None
    #: True while ``nft monitor`` is running and feeding change events.
    monitor: bool = False
    reads: int = 0
    #: Reads whose parsed view differed from the previous one.
    changes: int = 0
    #: CPU seconds spent by the reader processes (user + system) and by parsing, since start.
    cpu_seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "capable": self.capable,
            "reason": self.reason,
            "backend": self.backend,
            "read_at": self.read_at,
            "error": self.error,
            "monitor": self.monitor,
            "reads": self.reads,
            "changes": self.changes,
            "cpu_seconds": round(self.cpu_seconds, 4),
            "view": self.view.as_dict() if self.view is not None else None,
        }


@dataclass(frozen=True, slots=True)
class _Output:
    returncode: int
    stdout: str
    stderr: str
    #: The binary is not installed.
    missing: bool = False

    @property
    def denied(self) -> bool:
        text = self.stderr.lower()
        return self.returncode != 0 and any(marker in text for marker in _PERMISSION_MARKERS)

    def first_error_line(self) -> str:
        for line in self.stderr.splitlines():
            if line.strip() and not line.startswith("#"):
                return line.strip()
        return f"exit status {self.returncode}"


def has_net_admin(status: Path = Path("/proc/self/status")) -> bool | None:
    """Whether CAP_NET_ADMIN is in this process's effective set (None when unknown)."""
    try:
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


class DataplaneWatcher:
    """Follows the gateway's NAT tables; :meth:`snapshot` is always the latest view."""

    def __init__(
        self,
        *,
        poll_seconds: float,
        exec_prefix: Sequence[str] = (),
        read_timeout: float = 10.0,
        monitor: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``exec_prefix`` runs the readers elsewhere, e.g. ``("nsenter", "--net=/proc/1/ns/net")``;
        empty (the sidecar case) reads the current network namespace."""
        self._poll = poll_seconds
        self._prefix = tuple(exec_prefix)
        self._timeout = read_timeout
        self._use_monitor = monitor
        self._clock = clock
        self._snapshot = DataplaneSnapshot()
        self._backend_hint: str | None = None
        self._logged_capable: bool | None = None
        self._wake = asyncio.Event()

    def snapshot(self) -> DataplaneSnapshot:
        return self._snapshot

    # --- reading --------------------------------------------------------------------------

    async def _exec(self, *argv: str) -> _Output:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._prefix,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            return _Output(returncode=127, stdout="", stderr=f"{argv[0]}: not installed", missing=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self._timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return _Output(returncode=-1, stdout="", stderr=f"{argv[0]}: timed out after {self._timeout} s")
        return _Output(
            returncode=proc.returncode if proc.returncode is not None else -1,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
        )

    async def _read_iptables(self) -> tuple[str, natrules.IptablesNat | None, list[_Output]]:
        """Pick the backend the way nat-gateway.sh does and read its nat table."""
        failures: list[_Output] = []
        order = [LEGACY_SAVE, NFT_SAVE]
        if self._backend_hint == "nft":
            order.reverse()
        fallback: natrules.IptablesNat | None = None
        for binary in order:
            out = await self._exec(binary, "-t", "nat")
            if out.returncode != 0:
                failures.append(out)
                continue
            parsed = natrules.parse_iptables_save(out.stdout)
            if parsed.initialized:
                backend = "legacy" if binary == LEGACY_SAVE else "nft"
                self._backend_hint = backend
                return backend, parsed, failures
            fallback = fallback or parsed
        self._backend_hint = None
        return "none", fallback, failures

    async def _read_share(self) -> tuple[str, _Output | None]:
        out = await self._exec(NFT, "-j", "list", "table", "ip", natrules.NFT_TABLE)
        if out.returncode == 0:
            return out.stdout, None
        if "no such file or directory" in out.stderr.lower():
            return "", None  # the table does not exist: no share DNAT
        return "", out

    async def read(self) -> DataplaneSnapshot:
        """Read both tables once and update the snapshot."""
        before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        iptables_result, share_result = await asyncio.gather(self._read_iptables(), self._read_share())
        backend, parsed, failures = iptables_result
        share_text, share_failure = share_result
        all_failures = failures + ([share_failure] if share_failure is not None else [])
        started = time.process_time()
        snap = self._snapshot
        try:
            if parsed is None:
                raise _Unreadable(all_failures)
            view = natrules.build_view(
                backend=backend, iptables=parsed, share_dnat=natrules.parse_nft_share(share_text)
            )
        except _Unreadable as exc:
            snap = self._unreadable(snap, exc.failures)
        except natrules.NatParseError as exc:
            snap = replace(snap, error=f"cannot parse the NAT tables: {exc}")
        else:
            changed = snap.view is None or snap.view.digest() != view.digest()
            snap = replace(
                snap,
                capable=True,
                reason=None,
                backend=backend,
                view=view,
                read_at=self._clock(),
                error=share_failure.first_error_line() if share_failure is not None else None,
                changes=snap.changes + (1 if changed else 0),
            )
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (
            after_children.ru_utime
            - before_children.ru_utime
            + after_children.ru_stime
            - before_children.ru_stime
            + time.process_time()
            - started
        )
        self._snapshot = replace(snap, reads=snap.reads + 1, cpu_seconds=snap.cpu_seconds + cpu)
        self._log_capability()
        return self._snapshot

    def _unreadable(self, snap: DataplaneSnapshot, failures: list[_Output]) -> DataplaneSnapshot:
        if failures and all(f.denied or f.missing for f in failures):
            detail = "; ".join(dict.fromkeys(f.first_error_line() for f in failures))
            if any(f.denied for f in failures):
                caps = has_net_admin()
                cause = "CAP_NET_ADMIN is missing" if caps is False else "permission denied"
                reason = f"cannot read the gateway's NAT tables ({cause}): {detail}"
            else:
                reason = f"cannot read the gateway's NAT tables (tools not installed): {detail}"
            return replace(snap, capable=False, reason=reason, view=None, backend=None, error=None)
        detail = "; ".join(f.first_error_line() for f in failures) or "no output"
        return replace(snap, error=f"reading the NAT tables failed: {detail}")

    def _log_capability(self) -> None:
        capable = self._snapshot.capable
        if capable is None or capable == self._logged_capable:
            return
        self._logged_capable = capable
        if capable:
            view = self._snapshot.view
            logger.info(
                "data-plane NAT tables readable",
                extra={
                    "backend": self._snapshot.backend,
                    "installed": len(view.installed()) if view is not None else 0,
                    "initialized": view.initialized if view is not None else False,
                },
            )
        else:
            logger.warning(
                "data-plane NAT tables unreadable: gating falls back to Kubernetes state",
                extra={"reason": self._snapshot.reason},
            )

    # --- following ------------------------------------------------------------------------

    async def run(self, *, trigger: Trigger) -> None:
        """Read now, then on every monitor event and every poll; pull ``trigger`` on change."""
        monitor_task: asyncio.Task[None] | None = None
        try:
            while True:
                before = self._snapshot
                after = await self.read()
                if _differs(before, after):
                    trigger.pull("dataplane")
                if self._use_monitor and after.capable and (monitor_task is None or monitor_task.done()):
                    monitor_task = asyncio.create_task(self._monitor(), name="dataplane-monitor")
                interval = (
                    self._poll if after.capable is not False else max(self._poll, INCAPABLE_POLL_SECONDS)
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
                if self._wake.is_set():
                    await asyncio.sleep(MONITOR_COALESCE_SECONDS)
                    self._wake.clear()
        finally:
            if monitor_task is not None:
                monitor_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor_task

    async def _monitor(self) -> None:
        """Run ``nft monitor`` and wake the read loop on every line; restart it when it dies."""
        backoff = Backoff(initial=1.0, maximum=60.0)
        while self._snapshot.capable:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._prefix,
                    NFT,
                    "monitor",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            except FileNotFoundError:
                logger.info("nft not installed: following the NAT tables by polling only")
                return
            self._snapshot = replace(self._snapshot, monitor=True)
            self._wake.set()  # anything between the last read and the monitor start
            try:
                assert proc.stdout is not None
                async for _line in proc.stdout:
                    backoff.reset()
                    self._wake.set()
            finally:
                self._snapshot = replace(self._snapshot, monitor=False)
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            logger.info("nft monitor exited; restarting", extra={"op": "monitor", "code": proc.returncode})
            await asyncio.sleep(backoff.next_delay())


class _Unreadable(Exception):
    def __init__(self, failures: list[_Output]) -> None:
        super().__init__("unreadable")
        self.failures = failures


def _differs(before: DataplaneSnapshot, after: DataplaneSnapshot) -> bool:
    if before.capable != after.capable:
        return True
    old = before.view.digest() if before.view is not None else None
    new = after.view.digest() if after.view is not None else None
    return old != new
