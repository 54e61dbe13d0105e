"""The collector's streaming path: reader, validator task, silence monitor, reconnects.

```
connection --frames--> reader --(recv time, frame)--> bounded queue --> processor
  ^  (never waits on anything                 full: everything queued is    | parse, validate
  |   but the socket)                         validated at once and spilled | (the collector's
  |                                           to the JSONL backup files     |  pipeline), buffer,
  |                                                                         v  flush off-loop
supervisor: connect (breaker) -> auth -> subscribe; on close: gap rows,    writer thread
            backoff with jitter, reconnect, resubscribe, REST refresh
silence monitor: adaptive thresholds per symbol and kind (session only); all silent -> reconnect
```

The processor hands batches to the writer from a worker thread, so a writer
whose queue is full (and blocks the caller) never stops the reader: the frames
wait in the bounded queue, and past its bound they are validated at once and
written to backup files. Once the interpreter is shutting down (no new worker
threads) the batch is handed over directly instead. Nothing is dropped: every
frame ends as ticks, rejects, duplicates or counted malformed items; a frame whose
processing raises anything is one counted malformed item, never the end of the
processor.

Reading and keep-alive never wait on processing: the processor (and a spill)
works in slices of a few milliseconds and yields between them, and the
connection's keepalive counts any arriving frame, or frames still queued here,
as a sign of life (a busy stream is not a dead one). Each outage and silence becomes
a ``gaps`` row (symbol, start, end, cause, detail) that ``analysis.gaps`` reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple

from robust_collector.boundary import clean_text
from robust_collector.config import Config
from robust_collector.errors import CircuitOpenError, PermanentSourceError
from robust_collector.health.facts import SilenceFacts, StreamFacts
from robust_collector.model import Trade, make_tick_id, make_trade_id, new_quote, now_us
from robust_collector.runtime.guards import Guards
from robust_collector.runtime.pipeline import Pipeline
from robust_collector.secrets import redact
from robust_collector.sources.base import kinds_for
from robust_collector.sources.settings import WebSocketSourceConfig
from robust_collector.sources.stream import (
    ReconnectBackoff,
    Silence,
    SilenceDetector,
    StreamClosed,
    StreamConnection,
)
from robust_collector.storage.backup import BackupWriter
from robust_collector.storage.tables import INSERT_GAP
from robust_collector.storage.writer import Batch

if TYPE_CHECKING:
    from robust_collector.runtime.health_loop import HealthLoop

__all__ = ["StreamRunner"]

log = logging.getLogger("robust_collector.stream")

_DEFAULTS = WebSocketSourceConfig(preset="alpaca")
_SLICE_SECONDS = 0.005  # work done on the loop before yielding to the reader and keepalive
_LOG_EVERY = 1000  # after the first 10 malformed items, one log line per this many
_NOUN = {"quotes": "quote", "trades": "trade"}
TRADE_SILENCE = "trades: "
"""How the detail of a ``symbol_silent`` gap row about a symbol's trades begins (e.g.
``trades: no trade for 42.0s (threshold 30.0s)``); a quotes' row has no such prefix."""


class _SpillRows(NamedTuple):
    """The rows a spill validated, in ``BackupWriter.write_batch`` order."""

    ticks: list[tuple[Any, ...]]
    rejects: list[tuple[Any, ...]]
    trades: list[tuple[Any, ...]]
    trade_rejects: list[tuple[Any, ...]]


def _setting(source: Any, name: str) -> Any:
    cfg = getattr(source, "config", None)
    return getattr(cfg, name, getattr(_DEFAULTS, name))


