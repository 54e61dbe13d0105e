"""A streaming source over one WebSocket, on the ``websockets`` library (alpaca, polygon).

``connect(symbols)`` opens the connection (with our own ping/pong keepalive: no
pong within ``ping_timeout_seconds`` while no frame arrives either closes the
connection as dead, "ping timeout"; a pong late behind a burst does not), waits
for the server's greeting, authenticates, and subscribes each symbol to the
channels of its kinds (``source.data``, ``source.data_by_symbol``): quotes,
trades or both. What can go wrong there becomes a typed error:

- credentials refused (alpaca 402, polygon ``auth_failed``), symbol limits,
  an HTTP 401/403 at the upgrade: ``StreamAuthError`` (permanent: the collector
  stops the stream with one clear line and never reconnects);
- connection limit exceeded (alpaca 406, polygon ``max_connections``), an
  unreachable host, a timeout, a drop: ``StreamRefused`` / ``StreamClosed``
  (transient: the collector backs off and reconnects).

Keys are read from environment variables named in the config, registered with
``secrets.register_secret`` and never logged: ``websockets``' debug log lines
(which show the frames sent, the auth message among them) pass a redacting filter.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from robust_collector.boundary import clean_text
from robust_collector.errors import ConfigError
from robust_collector.secrets import redact, register_secret
from robust_collector.sources.base import kinds_for, register_source
from robust_collector.sources.settings import WebSocketSourceConfig
from robust_collector.sources.stream import (
    ParsedFrame,
    StreamAuthError,
    StreamClosed,
    StreamRefused,
)
from robust_collector.sources.websocket_presets import STREAM_PRESETS, StreamPreset

__all__ = ["WebSocketConnection", "WebSocketSource", "close_cause"]

log = logging.getLogger(__name__)


def close_cause(exc: ConnectionClosed) -> str:
    """A short cause for a closed connection: ``ping timeout``, ``closed by server (1000)``..."""
    rcvd, sent = exc.rcvd, exc.sent
    if sent is not None and sent.code == 1011 and "ping" in sent.reason:
        return "ping timeout"
    if rcvd is not None:  # the server's reason is outside text
        why = f": {clean_text(rcvd.reason, 200)}" if rcvd.reason else ""
        return f"closed by server ({rcvd.code}{why})"
    if sent is not None:
        why = f": {clean_text(sent.reason, 200)}" if sent.reason else ""
        return f"closed by us ({sent.code}{why})"
    return "connection dropped"


class WebSocketConnection:
    """One open, subscribed connection: iterate it for raw frames (``StreamClosed`` at the end).

    The keepalive is ours, not ``websockets``' (whose pong deadline closes a connection
    whose pong merely waits in the socket behind a burst we have not read yet): a ping
    every ``ping_interval`` seconds, and the connection is declared dead ("ping timeout")
    only when no pong came within ``ping_timeout`` AND no frame arrived meanwhile AND
    the consumer is not behind (``behind()``): any arriving frame proves the peer alive.
    """

    def __init__(
        self,
        ws: ClientConnection,
        name: str,
        pending: list[str | bytes],
        *,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
    ) -> None:
        self._ws = ws
        self._name = name
        self._pending = pending  # frames read during the handshake that were not answers
        self.frames = 0  # frames handed to the consumer (the keepalive's sign of life)
        self.behind: Callable[[], bool] = _never  # the consumer sets it: frames still queued
        self._dead: str | None = None
        self._interval = ping_interval
        self._timeout = ping_timeout
        self._keepalive: asyncio.Task[None] | None = None
        self._ping_pending = False  # a ping is out and its pong has not come back yet
        if ping_interval is not None:
            self._keepalive = asyncio.get_running_loop().create_task(
                self._keepalive_loop(), name=f"{name}-keepalive"
            )

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        while self._pending:
            self.frames += 1
            yield self._pending.pop(0)
        ws = self._ws
        while True:
            try:
                frame = await ws.recv()
            except ConnectionClosed as exc:
                self._stop_keepalive()
                cause = self._dead or close_cause(exc)
                raise StreamClosed(
                    clean_text(f"{self._name} stream: {cause}"), cause=cause
                ) from None
            self.frames += 1
            yield frame

    async def close(self) -> None:
        self._stop_keepalive()
        await self._ws.close()

    def _stop_keepalive(self) -> None:
        task, self._keepalive = self._keepalive, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _keepalive_loop(self) -> None:
        """The keepalive, supervised: if it fails in any unplanned way, the connection is
        closed as dead (a stream without its keepalive would never notice a dead peer)."""
        try:
            await self._keepalive_pings()
        except Exception as exc:  # logged once; the reader then reconnects the usual way
            cause = clean_text(redact(f"keepalive failed ({type(exc).__name__}: {exc})"), 300)
            log.error(
                "%s: %s; closing the connection to reconnect", self._name, cause, exc_info=exc
            )
            self._dead = cause
            transport = self._ws.transport
            if transport is not None:
                transport.abort()  # recv() ends with ConnectionClosed, reported with our cause

    async def _keepalive_pings(self) -> None:
        """Ping; a late pong is death only if nothing else arrived (see the class docs)."""
        assert self._interval is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._interval)
            seen = self.frames
            try:
                pong = await self._ws.ping()
            except ConnectionClosed:
                return
            if self._timeout is None:
                continue
            self._ping_pending = True
            pong.add_done_callback(self._pong_done)
            deadline = loop.time() + self._timeout
            while not pong.done():
                await asyncio.wait({pong}, timeout=max(0.0, deadline - loop.time()))
                if pong.done():
                    break
                if loop.time() < deadline:
                    continue
                await asyncio.sleep(0)  # a starved reader gets one turn to show its frames
                if pong.done():
                    break
                if self.frames != seen or self.behind():
                    seen = self.frames  # busy, not dead: the pong is behind the data
                    deadline = loop.time() + self._timeout
                    continue
                self._dead = "ping timeout"
                log.debug("%s: no pong and no frame for %gs", self._name, self._timeout)
                transport = self._ws.transport
                if transport is not None:
                    transport.abort()  # a half-dead peer would not finish a closing handshake
                return
            if pong.cancelled() or pong.exception() is not None:
                return  # the connection closed meanwhile

    def _pong_done(self, _: object) -> None:
        self._ping_pending = False

    def ping_outstanding(self) -> bool:
        """True while a ping waits for its pong: the keepalive is judging the connection,
        so a silence seen meanwhile is not yet a verdict of its own (see stream_runner)."""
        return self._ping_pending or self._dead is not None


def _never() -> bool:
    return False


class WebSocketSource:
    """A ``StreamSource`` on ``websockets`` for the alpaca and polygon protocols."""

    streaming = True

    def __init__(
        self, config: WebSocketSourceConfig, *, environ: Mapping[str, str] | None = None
    ) -> None:
        if config.preset is None:
            raise ConfigError("source.preset: required key is missing", path="source.preset")
        self.config = config
        self.preset: StreamPreset = STREAM_PRESETS[config.preset]()
        self.name: str = config.name or self.preset.name
        base = (config.base_url or self.preset.default_base_url).rstrip("/")
        self.url = self.preset.url(base, config.feed)
        env = os.environ if environ is None else environ
        self.key_env = config.api_key_env or self.preset.key_env
        self.secret_env = config.api_secret_env or self.preset.secret_env
        self._key = self._read(env, self.key_env, "api_key_env")
        self._secret = self._read(env, self.secret_env, "api_secret_env")
        self.connections = 0
        self.run_id = "stream"

    def _read(self, env: Mapping[str, str], var: str | None, key: str) -> str | None:
        if var is None:
            return None
        value = env.get(var)
        if not value:
            raise ConfigError(
                f"source.{key}: environment variable {var} is not set (the {self.name} "
                "stream reads its credentials from it)",
                path=f"source.{key}",
            )
        register_secret(value)
        register_secret(orjson.dumps(value).decode()[1:-1])  # as it appears inside JSON
        return value

    def credentials(self) -> str:
        """The variables to check, for messages: ``APCA_API_KEY_ID / APCA_API_SECRET_KEY``."""
        return " / ".join(v for v in (self.key_env, self.secret_env) if v)

    async def start(self, run_id: str) -> None:
        self.run_id = run_id

    async def aclose(self) -> None:
        return None

    def parse(self, frame: str | bytes) -> ParsedFrame:
        return self.preset.parse(frame)

    def _msg(self, text: str) -> str:
        """A message for an exception: redacted, then cleaned (``text`` holds server words)."""
        return clean_text(redact(f"{self.name} stream: {text}"))

    async def connect(self, symbols: Sequence[str]) -> WebSocketConnection:
        """Open, authenticate, subscribe (see the module docs for the errors)."""
        cfg = self.config
        self.connections += 1
        try:
            ws = await connect(
                self.url,
                open_timeout=cfg.open_timeout_seconds,
                ping_interval=None,  # our own keepalive (WebSocketConnection): a busy
                ping_timeout=None,  # stream is not a dead one
                close_timeout=2.0,
                max_size=cfg.max_message_bytes,
                max_queue=64,
                proxy=None,
                user_agent_header="robust-collector",
            )
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code in (401, 403):
                raise StreamAuthError(
                    self._msg(f"HTTP {code} at connect; check {self.credentials()}")
                ) from None
            raise StreamRefused(self._msg(f"HTTP {code} at connect")) from None
        except InvalidURI as exc:
            raise StreamAuthError(self._msg(f"invalid URL ({exc})")) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise StreamRefused(
                self._msg(f"cannot connect to {self.url} ({type(exc).__name__}: {exc})")
            ) from None
        try:
            async with asyncio.timeout(cfg.open_timeout_seconds):
                pending = await self._handshake(ws, symbols)
        except BaseException as exc:
            await ws.close()
            if isinstance(exc, TimeoutError):
                raise StreamRefused(
                    self._msg(f"no answer to the handshake in {cfg.open_timeout_seconds:g}s")
                ) from None
            raise
        return WebSocketConnection(
            ws,
            self.name,
            pending,
            ping_interval=cfg.ping_interval_seconds,
            ping_timeout=cfg.ping_timeout_seconds,
        )

    async def _answer(self, ws: ClientConnection, stage: str) -> tuple[ParsedFrame, Any]:
        try:
            frame = await ws.recv()
        except ConnectionClosed as exc:
            cause = close_cause(exc)
            raise StreamClosed(self._msg(f"{cause} during {stage}"), cause=cause) from None
        parsed = self.preset.parse(frame)
        for c in parsed.controls:
            if c.kind == "error":
                hint = f"; check {self.credentials()}" if stage == "authentication" else ""
                if c.permanent:
                    raise StreamAuthError(self._msg(f"{stage} refused ({c.message}){hint}"))
                raise StreamRefused(self._msg(f"{stage} refused ({c.message})"))
        return parsed, frame

    async def _handshake(self, ws: ClientConnection, symbols: Sequence[str]) -> list[str | bytes]:
        parsed, _ = await self._answer(ws, "greeting")
        if not self.preset.greeting_ok(parsed.controls):
            raise StreamRefused(self._msg("the server did not greet with 'connected'"))
        await ws.send(self.preset.auth_message(self._key, self._secret))
        pending: list[str | bytes] = []
        while True:
            parsed, frame = await self._answer(ws, "authentication")
            if self.preset.auth_ok(parsed.controls):
                break
            if parsed.quotes or parsed.trades or parsed.notices or parsed.problems:
                pending.append(frame)
        quotes, trades = self.channels(symbols)
        await ws.send(self.preset.subscribe_message(quotes, trades))
        return pending

    def channels(self, symbols: Sequence[str]) -> tuple[list[str], list[str]]:
        """The symbols whose quotes and whose trades are subscribed (each symbol's kinds)."""
        kinds = {s: kinds_for(self.config, s) for s in symbols}
        return (
            [s for s in symbols if "quotes" in kinds[s]],
            [s for s in symbols if "trades" in kinds[s]],
        )


def _build(config: WebSocketSourceConfig, **kwargs: Any) -> WebSocketSource:
    return WebSocketSource(config, **kwargs)


register_source("websocket", _build)
