"""A plain ExaBGP process with a static config in a lab namespace (no bgp_speaker code involved).

Runs as ``nobody:nogroup`` with the environment the sidecar uses (CLI pipes off, log to stdout).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.lab.netns import LabError, Netns

RUN_AS = ("nobody", "nogroup")
BASE_ENV = {
    "exabgp_daemon_user": "nobody",
    "exabgp_api_cli": "false",
    "exabgp_log_destination": "stdout",
}


@dataclass(frozen=True)
class StaticRoute:
    prefix: str
    next_hop: str
    attributes: str = ""  # e.g. "community [ 65000:100 ] med 10"


def render_config(
    *,
    peer: str,
    local_address: str,
    local_as: int,
    peer_as: int,
    routes: Sequence[StaticRoute] = (),
    hold_time: int = 9,
    password: str | None = None,
    families: Sequence[str] = ("ipv4 unicast", "ipv6 unicast"),
    extra: str = "",
) -> str:
    lines = [
        f"neighbor {peer} {{",
        f"  router-id {local_address};",
        f"  local-address {local_address};",
        f"  local-as {local_as};",
        f"  peer-as {peer_as};",
        f"  hold-time {hold_time};",
        "  passive false;",
    ]
    if password:
        lines.append(f'  md5-password "{password}";')
    lines.append("  family { " + " ".join(f"{f};" for f in families) + " }")
    if routes:
        lines.append("  static {")
        lines += [f"    route {r.prefix} next-hop {r.next_hop} {r.attributes}".rstrip() + ";" for r in routes]
        lines.append("  }")
    if extra:
        lines.append(extra)
    lines.append("}")
    return "\n".join(lines) + "\n"


class ExaBgp:
    """``exabgp server <config>`` in ``ns``; output goes to ``<workdir>/exabgp.log``."""

    def __init__(
        self,
        ns: Netns,
        *,
        executable: Path,
        config: str,
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.ns = ns
        self.executable = executable
        self.workdir = workdir or ns.lab.tmpdir(f"exabgp-{ns.short}")
        self.config_path = self.workdir / "exabgp.conf"
        self.log_path = self.workdir / "exabgp.log"
        self.config = config
        self.env = {**BASE_ENV, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ExaBgp:
        self.config_path.write_text(self.config)
        self.config_path.chmod(0o644)
        user, group = RUN_AS
        self.proc = self.ns.popen(
            [str(self.executable), "server", str(self.config_path)],
            env=self.env,
            user=user,
            group=group,
            stdout=self.log_path.open("wb"),
        )
        return self

    def check_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise LabError(f"exabgp is not running (exit {code}):\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.ns.lab.stop_process(self.proc)
            self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
