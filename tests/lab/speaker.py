"""Run the real ``bgp-speaker`` daemon inside a lab namespace, as production runs it in a
NAT gateway pod: its own process, its own config and EIP files, ExaBGP as its child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.lab.base import wait_for
from tests.lab.netns import Netns

HTTP_PORT = 10667


@dataclass
class SpeakerProcess:
    ns: Netns
    workdir: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def eips_path(self) -> Path:
        return self.workdir / "eips.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "speaker.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{HTTP_PORT}"

    @classmethod
    def create(
        cls,
        ns: Netns,
        *,
        local_as: int,
        peers: Sequence[Mapping[str, Any]],
        pools: Sequence[str],
        eips: Sequence[Mapping[str, Any]] = (),
        extra: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> SpeakerProcess:
        """``source``: the whole ``source`` section (e.g. ``kind: kubernetes``); default: the EIP file."""
        workdir = ns.lab.tmpdir(f"speaker-{ns.short}")
        config: dict[str, Any] = {
            "local_as": local_as,
            "peers": [dict(p) for p in peers],
            "pools": list(pools),
            "source": {"kind": "file", "file": {"path": str(workdir / "eips.yaml")}},
            "http": {"listen": f"127.0.0.1:{HTTP_PORT}"},
            "shutdown": {"drain_seconds": 0.5},
            "exabgp": {"runtime_dir": str(workdir / "run")},
            "logging": {"level": "DEBUG"},
        }
        if source is not None:
            config["source"] = dict(source)
        for key, value in (extra or {}).items():
            if isinstance(value, Mapping) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        speaker = cls(ns=ns, workdir=workdir, config=config, env=dict(env or {}))
        speaker.config_path.write_text(yaml.safe_dump(config))
        speaker.write_eips(eips)
        return speaker

    def write_eips(self, eips: Sequence[Mapping[str, Any]] | str) -> None:
        """Replace the EIP file atomically (write + rename), as a ConfigMap update does."""
        text = eips if isinstance(eips, str) else yaml.safe_dump({"eips": [dict(e) for e in eips]})
        tmp = self.eips_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.eips_path)

    def start(self) -> SpeakerProcess:
        log = self.log_path.open("ab")
        self.proc = self.ns.popen(
            [sys.executable, "-m", "bgp_speaker", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        self._wait(self._answers, timeout=30, what="the speaker to answer on its status endpoint")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"speaker exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            self.status()
        except AssertionError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        result = self.ns.run(
            [sys.executable, "-m", "bgp_speaker", "status", "--json", "--url", self.url, "--timeout", "3"],
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"status failed: {result.stderr.strip()}")
        return dict(json.loads(result.stdout))

    def status_text(self) -> str:
        return self.ns.run([sys.executable, "-m", "bgp_speaker", "status", "--url", self.url]).stdout

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 30.0
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> bool:
            nonlocal last
            try:
                last = self.status()
            except AssertionError:
                return False
            return predicate(last)

        try:
            wait_for(check, timeout=timeout, interval=0.1, message="the speaker status to match")
        except TimeoutError as exc:
            raise AssertionError(
                f"{exc}; last status: {json.dumps(last)[:4000]}\n{self.log_tail()}"
            ) from None
        return last

    def established(self, doc: Mapping[str, Any] | None = None) -> bool:
        doc = doc or self.status()
        return all(p["state"] == "established" for p in doc["peers"])

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, *, timeout: float = 30.0) -> int:
        """SIGTERM (graceful stop) and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.ns.lab.stop_process(self.proc)
            raise AssertionError(f"speaker did not stop within {timeout}s:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_log(self, text: str, *, timeout: float = 30.0) -> None:
        self._wait(
            lambda: text in self.log_path.read_text(errors="replace"), timeout=timeout, what=repr(text)
        )

    def _wait(self, predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
        try:
            wait_for(predicate, timeout=timeout, interval=0.1, message=what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- speaker log ---\n{self.log_tail()}") from None
