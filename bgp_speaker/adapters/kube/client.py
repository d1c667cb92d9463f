"""Building the official client's configuration, and translating its errors.

Order: an explicit kubeconfig from the settings; otherwise the in-cluster service account
(``KUBERNETES_SERVICE_HOST`` set); otherwise ``$KUBECONFIG`` / ``~/.kube/config``.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from bgp_speaker.errors import ConfigError


def load_configuration(
    kubeconfig: Path | None, *, environ: Mapping[str, str] | None = None
) -> client.Configuration:
    """A fresh client Configuration. Raises ConfigError when no cluster can be found."""
    env = os.environ if environ is None else environ
    cfg = client.Configuration()
    # The loaders are untyped in the client; name their shape once here.
    load_kube: Callable[..., None] = config.load_kube_config
    load_incluster: Callable[..., None] = config.load_incluster_config
    try:
        if kubeconfig is not None:
            load_kube(config_file=str(kubeconfig), client_configuration=cfg)
        elif env.get("KUBERNETES_SERVICE_HOST"):
            load_incluster(client_configuration=cfg)
        else:
            load_kube(config_file=env.get("KUBECONFIG") or None, client_configuration=cfg)
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        where = str(kubeconfig) if kubeconfig else "in-cluster / $KUBECONFIG"
        raise ConfigError(
            f"source.kubernetes: cannot load the Kubernetes client config ({where}): {exc}"
        ) from None
    # We retry ourselves, with back-off and a view of staleness; urllib3 must not hide failures.
    cfg.retries = 0
    return cfg


def describe(exc: BaseException) -> str:
    """One short line for logs, status and ``SourceSnapshot.error``."""
    if isinstance(exc, client.ApiException):
        reason = (exc.reason or "").strip().splitlines()[0] if exc.reason else ""
        return f"API server answered {exc.status} {reason}".strip()
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return f"cannot reach the API server: {exc.reason}"
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return f"connection to the API server failed: {exc}"
    return f"{type(exc).__name__}: {exc}"


def retry_after(exc: BaseException, *, limit: float = 60.0) -> float | None:
    """Seconds the server asked us to wait (429/503 ``Retry-After``), if any."""
    headers = getattr(exc, "headers", None) if isinstance(exc, client.ApiException) else None
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        seconds = parsed.timestamp() - time.time()
    return max(0.0, min(limit, seconds))
