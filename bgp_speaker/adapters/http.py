"""The health, status and metrics endpoint (aiohttp), and the ``status`` command's client.

No business logic: every answer comes from a callable the composition root passes in.

=========  ====================================================================
GET path   answer
=========  ====================================================================
/healthz   200 ``ok`` or 503 with the reasons, ``text/plain``
/readyz    200 ``ready`` or 503 ``not ready``, reasons and notes, ``text/plain``
/status    the status document, ``application/json`` (``?pretty=1`` indents it)
/metrics   Prometheus text exposition (OpenMetrics when the scraper asks for it)
=========  ====================================================================

The server is embedded with ``AppRunner``/``TCPSite`` and never installs signal
handlers: the application owns SIGTERM.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from bgp_speaker import errors
from bgp_speaker.core.health import Verdict

logger = logging.getLogger(__name__)

StatusFn = Callable[[], Mapping[str, Any]]
VerdictFn = Callable[[], Verdict]


@dataclass(frozen=True, slots=True)
class _Endpoints:
    registry: CollectorRegistry
    status: StatusFn
    liveness: VerdictFn
    readiness: VerdictFn


ENDPOINTS = web.AppKey("endpoints", _Endpoints)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port). Port 0 picks a free port.

    Raises ``ConfigError`` naming the bad value.
    """
    text = listen.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise errors.ConfigError(f"http listen {listen!r}: expected [IPV6]:PORT")
        try:
            if ip_address(host).version != 6:
                raise ValueError(host)
        except ValueError:
            raise errors.ConfigError(f"http listen {listen!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise errors.ConfigError(f"http listen {listen!r}: expected HOST:PORT or [IPV6]:PORT")
        if ":" in host:
            raise errors.ConfigError(
                f"http listen {listen!r}: put an IPv6 address in brackets, [{host}]:PORT"
            )
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise errors.ConfigError(f"http listen {listen!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


def _verdict_text(headline: str, verdict: Verdict) -> str:
    lines = [headline]
    lines += [f"reason: {reason}" for reason in verdict.reasons]
    lines += [f"note: {note}" for note in verdict.notes]
    return "\n".join(lines) + "\n"


async def _healthz(request: web.Request) -> web.Response:
    verdict = request.app[ENDPOINTS].liveness()
    if not verdict.ok:
        logger.warning("liveness failed", extra={"op": "healthz", "reason": "; ".join(verdict.reasons)})
    return web.Response(
        text=_verdict_text("ok" if verdict.ok else "not ok", verdict), status=200 if verdict.ok else 503
    )


async def _readyz(request: web.Request) -> web.Response:
    verdict = request.app[ENDPOINTS].readiness()
    return web.Response(
        text=_verdict_text("ready" if verdict.ok else "not ready", verdict), status=200 if verdict.ok else 503
    )


def _dumps(document: object, *, pretty: bool = False) -> str:
    # Addresses, networks and enums are rendered with str(); the app should not send
    # other types, but a status page must not fail because of one.
    if pretty:
        return json.dumps(document, default=str, indent=2)
    return json.dumps(document, default=str, separators=(",", ":"))


async def _status(request: web.Request) -> web.Response:
    document = dict(request.app[ENDPOINTS].status())
    pretty = request.query.get("pretty", "") not in ("", "0", "false")
    return web.json_response(document, dumps=lambda d: _dumps(d, pretty=pretty))


async def _metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[ENDPOINTS].registry)
    # aiohttp's content_type= refuses parameters; the exposition type carries version and charset.
    return web.Response(body=body, headers={"Content-Type": content_type})


def make_app(
    *, registry: CollectorRegistry, status: StatusFn, liveness: VerdictFn, readiness: VerdictFn
) -> web.Application:
    """The aiohttp application alone (for embedding or for aiohttp's test client)."""
    app = web.Application()
    app[ENDPOINTS] = _Endpoints(registry=registry, status=status, liveness=liveness, readiness=readiness)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/status", _status)
    app.router.add_get("/metrics", _metrics)
    return app


class HttpServer:
    """The endpoint, embedded in the running event loop."""

    def __init__(
        self,
        *,
        listen: str,
        registry: CollectorRegistry,
        status: StatusFn,
        liveness: VerdictFn,
        readiness: VerdictFn,
    ) -> None:
        self._host, self._port = parse_listen(listen)
        self._app = make_app(registry=registry, status=status, liveness=liveness, readiness=readiness)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve. Raises ``ConfigError`` when the address cannot be bound."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise errors.ConfigError(f"http listen {self._host}:{self._port}: {exc.strerror or exc}") from exc
        self._runner = runner
        logger.info(
            "http endpoint listening", extra={"op": "listen", "host": self._host, "port": self.bound_port}
        )

    async def stop(self) -> None:
        """Stop serving; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def bound_port(self) -> int:
        """The port actually bound (useful with port 0). Raises ``RuntimeError`` before start."""
        if self._runner is None:
            raise RuntimeError("the http endpoint is not started")
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        raise RuntimeError("the http endpoint has no TCP socket")


def status_url(url: str) -> str:
    """A base URL (``http://host:port``) gets ``/status`` appended; a full URL is kept."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise errors.StatusUnavailable(f"{url!r} is not an http:// URL")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/status")
    return urlunsplit(parts)


async def fetch_status(url: str, *, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109 (aiohttp timeout)
    """GET the status document of a running speaker. Raises ``StatusUnavailable``."""
    target = status_url(url)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(target, headers={"Accept": "application/json"}) as response,
        ):
            if response.status != 200:
                raise errors.StatusUnavailable(
                    f"{target}: HTTP {response.status} {response.reason or ''}".strip()
                )
            text = await response.text()
    except TimeoutError as exc:
        raise errors.StatusUnavailable(f"{target}: no answer within {timeout:g}s") from exc
    except aiohttp.ClientError as exc:
        raise errors.StatusUnavailable(f"{target}: {exc}") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise errors.StatusUnavailable(f"{target}: the answer is not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise errors.StatusUnavailable(f"{target}: the answer is not a JSON object")
    return document


__all__ = ["ENDPOINTS", "HttpServer", "fetch_status", "make_app", "parse_listen", "status_url"]
