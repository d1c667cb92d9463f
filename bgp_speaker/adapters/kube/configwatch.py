"""Follow the speaker's ConfigMap, and the password Secret it names, through the API.

Kube-OVN builds the gateway pod, so nothing of ours can be mounted into it: both objects are
read with the official client, by name only (``fieldSelector=metadata.name=<name>``), which is
all the chart's Role grants (get/list/watch with ``resourceNames``). Each one is followed by a
:class:`bgp_speaker.adapters.kube.watching.Watcher` thread (list, watch, 410 relist, back-off).

- The ConfigMap (default ``bgp-speaker``) lives in the pod's namespace: env ``POD_NAMESPACE``,
  else the service account's namespace file, else ``kube-system``. Its ``data`` is handed to the
  app as is; the app merges and validates it. A missing ConfigMap is an empty one.
- ``passwords-secret`` in the ConfigMap names a Secret in the same namespace; each of its keys
  is written as a 0600 file under ``passwords-path`` (default ``/run/bgp-speaker/secrets``, a
  0700 directory; :mod:`bgp_speaker.adapters.kube.secretfiles`) before the app hears of the
  change, so ``peers[].password_file`` can point there. Files of keys that disappear are
  removed. Values are never logged or shown.

API errors never stop anything: the last data seen stays in force, the error is in
:meth:`ConfigWatch.status`, and the watch retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from kubernetes import client

from bgp_speaker.adapters.kube import client as kclient
from bgp_speaker.adapters.kube import secretfiles, watching

logger = logging.getLogger(__name__)

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "kube-system"
DEFAULT_CONFIGMAP = "bgp-speaker"
SECRET_NAME_KEY = "passwords-secret"
SECRET_PATH_KEY = "passwords-path"
DEFAULT_SECRETS_PATH = Path("/run/bgp-speaker/secrets")
CONFIGMAPS, SECRETS = "configmaps", "secrets"


def pod_namespace(environ: Mapping[str, str], *, namespace_file: Path = NAMESPACE_FILE) -> str:
    """The namespace the pod runs in (where its ConfigMap and Secret are)."""
    namespace = environ.get("POD_NAMESPACE", "").strip()
    if namespace:
        return namespace
    try:
        namespace = namespace_file.read_text(encoding="utf-8").strip()
    except OSError:
        namespace = ""
    return namespace or DEFAULT_NAMESPACE


class _NamedWatcher(watching.Watcher):
    """List+watch of one namespaced core object by name: the shared watch loop, with the
    request of :class:`client.CoreV1Api` instead of the custom-objects one."""

    def __init__(
        self, api: client.CoreV1Api, plural: str, *, namespace: str, name: str, **kwargs: Any
    ) -> None:
        # The base class only hands ``api`` to _request, which is replaced here.
        super().__init__(cast(Any, api), plural, field_selector=f"metadata.name={name}", **kwargs)
        self.core = api
        self.namespace = namespace
        self.name = name

    def _request(self, **kwargs: Any) -> Any:
        call = (
            self.core.list_namespaced_config_map
            if self.plural == CONFIGMAPS
            else self.core.list_namespaced_secret
        )
        return call(self.namespace, field_selector=self.field_selector, _preload_content=False, **kwargs)


class _Followed:
    """What is known of one followed object."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.found: bool | None = None  # None: not read yet
        self.resource_version: str | None = None
        self.connected = False
        self.error: str | None = None
        self.watcher: _NamedWatcher | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "found": self.found,
            "resource_version": self.resource_version,
            "connected": self.connected,
            "error": self.error,
        }


