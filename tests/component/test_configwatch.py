"""The ConfigMap/Secret follower with the REAL official client against the HTTP API server double."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bgp_speaker.adapters.kube import Timing, load_configuration
from bgp_speaker.adapters.kube.configwatch import ConfigWatch, pod_namespace
from tests.kubeapi import ApiServer
from tests.polling import eventually

NS = "kube-system"
CM = "bgp-speaker"
SECRET = "bgp-speaker-passwords"
PASSWORD = "s3cret-core-password"


def configmap(data: dict[str, str], *, name: str = CM) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": data,
    }


def secret(values: dict[str, str], *, name: str = SECRET) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


@dataclass
class Harness:
    api: ApiServer
    watch: ConfigWatch
    secrets: Path
    changes: list[dict[str, str] | None] = field(default_factory=list)

    def on_change(self) -> None:
        self.changes.append(self.watch.data())


def new_watch(api: ApiServer, tmp_path: Path) -> ConfigWatch:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    return ConfigWatch(
        client_config=load_configuration(kubeconfig),
        namespace=NS,
        timing=Timing(backoff_initial=0.05, backoff_max=0.5, watch_timeout=60),
    )


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[Harness]:
    api = await ApiServer(bookmark_interval=0.5).start()
    try:
        yield Harness(api=api, watch=new_watch(api, tmp_path), secrets=tmp_path / "secrets")
    finally:
        await api.stop()


async def start(h: Harness) -> asyncio.Task[None]:
    await asyncio.to_thread(h.watch.fetch)
    task = asyncio.create_task(h.watch.run(on_change=h.on_change))
    await eventually(lambda: h.watch.status()["configmap"]["connected"], what="ConfigMap watch connected")
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_namespace_from_env_then_service_account_file_then_kube_system(tmp_path: Path) -> None:
    file = tmp_path / "namespace"
    assert pod_namespace({"POD_NAMESPACE": "gw-ns"}, namespace_file=file) == "gw-ns"
    file.write_text("sa-ns\n")
    assert pod_namespace({}, namespace_file=file) == "sa-ns"
    assert pod_namespace({}, namespace_file=tmp_path / "missing") == "kube-system"


async def test_missing_configmap_is_none_and_not_an_error(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        task = await start(h)
        try:
            assert h.watch.data() is None
            status = h.watch.status()
            assert status["configmap"]["found"] is False
            assert status["configmap"]["error"] is None
            assert status["secret"] is None
        finally:
            await stop(task)


async def test_first_read_writes_password_files_before_anything_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(tmp_path) as h:
        h.api.create(secret({"core": PASSWORD}), namespace=NS)
        h.api.create(
            configmap(
                {
                    "defaults.yaml": "announce: {med: 5}\n",
                    "passwords-secret": SECRET,
                    "passwords-path": str(h.secrets),
                }
            ),
            namespace=NS,
        )
        await asyncio.to_thread(h.watch.fetch)
        assert h.watch.data() == {
            "defaults.yaml": "announce: {med: 5}\n",
            "passwords-secret": SECRET,
            "passwords-path": str(h.secrets),
        }
        file = h.secrets / "core"
        assert file.read_text() == PASSWORD
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert stat.S_IMODE(h.secrets.stat().st_mode) == 0o700
        status = h.watch.status()
        assert status["secret"]["files"] == ["core"]
        assert PASSWORD not in repr(status)
        assert PASSWORD not in caplog.text


async def test_changes_are_followed_by_name_only(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        h.api.create(configmap({"defaults.yaml": "announce: {med: 1}\n"}), namespace=NS)
        task = await start(h)
        try:
            assert h.changes == []
            h.api.patch("configmaps", CM, {"data": {"defaults.yaml": "announce: {med: 2}\n"}}, namespace=NS)
            await eventually(lambda: h.changes, what="the change")
            assert h.changes[-1] == {"defaults.yaml": "announce: {med: 2}\n"}
            # another ConfigMap of the namespace is not ours: no notification
            h.api.create(configmap({"defaults.yaml": "x: 1"}, name="other"), namespace=NS)
            h.api.patch("configmaps", CM, {"metadata": {"labels": {"a": "b"}}}, namespace=NS)
            await eventually(
                lambda: h.watch.version == h.api.get("configmaps", CM, NS)["metadata"]["resourceVersion"]
            )
            assert len(h.changes) == 1, "a change without new data, or another ConfigMap, is not news"
            h.api.delete("configmaps", CM, namespace=NS)
            await eventually(lambda: len(h.changes) == 2, what="the deletion")
            assert h.changes[-1] is None
        finally:
            await stop(task)


async def test_secret_named_later_then_rotated_then_key_removed(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        h.api.create(configmap({"defaults.yaml": "{}"}), namespace=NS)
        h.api.create(secret({"core": PASSWORD, "backup": "second-one"}), namespace=NS)
        task = await start(h)
        try:
            h.api.patch(
                "configmaps",
                CM,
                {"data": {"passwords-secret": SECRET, "passwords-path": str(h.secrets)}},
                namespace=NS,
            )
            await eventually(lambda: (h.secrets / "backup").exists(), what="files of the newly named Secret")
            assert (h.secrets / "core").read_text() == PASSWORD
            before = len(h.changes)
            rotated = base64.b64encode(b"rotated-password").decode()
            h.api.patch("secrets", SECRET, {"data": {"core": rotated}}, namespace=NS)
            await eventually(lambda: (h.secrets / "core").read_text() == "rotated-password", what="rotation")
            await eventually(lambda: len(h.changes) > before, what="a notification after the files changed")
            h.api.patch("secrets", SECRET, {"data": {"backup": None}}, namespace=NS)
            await eventually(lambda: not (h.secrets / "backup").exists(), what="the removed key's file gone")
            assert h.watch.status()["secret"]["files"] == ["core"]
            # no Secret any more: its files go
            h.api.patch("configmaps", CM, {"data": {"passwords-secret": None}}, namespace=NS)
            await eventually(
                lambda: not (h.secrets / "core").exists(), what="files removed with the reference"
            )
        finally:
            await stop(task)


async def test_api_outage_keeps_the_last_data_and_reports_it(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        h.api.create(configmap({"defaults.yaml": "announce: {med: 1}\n"}), namespace=NS)
        task = await start(h)
        try:
            await h.api.go_down()
            await eventually(lambda: h.watch.status()["configmap"]["error"], what="the error reported")
            assert h.watch.data() == {"defaults.yaml": "announce: {med: 1}\n"}
            assert h.changes == []
            h.api.patch("configmaps", CM, {"data": {"defaults.yaml": "announce: {med: 3}\n"}}, namespace=NS)
            await h.api.come_up()
            await eventually(lambda: h.changes, what="the change made during the outage")
            assert h.changes[-1] == {"defaults.yaml": "announce: {med: 3}\n"}
            await eventually(lambda: h.watch.status()["configmap"]["error"] is None, what="error cleared")
        finally:
            await stop(task)


async def test_first_read_failure_is_reported_not_raised(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        await h.api.go_down()
        await asyncio.to_thread(h.watch.fetch)
        status = h.watch.status()["configmap"]
        assert status["found"] is None
        assert status["error"]
        assert h.watch.data() is None