class StreamRunner:
    """Runs a streaming source for a ``Collector`` (see the module docs)."""

    def __init__(
        self,
        source: Any,
        pipeline: Pipeline,
        guards: Guards,
        config: Config,
        health: HealthLoop,
    ) -> None:
        self.p = pipeline
        self.config = config
        self.health = health
        self.source: Any = source
        self.name: str = getattr(self.source, "name", "stream")
        self.symbols: tuple[str, ...] = pipeline.symbols
        kinds = {s: kinds_for(source, s) for s in self.symbols}
        self.quote_symbols = tuple(s for s in self.symbols if "quotes" in kinds[s])
        self.trade_symbols = frozenset(s for s in self.symbols if "trades" in kinds[s])
        s = self.source
        self.max_queue = int(_setting(s, "queue_max_messages"))
        self.check_interval = float(_setting(s, "silence_check_interval_seconds"))
        self.refresh_preset: str | None = _setting(s, "refresh_preset")
        self.detector = SilenceDetector(
            self.symbols,
            kinds=kinds,  # one rhythm per kind: rare trades are not judged by the quotes
            factor=_setting(s, "silence_factor"),
            floor=_setting(s, "silence_floor_seconds"),
            ceiling=_setting(s, "silence_ceiling_seconds"),
            window=_setting(s, "silence_window"),
            min_samples=_setting(s, "silence_min_samples"),
            is_open=pipeline.monitor.session.is_open,
        )
        self.backoff = ReconnectBackoff(
            _setting(s, "reconnect_delay_seconds"), _setting(s, "reconnect_max_delay_seconds")
        )
        self.breaker = guards.breaker(self.name)
        self.queue: deque[tuple[int, str | bytes]] = deque()
        self._wake: asyncio.Event | None = None
        self._conn: StreamConnection | None = None
        self._close_reason: str | None = None
        self._fatal: PermanentSourceError | None = None
        self._down: tuple[float, str] | None = None
        self._seq: dict[str, int] = {}
        self._tseq: dict[str, int] = {}  # trades are numbered apart from quotes
        self._spill_writer: BackupWriter | None = None
        self._refresh_source: Any = None
        self._last_frame = 0.0
        self._conn_quotes = 0
        self._flushing = False
        self._spilling = False
        self._frame_failures = 0
        # counters (read from any thread; plain ints)
        self.state = "idle"
        self.connects = 0
        self.connect_failures = 0
        self.subscriptions = 0
        self.subscribed: tuple[str, ...] = ()
        self.frames = 0
        self.quotes = 0
        self.trades = 0
        self.trade_notices = 0  # of them corrections and cancels
        self.malformed = 0
        self.ignored = 0
        self.spills = 0
        self.spilled_frames = 0
        self.spilled_rows = 0
        self.max_queue_depth = 0
        self.gap_rows = 0
        self.refreshed = 0
        self.last_error: str | None = None
        self.last_cause: str | None = None
        self._started_at: float | None = None
        # subscription acknowledgements of the current connection (checked against the request)
        self._acked: set[str] = set()
        self._refused: set[str] = set()
        self._acks_checked = False
        self._connected_at = 0.0
        self.open_timeout = float(_setting(s, "open_timeout_seconds"))
        self._warn_unused_settings()

    def _warn_unused_settings(self) -> None:
        """Settings of the polling path that a stream ignores: say so once, at start."""
        rt = self.config.realtime_data
        try:
            defaults = type(rt)()
        except TypeError:  # not constructible without arguments: nothing to compare with
            return
        unused = []
        if rt.collect_interval_seconds != defaults.collect_interval_seconds:
            unused.append("realtime_data.collect_interval_seconds")
        for f in dataclasses.fields(rt.retry):
            if getattr(rt.retry, f.name) != getattr(defaults.retry, f.name):
                unused.append(f"realtime_data.retry.{f.name}")
        if unused:
            log.warning(
                "%s: %s set but not used by a streaming source (quotes arrive as they happen; "
                "reconnects use source.reconnect_delay_seconds and "
                "source.reconnect_max_delay_seconds)",
                self.name,
                ", ".join(unused),
            )

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    # -- tasks ------------------------------------------------------------------------

    def units(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """The stream's long-lived units as (name, coroutine factory) pairs, for a supervisor.

        Each factory may be called again after its coroutine crashed: the state lives on
        the runner (the processor resumes on the same queue, the connection supervisor
        connects again), so a restart loses nothing that was read.
        """
        if self._wake is None:
            self._wake = asyncio.Event()
        out: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("stream-supervisor", self._supervise),
            ("stream-processor", self._process_loop),
            ("stream-silence", self._monitor_loop),
        ]
        if self.health.enabled:
            out.append(("stream-health", functools.partial(self.health.run, self._flush)))
        return out

    def _behind(self) -> bool:
        """True while frames read wait for processing: the connection is busy, not dead."""
        return bool(self.queue) or self._spilling

    async def _supervise(self) -> None:
        if self._started_at is None:
            self._started_at = time.time()
        while True:
            self.state = "connecting" if self.connects == 0 else "reconnecting"
            self.publish()
            try:
                conn = await self._connect()
            except asyncio.CancelledError:
                raise
            except CircuitOpenError as exc:
                self._never_connected(exc)
                await asyncio.sleep(max(exc.retry_after, 0.05))
                continue
            except PermanentSourceError as exc:
                self._failed(exc)
                return
            except Exception as exc:
                self.connect_failures += 1
                self._error(exc)
                self._never_connected(exc)
                delay = self.backoff.next_delay(getattr(exc, "retry_after", None))
                log.warning(
                    "%s: %s; reconnecting in %.2fs (attempt %d)",
                    self.name,
                    redact(str(exc)),
                    delay,
                    self.backoff.attempts,
                )
                await asyncio.sleep(delay)
                continue
            self._connected(conn)
            cause = "connection closed"
            try:
                await self._read(conn)
            except StreamClosed as exc:
                cause = exc.cause
            except BaseException:
                # the collector stops (cancelled), or this unit crashed and will be restarted:
                # either way say goodbye to the server rather than leave the socket behind
                await conn.close()
                raise
            finally:
                self._conn = None
            if self._close_reason is not None and cause != "ping timeout":
                cause = self._close_reason  # (a dead peer's ping timeout is the truer cause)
            if self._fatal is not None:
                self._failed(self._fatal)
                return
            self._disconnected(cause)
            delay = self.backoff.next_delay()
            await asyncio.sleep(delay)

    async def _connect(self) -> StreamConnection:
        if self.breaker is None:
            return await self.source.connect(self.symbols)
        conn: StreamConnection = await self.breaker.call_async(self.source.connect, self.symbols)
        return conn

    async def _read(self, conn: StreamConnection) -> None:
        """Frames into the queue, stamped; the reader never waits on anything but the socket."""
        queue, wake = self.queue, self._wake
        assert wake is not None
        n = 0
        async for frame in conn:
            recv = now_us()
            self._last_frame = recv / 1e6
            if len(queue) >= self.max_queue:
                await self._spill(recv, frame)
            else:
                queue.append((recv, frame))
                if len(queue) > self.max_queue_depth:
                    self.max_queue_depth = len(queue)
            wake.set()
            n += 1
            if n % 256 == 0:  # frames already buffered arrive without a pause: share the loop
                await asyncio.sleep(0)

    async def _process_loop(self) -> None:
        p, queue, wake = self.p, self.queue, self._wake
        assert wake is not None
        flush_interval = self.config.storage.flush_interval_seconds
        last_flush = time.monotonic()
        while True:
            if not queue:
                try:
                    async with asyncio.timeout(flush_interval):
                        await wake.wait()
                except TimeoutError:
                    pass
                wake.clear()
            n = 0
            # a time slice, not a frame count: frames cost from microseconds to far more
            # (a slow validator, a big frame), and the reader and keepalive must get turns
            deadline = time.perf_counter() + _SLICE_SECONDS
            while queue:
                recv, frame = queue.popleft()
                self._process(recv, frame)
                n += 1
                if p.full():
                    break
                if time.perf_counter() >= deadline:
                    break
            now = time.monotonic()
            full = p.full()
            if full or now - last_flush >= flush_interval:
                last_flush = now
                await self._flush()
                if not queue and self._spill_writer is not None:
                    self._replay_spills()
            elif n:
                await asyncio.sleep(0)

    def _replay_spills(self) -> None:
        """The queue has drained after a spill: close the spill file and have the writer
        replay it (after its next good write) instead of waiting for the next start."""
        writer = self._spill_writer
        self._spill_writer = None
        if writer is None:
            return
        try:
            writer.close()
        except OSError as exc:
            self._error(exc, component="backup")
        if self.p.writer is not None:
            self.p.writer.request_replay()

    async def _flush(self) -> None:
        """Hand the buffers to the writer from a worker thread: a full writer queue blocks
        that thread, never the loop (and so never the reader)."""
        batch = self.p.take_batch()
        if batch is None:
            return
        self._flushing = True
        try:
            await self._submit(batch)
        finally:
            self._flushing = False

    async def _submit(self, batch: Batch) -> None:
        """``submit`` in a worker thread; when the executor refuses new work (interpreter
        shutdown has begun, or the executor is shut down) submit here: never lose the batch."""
        writer = self.p.writer
        assert writer is not None
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(None, writer.submit, batch)
        except RuntimeError as exc:  # "cannot schedule new futures after ... shutdown"
            log.debug("%s: worker threads refused (%s); submitting directly", self.name, exc)
            writer.submit(batch)
            return
        await future

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            self._check_silence()
            self.publish()

    def _never_connected(self, exc: BaseException) -> None:
        """No connection yet since the start: the outage runs from the start (a gap row at
        the first connection, or at stop), not from nowhere."""
        if self.connects == 0 and self._down is None:
            start = self._started_at if self._started_at is not None else time.time()
            self._down = (start, f"never connected: {clean_text(redact(str(exc)), 300)}")

    def _check_acks(self, now: float) -> None:
        """Symbols requested but not acknowledged within open_timeout (incremental acks)."""
        if self._acks_checked or self.state != "connected":
            return
        if now - self._connected_at >= self.open_timeout:
            self._acks_checked = True
            self._refuse(set(self.symbols) - self._acked, "not acknowledged within "
                         f"{self.open_timeout:g}s")  # fmt: skip

    def _subscribed(self, symbols: tuple[str, ...], full: bool) -> None:
        """An acknowledgement: ``full`` ones list the whole current subscription (alpaca),
        others add to it (polygon). ``subscribed`` is the current set, never a union of
        every acknowledgement ever received."""
        self.subscriptions += 1
        if full:
            self._acked = set(symbols)
        else:
            self._acked |= set(symbols)
        self.subscribed = tuple(sorted(self._acked))
        for sym in self._refused & self._acked:  # accepted after all
            self._refused.discard(sym)
            health = self.p.symbol_health.get(sym)
            if health is not None:
                health.facts.refused = None
        if full:
            self._acks_checked = True
            shown = ", ".join(self.subscribed) or "nothing"
            self._refuse(set(self.symbols) - self._acked, f"the server acknowledged {shown}")

    def _refuse(self, missing: set[str], why: str) -> None:
        """Report each newly refused symbol at once: an error row, a log line, its health."""
        p = self.p
        for sym in sorted(missing - self._refused):
            self._refused.add(sym)
            message = clean_text(
                redact(f"{self.name} stream: subscription to {sym} refused ({why})")
            )
            log.warning("%s", message)
            health = p.symbol_health.get(sym)
            if health is not None:
                health.facts.refused = message
            p.error("source", message, symbol=sym, error_type="SubscriptionRefused", checker=health)

    def _check_silence(self) -> None:
        self._check_acks(time.time())
        if self.state != "connected" or self._behind() or self._flushing:
            return  # down (gaps say so) or behind (arrivals not all processed): no verdict
        for sym, kind in self.detector.check_kinds():
            log.warning(
                "%s: no %s for %.1fs (threshold %.1fs learned from its recent gaps); marked stale",
                sym,
                _NOUN.get(kind, kind),
                self.detector.silent_for(sym, kind=kind),
                self.detector.threshold(sym, kind),
            )
        quiet = time.time() - self._last_frame > self.detector.floor  # nothing read at all
        judging = getattr(self._conn, "ping_outstanding", None)
        if callable(judging) and judging():
            return  # a ping is out: its pong (or the ping timeout) tells alive from dead
        if (
            quiet
            and self.detector.all_silent()
            and self._conn is not None
            and self._close_reason is None
        ):
            self._close_reason = "every symbol silent"
            log.warning("%s: every symbol is silent; reconnecting", self.name)
            asyncio.get_running_loop().create_task(self._conn.close())

    # -- frames -------------------------------------------------------------------------

    def _process(self, recv: int, frame: str | bytes) -> None:
        """Parse, validate and buffer one frame; malformed items are counted, never raised.

        Whatever processing one frame raises (a parser bug, a hostile frame) makes that
        frame one malformed item: the processor, and the stream, go on."""
        try:
            self._process_frame(recv, frame)
        except Exception as exc:
            self._frame_failed(exc, frame)

    def _frame_failed(self, exc: Exception, frame: str | bytes) -> None:
        self._frame_failures += 1
        if self._frame_failures == 1:  # the traceback once; the count and error rows always
            log.warning("%s: processing a frame raised", self.name, exc_info=exc)
        text = frame[:60] if isinstance(frame, str) else frame[:60].decode("utf-8", "replace")
        self._malformed(
            f"frame could not be processed ({type(exc).__name__}: {clean_text(exc, 200)}): "
            f"{clean_text(text, 60)!r}"
        )

    def _process_frame(self, recv: int, frame: str | bytes) -> None:
        p = self.p
        self.frames += 1
        parsed = self.source.parse(frame)
        counters = p.counters
        health = p.symbol_health
        name = self.name
        run_id = self.source.run_id if hasattr(self.source, "run_id") else p.run_id
        at = recv / 1e6
        fresh_any = False
        for sym, ts, bid, ask, bsz, asz in parsed.quotes:
            counter = counters.get(sym)
            if counter is None:
                self._malformed(f"quote for {sym!r}, a symbol we did not subscribe to")
                continue
            seq = self._seq[sym] = self._seq.get(sym, 0) + 1
            q = new_quote(
                make_tick_id(run_id, sym, seq),
                sym,
                seq,
                ts if ts is not None else recv,
                recv,
                bid,
                ask,
                bsz,
                asz,
                None,
                name,
            )
            self.quotes += 1
            self._conn_quotes += 1
            fresh = p.judge(q, counter)
            fresh_any = fresh or fresh_any
            health[sym].record_success(fresh=fresh)
            ended = self.detector.arrived(sym, at, "quotes")
            if ended is not None:
                self._silence_ended(ended)
        for sym, ts, price, size, venue, conds, provider_id, tape in parsed.trades:
            t = self._trade(
                run_id, recv, sym, ts, price, size, venue, conds, None, provider_id, tape
            )
            if t is not None:
                fresh_any = self._judge_trade(t, at) or fresh_any
        notices = parsed.notices  # corrections and cancels (alpaca)
        for sym, ts, price, size, venue, conds, provider_id, tape, corr in notices:
            t = self._trade(
                run_id, recv, sym, ts, price, size, venue, conds, corr, provider_id, tape
            )
            if t is not None:
                self.trade_notices += 1
                fresh_any = self._judge_trade(t, at) or fresh_any
        n = len(parsed.quotes) + len(parsed.trades) + len(notices)
        if n:
            p.collector_health.record_success(fresh=fresh_any, count=n)
        self.ignored += parsed.ignored
        for problem in parsed.problems:
            self._malformed(problem)
        for ctl in parsed.controls:
            if ctl.kind == "subscribed":
                self._subscribed(ctl.symbols, full=ctl.code == "full")
            elif ctl.kind == "error":
                exc_cls = PermanentSourceError if ctl.permanent else StreamClosed
                text = f"{self.name} stream: server error {ctl.message}"
                exc = exc_cls(clean_text(redact(text)))
                self._error(exc)
                if ctl.permanent and self._fatal is None:
                    self._fatal = exc  # type: ignore[assignment]
                    if self._conn is not None:
                        asyncio.get_running_loop().create_task(self._conn.close())

    def _trade(
        self,
        run_id: str,
        recv: int,
        sym: str,
        ts: int | None,
        price: float | None,
        size: float | None,
        venue: str | None,
        conds: str | None,
        corr: int | None,
        provider_id: str | None,
        tape: str | None,
    ) -> Trade | None:
        """A parsed trade (or correction, or cancel) as a numbered ``Trade``; ``None`` (and a
        malformed item) for a symbol that does not collect trades."""
        if sym not in self.trade_symbols or sym not in self.p.counters:
            self._malformed(f"trade for {sym!r}, a symbol we did not subscribe to trades of")
            return None
        tseq = self._tseq[sym] = self._tseq.get(sym, 0) + 1
        return Trade(
            make_trade_id(run_id, sym, tseq),
            sym,
            tseq,
            ts if ts is not None else recv,
            recv,
            price,
            size,
            venue,
            conds,
            corr,
            provider_id,
            tape,
            self.name,
        )

    def _judge_trade(self, t: Trade, at: float) -> bool:
        """Validate and buffer one trade; note its arrival. True when it was fresh."""
        p = self.p
        sym = t.symbol
        self.trades += 1
        self._conn_quotes += 1
        fresh = p.judge_trade(t, p.counters[sym])
        p.symbol_health[sym].record_success(fresh=fresh)
        ended = self.detector.arrived(sym, at, "trades")
        if ended is not None:
            self._silence_ended(ended)
        return fresh

    def _malformed(self, problem: str) -> None:
        self.malformed += 1
        message = clean_text(redact(f"{self.name} stream: malformed message: {problem}"))
        if self.malformed <= 10 or self.malformed % _LOG_EVERY == 0:
            log.warning("%s (%d malformed so far)", message, self.malformed)
        p = self.p
        p.error("source", message, error_type="MalformedMessage", checker=p.source_health)

    async def _spill(self, recv: int, frame: str | bytes) -> None:
        """The queue is full: validate everything queued and this frame now, in order, and
        write the result to backup files (the writer is behind; waiting would stall the
        reader, dropping would lose data). Without backup files the rows stay buffered.

        The work is done in time slices with a yield between them, so the keepalive and
        the connection's own protocol (pongs, the server's pings) are never starved; new
        frames wait in the socket until the spill is done (order is kept). Cancelled or
        crashed midway, the frames not yet validated go back to the queue (``finish``
        validates them) and the rows already validated are still written."""
        frames = deque(self.queue)
        frames.append((recv, frame))
        self.queue.clear()
        self.spills += 1
        self.spilled_frames += len(frames)
        rows = _SpillRows([], [], [], [])
        self._spilling = True
        try:
            while frames:
                self._spill_slice(frames, rows)
                if frames:
                    await asyncio.sleep(0)
        finally:
            self._spilling = False
            if frames:
                self.spilled_frames -= len(frames)
                self.queue.extendleft(reversed(frames))
            self._store_spill(rows)

    def _spill_slice(self, frames: deque[tuple[int, str | bytes]], rows: _SpillRows) -> None:
        """Validate spilled frames for one time slice into ``rows`` (the pipeline's buffers
        are swapped out only within the slice: no yield in between)."""
        p = self.p
        kept = (p.ticks, p.rejects, p.trades, p.trade_rejects)
        p.ticks, p.rejects, p.trades, p.trade_rejects = rows
        deadline = time.perf_counter() + _SLICE_SECONDS
        try:
            while frames:
                self._process(*frames.popleft())
                if time.perf_counter() >= deadline:
                    break
        finally:
            p.ticks, p.rejects, p.trades, p.trade_rejects = kept

    def _store_spill(self, rows: _SpillRows) -> None:
        if self.spills == 1 or self.spills % 100 == 0:
            log.warning(
                "%s: stream queue full (%d messages): validated at once and spilled to "
                "backup (%d times so far)",
                self.name,
                self.max_queue,
                self.spills,
            )
        if not any(rows):
            return
        writer = self._backup()
        if writer is not None:
            try:
                self.spilled_rows += writer.write_batch(*rows)
                return
            except OSError as exc:
                self._error(exc, component="backup")
        p = self.p  # no backup files: keep them buffered for the writer
        p.ticks.extend(rows.ticks)
        p.rejects.extend(rows.rejects)
        p.trades.extend(rows.trades)
        p.trade_rejects.extend(rows.trade_rejects)

    def _backup(self) -> BackupWriter | None:
        if self._spill_writer is None:
            b = self.config.realtime_data.backup
            if b.active:
                self._spill_writer = BackupWriter.from_config(b, f"{self.p.run_id}-stream")
        return self._spill_writer

    # -- connection events -------------------------------------------------------------

    def _connected(self, conn: StreamConnection) -> None:
        now = time.time()
        self._conn = conn
        if hasattr(conn, "behind"):
            conn.behind = self._behind  # its keepalive: frames queued here prove it alive
        self._close_reason = None
        self._conn_quotes = 0
        self._acked = set()
        self._acks_checked = False
        self._connected_at = now
        self.subscribed = ()
        self.connects += 1
        self.state = "connected"
        self.detector.restart(now)
        down, self._down = self._down, None
        if down is not None:
            start, cause = down
            for sym in self.symbols:
                self._gap(sym, start, now, "stream_down", f"stream down ({cause})")
            log.info(
                "%s: reconnected after %.1fs down (%s); resubscribed %d symbols",
                self.name,
                now - start,
                cause,
                len(self.symbols),
            )
            if self.refresh_preset:
                asyncio.get_running_loop().create_task(self._refresh())
        else:
            log.info("%s: connected; subscribed %d symbols", self.name, len(self.symbols))
        self.publish()

    def _disconnected(self, cause: str) -> None:
        now = time.time()
        if self._conn_quotes:
            self.backoff.reset()  # that connection worked: come back quickly
        start = now
        if cause == "ping timeout" and self._last_frame:
            start = min(now, self._last_frame)  # the data stopped before the pong did
        for s in self.detector.close_all(now):
            self._silence_ended(s)
        self._down = (start, cause)
        self.last_cause = cause
        self.state = "reconnecting"
        self._error(StreamClosed(f"{self.name} stream: {cause}", cause=cause))
        log.warning("%s: stream down (%s); reconnecting", self.name, cause)
        self.publish()

    def _failed(self, exc: PermanentSourceError) -> None:
        self.state = "failed"
        self._error(exc)
        message = redact(str(exc))
        log.error("%s: %s; not reconnecting (a permanent error)", self.name, message)
        if self._down is None:
            start = self._started_at if self._started_at is not None else time.time()
            self._down = (start, f"stopped: {message}")
        self.publish()

    def _silence_ended(self, s: Silence) -> None:
        """A gap row for a silence; one of a symbol's trades says so first (``trades: ``)."""
        what = f"no {_NOUN.get(s.kind, s.kind)} for {s.end - s.start:.1f}s"
        detail = f"{what} (threshold {s.threshold:.1f}s)"
        if s.kind != "quotes":
            detail = f"{s.kind}: {detail}"
        self._gap(s.symbol, s.start, s.end, "symbol_silent", detail)

    def _gap(self, symbol: str, start: float, end: float, cause: str, detail: str) -> None:
        self.gap_rows += 1
        detail = clean_text(redact(detail))
        row = (self.p.run_id, symbol, int(start * 1e6), int(end * 1e6), cause, detail)
        self.p.event(INSERT_GAP, row)

    def _error(self, exc: BaseException, component: str = "source") -> None:
        p = self.p
        message = clean_text(redact(str(exc)))
        self.last_error = f"{type(exc).__name__}: {message}"
        checker = p.source_health if component == "source" else None
        p.error(component, exc, checker=checker, message=message)

    async def _refresh(self) -> None:
        """After a reconnect: every symbol's latest quote over REST, validated and stored."""
        from robust_collector.config import config_from_dict
        from robust_collector.sources.http import HttpSource

        p = self.p
        try:
            if self._refresh_source is None:
                cfg = getattr(self.source, "config", None)
                raw = {
                    "type": "http",
                    "preset": self.refresh_preset,
                    "name": f"{self.name}-refresh",
                    "base_url": getattr(cfg, "refresh_base_url", None),
                    "api_key_env": getattr(self.source, "key_env", None),
                    "api_secret_env": getattr(self.source, "secret_env", None),
                }
                http_cfg = config_from_dict({"source": raw}).source
                self._refresh_source = HttpSource(http_cfg)
            await self._refresh_source.start(f"{p.run_id}-refresh-{self.connects}")
            run_id = getattr(self.source, "run_id", p.run_id)
            for sym in self.quote_symbols:  # a trades-only symbol has no quote to refresh
                try:
                    q = await self._refresh_source.fetch(sym)
                except Exception as exc:  # the cache stays as it was; the stream goes on
                    self._error(exc)
                    continue
                # numbered in the stream's own sequence, so a symbol's seq stays 1, 2, 3...
                seq = self._seq[sym] = self._seq.get(sym, 0) + 1
                q = dataclasses.replace(q, tick_id=make_tick_id(run_id, sym, seq), seq=seq)
                self.refreshed += 1
                p.judge(q, p.counters[sym])
        except Exception as exc:
            self._error(exc)

    # -- health and shutdown ----------------------------------------------------------

    def publish(self) -> None:
        """Copy the stream's state into the health checkers' facts."""
        p = self.p
        down_s = 0.0 if self._down is None else max(0.0, time.time() - self._down[0])
        p.source_health.facts.stream = StreamFacts(
            state=self.state,
            error=self.last_error if self.state == "failed" else None,
            down_cause=None if self._down is None else self._down[1],
            down_seconds=down_s,
            reconnects=self.reconnects,
            reconnect_attempts=self.backoff.attempts,
            queue_depth=len(self.queue),
            queue_max=self.max_queue,
            spills=self.spills,
            spilled_messages=self.spilled_frames,
            malformed_messages=self.malformed,
        )
        for sym in self.symbols:
            st = self.detector.state(sym)
            p.symbol_health[sym].facts.silence = SilenceFacts(
                st["silent"], st["silent_seconds"], st["silence_threshold_seconds"]
            )

    def finish(self) -> None:
        """At stop: validate what is still queued and close open gaps (end = now)."""
        while self.queue:
            self._process(*self.queue.popleft())
        now = time.time()
        for s in self.detector.close_all(now):
            self._silence_ended(s)
        if self._down is not None:
            start, cause = self._down
            for sym in self.symbols:
                self._gap(sym, start, now, "stream_down", f"stream down ({cause}) until stop")
            self._down = None
        if self._spill_writer is not None:
            self._spill_writer.close()
        self.publish()

    async def aclose(self) -> None:
        if self._refresh_source is not None:
            await self._refresh_source.aclose()

    def status(self) -> dict[str, Any]:
        """The stream's counters and state as plain data."""
        return {
            "state": self.state,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "subscriptions": self.subscriptions,
            "subscribed": self.subscribed,
            "frames": self.frames,
            "quotes": self.quotes,
            "trades": self.trades,
            "trade_notices": self.trade_notices,
            "malformed": self.malformed,
            "ignored": self.ignored,
            "queue_depth": len(self.queue),
            "max_queue_depth": self.max_queue_depth,
            "spills": self.spills,
            "spilled_messages": self.spilled_frames,
            "spilled_rows": self.spilled_rows,
            "gap_rows": self.gap_rows,
            "refreshed": self.refreshed,
            "silent": tuple(s for s in self.symbols if self.detector.state(s)["silent"]),
            "silent_trades": tuple(self.detector.silent("trades")),
            "last_error": self.last_error,
            "last_cause": self.last_cause,
        }