class ConfigWatch:
    """Follows the ConfigMap and its Secret; ``on_change`` is called on the event loop after
    the ConfigMap data or the password files changed."""

    def __init__(
        self,
        *,
        client_config: client.Configuration,
        namespace: str,
        configmap: str = DEFAULT_CONFIGMAP,
        timing: watching.Timing | None = None,
    ) -> None:
        self.namespace = namespace
        self._client_config = client_config
        self._timing = timing or watching.Timing()
        self._api = client.CoreV1Api(client.ApiClient(client_config))
        self._configmap = _Followed(configmap)
        self._secret: _Followed | None = None
        self._data: dict[str, str] | None = None
        self._secrets_path: Path | None = None
        self._files = secretfiles.PasswordFiles()
        self._on_change: Callable[[], None] | None = None
        self._post: Callable[[Callable[[], None]], None] | None = None

    # --- what the app reads ---------------------------------------------------------------------

    @property
    def configmap_name(self) -> str:
        return self._configmap.name

    def data(self) -> dict[str, str] | None:
        """The ConfigMap's data as last seen; None when there is none (or not read yet)."""
        return dict(self._data) if self._data is not None else None

    @property
    def version(self) -> str | None:
        return self._configmap.resource_version

    def status(self) -> dict[str, Any]:
        secret: dict[str, Any] | None = None
        if self._secret is not None:
            secret = {
                **self._secret.as_dict(),
                "path": str(self._secrets_path),
                "files": self._files.names,
                "write_error": self._files.error,
            }
        return {"namespace": self.namespace, "configmap": self._configmap.as_dict(), "secret": secret}

    # --- the first read, before the daemon starts ---------------------------------------------

    def fetch(self) -> None:
        """Read the ConfigMap and its Secret once (blocking; run it in a thread). Errors are
        recorded in the status and logged; the watch started by :meth:`run` catches up."""
        obj = self._get(self._configmap, self._api.read_namespaced_config_map)
        if self._configmap.found is not None:
            self._configmap_seen(obj, notify=False)
        if self._secret is not None:
            secret = self._get(self._secret, self._api.read_namespaced_secret)
            if self._secret.found is not None:
                self._secret_seen(secret, notify=False)

    def _get(self, followed: _Followed, call: Callable[..., Any]) -> watching.Obj | None:
        timeout = (self._timing.connect_timeout, 10.0)
        try:
            response = call(followed.name, self.namespace, _preload_content=False, _request_timeout=timeout)
            try:
                body: watching.Obj = json.loads(response.data)
            finally:
                response.release_conn()
        except client.ApiException as exc:
            if exc.status == 404:
                followed.found, followed.error = False, None
                return None
            followed.error = kclient.describe(exc)
        except Exception as exc:  # transport failures of every kind
            followed.error = kclient.describe(exc)
        else:
            followed.found, followed.error = True, None
            return body
        logger.warning(
            "cannot read the live configuration; starting without it, the watch retries",
            extra={"object": f"{self.namespace}/{followed.name}", "reason": followed.error},
        )
        return None

    # --- following (loop side) -----------------------------------------------------------------

    async def run(self, *, on_change: Callable[[], None]) -> None:
        """Watch until cancelled; ``on_change`` runs on this loop."""
        loop = asyncio.get_running_loop()
        self._on_change = on_change

        def post(call: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(call)

        self._post = post
        self._start(self._configmap, CONFIGMAPS)
        if self._secret is not None:
            self._start(self._secret, SECRETS)
        logger.info(
            "following the live configuration",
            extra={"object": f"{self.namespace}/{self._configmap.name}", "host": self._client_config.host},
        )
        try:
            await asyncio.Event().wait()
        finally:
            watchers = [f.watcher for f in (self._configmap, self._secret) if f is not None and f.watcher]
            for watcher in watchers:
                watcher.stop()
            await asyncio.to_thread(_join, watchers)

    def _start(self, followed: _Followed, plural: str) -> None:
        if self._post is None:
            return
        followed.watcher = _NamedWatcher(
            self._api,
            plural,
            namespace=self.namespace,
            name=followed.name,
            post=self._post,
            sink=self,
            timing=self._timing,
        )
        followed.watcher.start()

    def _followed(self, plural: str) -> _Followed | None:
        return self._configmap if plural == CONFIGMAPS else self._secret

    # watching.Sink

    def replaced(self, plural: str, items: list[watching.Obj], resource_version: str) -> None:
        followed = self._followed(plural)
        if followed is None:
            return
        mine = [o for o in items if o["metadata"]["name"] == followed.name]
        self._seen(plural, mine[0] if mine else None)

    def changed(self, plural: str, kind: str, obj: watching.Obj) -> None:
        followed = self._followed(plural)
        if followed is None or obj["metadata"]["name"] != followed.name:
            return
        self._seen(plural, None if kind == "DELETED" else obj)

    def connected(self, plural: str) -> None:
        followed = self._followed(plural)
        if followed is not None:
            if followed.error is not None:
                logger.info("live configuration watch re-established", extra={"resource": plural})
            followed.connected, followed.error = True, None

    def bookmark(self, plural: str) -> None:
        return None

    def failed(self, plural: str, error: str, *, expired: bool = False) -> None:
        followed = self._followed(plural)
        if followed is not None:
            followed.connected = False
            if not expired:
                followed.error = error

    def malformed(self, plural: str, detail: str) -> None:
        logger.warning("skipped a malformed object", extra={"resource": plural, "reason": detail})

    def _seen(self, plural: str, obj: watching.Obj | None) -> None:
        if plural == CONFIGMAPS:
            self._configmap_seen(obj, notify=True)
        else:
            self._secret_seen(obj, notify=True)

    def _configmap_seen(self, obj: watching.Obj | None, *, notify: bool) -> None:
        followed = self._configmap
        followed.found = obj is not None
        followed.resource_version = _resource_version(obj)
        raw = obj.get("data") if obj is not None else None
        data = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else None
        if obj is not None and data is None:
            data = {}
        secret_name = (data or {}).get(SECRET_NAME_KEY, "").strip() or None
        path_text = (data or {}).get(SECRET_PATH_KEY, "").strip()
        secrets_path = Path(path_text) if path_text else DEFAULT_SECRETS_PATH
        current = self._secret.name if self._secret is not None else None
        files_changed = False
        if secret_name != current or (secret_name and secrets_path != self._secrets_path):
            files_changed = self._follow_secret(secret_name, secrets_path)
        if data == self._data and not files_changed:
            return
        self._data = data
        if notify:
            self._notify()

    def _follow_secret(self, name: str | None, path: Path) -> bool:
        """Switch to another Secret (or path, or none); True when password files changed."""
        if self._secret is not None and self._secret.watcher is not None:
            self._secret.watcher.stop()
        changed = self._files.remove(keep=set())
        self._secret = _Followed(name) if name else None
        self._secrets_path = path if name else None
        if self._secret is not None:
            logger.info(
                "passwords come from a Secret",
                extra={"object": f"{self.namespace}/{self._secret.name}", "path": str(path)},
            )
            self._start(self._secret, SECRETS)
        return changed

    def _secret_seen(self, obj: watching.Obj | None, *, notify: bool) -> None:
        followed, path = self._secret, self._secrets_path
        if followed is None or path is None:
            return
        followed.found = obj is not None
        followed.resource_version = _resource_version(obj)
        values = secretfiles.decode(obj.get("data") if obj is not None else None, secret=followed.name)
        if self._files.write(path, values) and notify:
            self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change()


def _resource_version(obj: watching.Obj | None) -> str | None:
    if obj is None:
        return None
    version = obj.get("metadata", {}).get("resourceVersion")
    return str(version) if version is not None else None


def _join(watchers: list[_NamedWatcher]) -> None:
    deadline = time.monotonic() + 5.0
    for watcher in watchers:
        watcher.thread.join(max(0.0, deadline - time.monotonic()))
