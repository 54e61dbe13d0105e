"""The collector runtime: polls every symbol in a background thread and stores what passes.

One daemon thread runs an asyncio loop with one task per symbol, so a slow or
failing symbol keeps its own schedule and never delays another, and a notebook
kernel stays free. Accepted quotes are buffered and handed in batches to the
writer thread, which owns the SQLite connection.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from robust_collector.config import Config, load_config
from robust_collector.errors import CircuitOpenError, ConfigError, EndOfData, RateLimitError
from robust_collector.health import (
    BreakerFacts,
    CollectorFacts,
    ComponentHealth,
    HealthSnapshot,
    StorageFacts,
    SystemHealthMonitor,
)
from robust_collector.health.store import mark_heartbeat_stopped, snapshot_rows, write_heartbeat
from robust_collector.model import Quote, now_us
from robust_collector.resilience import (
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    RateLimitGate,
    RetryPolicy,
)
from robust_collector.resilience.retry import format_seconds
from robust_collector.secrets import redact, scrub
from robust_collector.sources import Source, create_source
from robust_collector.storage.backend import execute_once, is_postgres_url, make_backend
from robust_collector.storage.backup import BackupWriter, backlog
from robust_collector.storage.postgres import redact_url
from robust_collector.storage.reader import read_ticks
from robust_collector.storage.recovery import replay_backlog
from robust_collector.storage.writer import (
    INSERT_BREAKER_EVENT,
    INSERT_ERROR,
    Batch,
    StorageWriter,
    WriterStats,
)
from robust_collector.supervisor import CRASH_LOOP, Supervisor, UnitStatus
from robust_collector.validation import RULES, Validator
from robust_collector.validation.streaming import ACCEPTED

COLLECTOR_COMPONENT = "RobustDataCollector"
HEARTBEAT_SECONDS = 1.0  # the heartbeat file and the live health snapshot, at least this often
REPLAY_BATCH = 256  # quotes a self-paced source may hand over per call
INSERT_RUN = (
    "INSERT OR IGNORE INTO runs (run_id, started_us, status, pid, host, instance, symbols, config)"
    " VALUES (?, ?, 'running', ?, ?, ?, ?, ?)"
)
STOP_RUN = "UPDATE runs SET stopped_us = ?, status = 'stopped', summary = ? WHERE run_id = ?"
_RULE_KEYS = frozenset(RULES)


def _system_component(snap: HealthSnapshot) -> ComponentHealth:
    """The overall level as a row of its own in the health history."""
    return ComponentHealth("system", "system", snap.level, snap.reasons, {})


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SymbolStatus:
    """One symbol's counters and latest state, as of the snapshot."""

    symbol: str
    fetches: int
    quotes: int
    accepted: int
    stored: int
    rejects: int
    duplicates: int
    errors: int
    last_price: float | None
    last_quote_us: int | None
    last_error: str | None
    overruns: int
    breaker_state: str
    breaker_since_us: int | None
    breaker_reason: str | None
    breaker_rejections: int
    retries: int
    retry_successes: int
    give_ups: int
    rejects_by_rule: Mapping[str, int]
    locked: int
    reanchors: int
    lost: int = 0  # quotes a crash of the pipeline dropped (counted, never silent)
    failed_attempts: int = 0  # requests that failed (errors counts failed polls)


@dataclass(frozen=True)
class CollectorStatus:
    """An immutable snapshot of the whole collector, safe to read from any thread."""

    run_id: str
    running: bool
    started_us: int | None
    uptime_seconds: float
    database: str
    symbols: Mapping[str, SymbolStatus]
    storage: WriterStats | None
    breaker_transitions: int
    health_level: str | None
    units: Mapping[str, UnitStatus] = dataclasses.field(default_factory=dict)

    @property
    def stored(self) -> int:
        return sum(s.stored for s in self.symbols.values())

    @property
    def rejects(self) -> int:
        return sum(s.rejects for s in self.symbols.values())

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.symbols.values())

    @property
    def failed_attempts(self) -> int:
        return sum(s.failed_attempts for s in self.symbols.values())

    def line(self) -> str:
        """A one-line summary for terminals and logs."""
        parts = [
            f"stored {self.stored}",
            f"rejects {self.rejects}",
            f"errors {self.errors}",
        ]
        if self.storage is not None and self.storage.mode != "database":
            parts.append(f"storage {self.storage.mode.upper()}")
        syms = " | ".join(
            f"{s.symbol} {s.stored}"
            + (f" [{s.breaker_state}]" if s.breaker_state not in ("CLOSED", "DISABLED") else "")
            for s in self.symbols.values()
        )
        for u in self.units.values():
            if u.state == "restarting":
                parts.append(f"{u.name} RESTARTING")
        if self.health_level is not None:
            parts.insert(0, self.health_level)
        return "  ".join(parts) + "  | " + syms


class _SymbolCounters:
    __slots__ = (
        "accepted",
        "breaker_reason",
        "breaker_since_us",
        "duplicates",
        "errors",
        "failed_attempts",
        "fetches",
        "last_attempt_error",
        "last_error",
        "last_price",
        "last_quote_us",
        "lost",
        "overruns",
        "quotes",
        "rejects",
    )

    def __init__(self) -> None:
        self.fetches = self.quotes = self.accepted = self.rejects = 0
        self.duplicates = self.errors = self.overruns = self.lost = 0
        self.failed_attempts = 0
        self.last_attempt_error: BaseException | None = None
        self.last_price: float | None = None
        self.last_quote_us: int | None = None
        self.last_error: str | None = None
        self.breaker_since_us: int | None = None
        self.breaker_reason: str | None = None


@dataclass
class _SourcePause:
    """The whole source paused (its credentials were refused): one probe at a time."""

    reason: str
    since_us: int
    probe_at: float  # event-loop time of the next probe
    probing: bool = False


def _not_a_breaker_failure(exc: BaseException) -> bool:
    """A 429 (or 503 with Retry-After) only slows the source through the shared gate, and
    refused credentials pause the whole source: neither is this symbol's failure."""
    return isinstance(exc, RateLimitError) or bool(getattr(exc, "source_wide", False))


@dataclass(frozen=True)
class LatestQuote:
    """The last good quote of a symbol, with its age: the cached fallback."""

    quote: Quote
    age_seconds: float
    stale: bool


def redacted_config(config: Config) -> dict[str, Any]:
    """``config`` as plain data with any database password masked (stored with each run)."""
    data = config.as_dict()
    url = data.get("storage", {}).get("url")
    if url:
        data["storage"]["url"] = redact_url(url)
    return data


def new_run_id() -> str:
    """A short, sortable, unique run id: UTC time plus random hex."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


class Collector:
    """The robust collector: ``start()`` it, watch ``status()``, read ``ticks()``, ``stop()`` it."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        source: Source | None = None,
        run_id: str | None = None,
    ) -> None:
        self.config = config or load_config(None)
        self.run_id = run_id or new_run_id()
        self.source: Source = source or create_source(self.config.source)
        self.symbols: tuple[str, ...] = self.config.symbols
        available = getattr(self.source, "symbols", None)  # a replay knows its file's symbols
        if isinstance(available, (list, tuple, set, frozenset)):
            missing = [s for s in self.symbols if s not in available]
            if missing:
                held = ", ".join(sorted(available)) or "no symbols"
                raise ConfigError(
                    f"symbols: {', '.join(missing)} not in the replayed file (it holds {held})",
                    path="symbols",
                )
        # a SQLite file's Path, or a postgresql:// URL (readers take either)
        target = self.config.storage.target()
        self.backend = make_backend(target, timeout=self.config.storage.write_timeout_seconds)
        self.db_path: Path | str = target if is_postgres_url(target) else Path(target)
        self.instance = self.config.storage.instance_name()
        rt = self.config.realtime_data
        self._interval = rt.collect_interval_seconds
        self._buffer_size = rt.buffer_size
        self._flush_interval = self.config.storage.flush_interval_seconds
        self._counters = {s: _SymbolCounters() for s in self.symbols}
        self._ticks: list[tuple[Any, ...]] = []
        self._rejects: list[tuple[Any, ...]] = []
        # event rows may come from any thread (a breaker turns HALF_OPEN when read)
        self._events: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._latest: dict[str, Quote] = {}
        self._finished: set[str] = set()
        self._transitions = 0
        self._setup_resilience()
        self.validator = Validator(rt.validation)
        self.monitor = SystemHealthMonitor(rt.health_check)
        self._health_enabled = rt.health_check.enabled
        self._collector_health = self.monitor.checker(COLLECTOR_COMPONENT, "collector")
        self._source_health = self.monitor.checker("source", "source")
        self._storage_health = self.monitor.checker("storage", "storage")
        self._symbol_health = {s: self.monitor.checker(s, "symbol") for s in self.symbols}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_async: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._started_us: int | None = None
        self._writer: StorageWriter | None = None
        self._fatal: BaseException | None = None
        self._summary: CollectorStatus | None = None
        self._stop_requested = threading.Event()
        self._writer_crashes: deque[float] = deque(maxlen=64)
        self._writer_crashes_seen = 0
        self._loop_tick = time.monotonic()
        self._heartbeat_thread: threading.Thread | None = None
        self.supervisor = Supervisor(on_crash=self._unit_crashed)
        self._pause: _SourcePause | None = None
        self._pause_cond: asyncio.Condition | None = None
        self._setup_stream()

    def _make_writer(self) -> StorageWriter:
        """The writer thread, with JSONL backup, the database's breaker and replay."""
        st = self.config.storage
        bcfg = self.config.realtime_data.backup
        fallback = replay = backlog_files = None
        if bcfg.enabled and bcfg.backup_to_file:
            path = Path(bcfg.backup_path)
            fallback = BackupWriter.from_config(bcfg, self.run_id)

            def replay(conn: Any) -> tuple[int, int]:
                # one file per call: the writer writes new batches between files
                sink = self.backend.sink(conn)
                report = replay_backlog(sink, path, after=bcfg.after_recovery, max_files=1)
                report.raise_for_errors()
                quarantined = report.totals.get("quarantined", 0)
                if quarantined:
                    log.warning(
                        "backup replay: %d line(s) the database refused were quarantined "
                        "with their reason in %s",
                        quarantined,
                        path / "quarantine",
                    )
                done = report.files.filter(report.files["status"] == "recovered").height
                return report.inserted, done

            def backlog_files() -> int:
                return backlog(path)[0]

        self.storage_breaker = CircuitBreaker(
            "storage",
            failure_threshold=st.breaker_failure_threshold,
            timeout_seconds=st.breaker_timeout_seconds,
            success_threshold=1,
        )
        self.storage_breaker.add_listener(self._on_breaker)
        return StorageWriter(
            self.backend,
            write_timeout=st.write_timeout_seconds,
            queue_max_batches=st.queue_max_batches,
            queue_full_block_ms=st.queue_full_block_ms,
            fallback=fallback,
            gate=self.storage_breaker,
            replay=replay,
            backlog=backlog_files,
            replay_on_start=st.replay_on_start,
            on_error=self._storage_error,
            on_written=self._storage_written,
        )

    def _setup_resilience(self) -> None:
        rt = self.config.realtime_data
        cb = rt.circuit_breaker
        self.breakers: BreakerRegistry | None = None
        if cb.enabled:
            self.breakers = BreakerRegistry(
                failure_threshold=cb.failure_threshold,
                timeout_seconds=cb.timeout_seconds,
                success_threshold=cb.success_threshold,
                half_open_max_calls=cb.half_open_max_calls,
                exclude=(EndOfData,),
                ignore=_not_a_breaker_failure,
            )
            self.breakers.add_listener(self._on_breaker)
            for sym in self.symbols:
                self.breakers.get(sym)
        r = rt.retry
        # one gate per source: a 429 for one symbol makes every symbol wait
        self.rate_gate = RateLimitGate(getattr(self.source, "name", "source"))
        self.retries: dict[str, RetryPolicy] = {
            sym: RetryPolicy(
                max_retries=r.max_retries,
                retry_delay=r.retry_delay,
                exponential_backoff=r.exponential_backoff,
                max_delay=r.max_delay,
                jitter=r.jitter,
                deadline=r.deadline_seconds,
                gate=self.rate_gate,
                on_retry=self._retry_hook(sym),
            )
            for sym in self.symbols
        }

    def _retry_hook(self, symbol: str) -> Callable[[int, float, BaseException], None]:
        def hook(attempt: int, delay: float, exc: BaseException) -> None:
            log.info(
                "%s: attempt %d failed (%s); retrying in %s",
                symbol,
                attempt,
                redact(str(exc)),
                format_seconds(delay),
            )

        return hook

    def _on_breaker(self, name: str, old: BreakerState, new: BreakerState, reason: str) -> None:
        self._transitions += 1
        ts = now_us()
        c = self._counters.get(name)
        if c is not None:
            c.breaker_since_us = ts
            c.breaker_reason = scrub(reason)
        self._events.append(
            (INSERT_BREAKER_EVENT, (self.run_id, ts, name, old.value, new.value, scrub(reason)))
        )

    def breaker(self, symbol: str) -> CircuitBreaker | None:
        """The circuit breaker of ``symbol`` (``None`` when breakers are disabled)."""
        return None if self.breakers is None else self.breakers.get(symbol)

    @classmethod
    def from_config(
        cls,
        path_or_config: str | Path | Config | None = None,
        *,
        base_dir: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Collector:
        """Build a collector from a YAML path (or a ``Config``), with optional overrides."""
        if isinstance(path_or_config, Config):
            if overrides:
                raise ValueError("overrides apply to a config file; pass a built Config as is")
            return cls(path_or_config, **kwargs)
        config = load_config(path_or_config, base_dir=base_dir, overrides=overrides)
        return cls(config, **kwargs)

    # -- lifecycle -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopped.is_set()

    def start(self) -> Collector:
        """Start collecting in a daemon thread; returns at once (the kernel stays free)."""
        if self._thread is not None:
            raise RuntimeError("collector already started; a Collector runs once")
        if not self.config.realtime_data.enabled:
            raise RuntimeError("realtime_data.enabled is false in the config: nothing to collect")
        self._writer = self._make_writer()
        self._record_run_start()
        self._writer.start()
        self._started_us = now_us()
        self._thread = threading.Thread(target=self._thread_main, name="rc-collector", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)
        self._heartbeat_thread = self.supervisor.thread("rc-heartbeat", self._heartbeat_main)
        atexit.register(self._atexit_stop)
        if self._fatal is not None:
            raise RuntimeError(f"collector failed to start: {self._fatal}") from self._fatal
        return self

    def stop(self, timeout: float = 30.0) -> CollectorStatus:
        """Stop polling, write everything buffered, close the database; returns the summary."""
        with self._stop_lock:
            if self._summary is not None:
                return self._summary
            if self._thread is None:
                raise RuntimeError("collector was never started")
            self._stop_requested.set()
            loop, ev = self._loop, self._stop_async
            if loop is not None and ev is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(ev.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error(
                    "collector loop still running %ss after stop(); its last batch goes to backup",
                    timeout,
                )
            if self._writer is not None:
                self._writer.stop(timeout)
            self._stopped.set()
            self.supervisor.stop()
            if self._heartbeat_thread is not None:
                self._heartbeat_thread.join(timeout=5)
            summary = self.status()
            self._record_run_stop(summary)
            # the heartbeat file says "stopped", so a clean stop never reads as a dead collector
            mark_heartbeat_stopped(self.db_path, self.run_id)
            self._summary = summary
            atexit.unregister(self._atexit_stop)
            return summary

    def _atexit_stop(self) -> None:
        try:
            self.stop(timeout=10)
        except Exception:  # at interpreter exit there is no one left to tell but the log
            log.exception("collector stop at exit failed")

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(
        self, predicate: Callable[[CollectorStatus], bool], timeout: float = 30.0
    ) -> CollectorStatus:
        """Block until ``predicate(status())`` holds; raises ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s; last status: {st.line()}")
            time.sleep(0.01)

    # -- the loop thread -------------------------------------------------------------

    def _thread_main(self) -> None:
        """The loop thread: runs the event loop, and runs it again after a crash.

        A failure before the loop has started (the source cannot start) is fatal and
        reported by ``start()``; later ones are crashes the supervisor records."""
        in_a_row = 0
        try:
            while not self._stop_requested.is_set():
                started = time.monotonic()
                try:
                    asyncio.run(self._main())
                    return
                except Exception as exc:
                    if not self._started.is_set():
                        self._fatal = exc  # recorded so start() can say why
                        log.exception("collector thread failed")
                        return
                    in_a_row = 1 if time.monotonic() - started > 30 else in_a_row + 1
                    wait = self.supervisor.record_crash("rc-collector", "thread", exc, in_a_row)
                    if self._stop_requested.wait(wait):
                        return
                except BaseException as exc:  # KeyboardInterrupt, SystemExit: the end
                    self._fatal = exc
                    log.exception("collector thread failed")
                    return
        finally:
            self._started.set()
            self._flush()

    def _unit_crashed(self, name: str, exc: BaseException) -> None:
        """A supervised unit crashed: an error row, a recent error, a failed operation."""
        message = scrub(exc)
        self._collector_health.record_failure(exc)
        self.monitor.record_error("supervisor", exc)
        self._events.append(
            (
                INSERT_ERROR,
                (
                    self.run_id,
                    now_us(),
                    "supervisor",
                    None,
                    type(exc).__name__,
                    f"{name} crashed: {message}",
                ),
            )
        )

    async def _tick(self) -> None:
        """Proves the event loop turns: the heartbeat thread reports a stalled loop."""
        while True:
            self._loop_tick = time.monotonic()
            await asyncio.sleep(0.25)

    def _heartbeat_main(self) -> None:
        """The heartbeat thread: every second a fresh health snapshot, written beside the
        database, so another process tells a live collector from a dead or stuck one."""
        while not self._stopped.is_set():
            snap = self.health()
            self._write_heartbeat(snap)
            if self._stopped.wait(HEARTBEAT_SECONDS):
                return

    def _write_heartbeat(self, snap: HealthSnapshot) -> None:
        try:  # (nothing for a PostgreSQL URL: write_heartbeat knows)
            write_heartbeat(
                self.db_path,
                snap,
                self.run_id,
                self.config.realtime_data.health_check.check_interval_seconds,
                heartbeat_interval=HEARTBEAT_SECONDS,
            )
        except (OSError, TypeError, ValueError) as exc:  # the folder may be gone: not fatal
            log.debug("health heartbeat not written: %s", exc)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_async = asyncio.Event()
        if self._stop_requested.is_set():
            return
        self.supervisor.mark_running("rc-collector")
        self._pause_cond = asyncio.Condition()
        plan = getattr(self.source, "plan", None)
        if callable(plan):  # an HTTP source sizes its pool: one connection per symbol
            plan(self.symbols)
        await self.source.start(self.run_id)
        units: list[tuple[str, Callable[[], Any]]] = [("loop-tick", self._tick)]
        if self._stream is not None:  # one connection for every symbol (see stream_runner)
            units += self._stream.units()
        else:
            units += [
                (f"poll-{sym}", functools.partial(self._poll, sym))
                for sym in self.symbols
                if sym not in self._finished
            ]
            units.append(("flusher", self._flusher))
            if self._health_enabled:
                units.append(("health", self._health_loop))
        run = self.supervisor.run
        tasks = [asyncio.create_task(run(name, f), name=name) for name, f in units]
        self._started.set()
        try:
            await self._stop_async.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._stream is not None:
                self._stream.finish()
                await self._stream.aclose()
            if self._health_enabled:
                self._record_health()  # the final snapshot, so readers see the end state
            try:
                await self.source.aclose()
            except Exception as exc:  # closing a broken source must not lose buffered data
                log.warning("closing source failed: %s", redact(str(exc)))

    def _setup_stream(self) -> None:
        """A streaming source gets a ``StreamRunner`` (reader, validation task, silence)."""
        from robust_collector.sources.stream import is_streaming
        from robust_collector.sources.stream_runner import StreamRunner

        self._stream: StreamRunner | None = (
            StreamRunner(self) if is_streaming(self.source) else None
        )

    def stream_status(self) -> dict[str, Any] | None:
        """A streaming source's state and counters (connects, reconnects, malformed, spills,
        silent symbols...); ``None`` for a polling source."""
        return None if self._stream is None else self._stream.status()

    async def _poll(self, symbol: str) -> None:
        loop = asyncio.get_running_loop()
        c = self._counters[symbol]
        interval = self._interval
        self_paced = getattr(self.source, "self_paced", False)  # a replay paces itself
        batched = self_paced and hasattr(self.source, "fetch_batch")
        next_at = loop.time()
        while True:
            probe = self._pause is not None and await self._wait_pause()
            c.fetches += 1
            failed_before = c.failed_attempts
            try:
                if batched:
                    self._receive_batch(symbol, await self._fetch(symbol, batch=True), c)
                    await asyncio.sleep(0)  # one yield per batch lets the other tasks run
                    await self._writer_room()
                    continue
                quote = await self._fetch(symbol)
            except asyncio.CancelledError:
                if probe:
                    await self._probe_done(None)
                raise
            except EndOfData as exc:
                self._symbol_finished(symbol, exc)
                return
            except CircuitOpenError as exc:
                # the symbol stays dark until its breaker lets a trial call through
                next_at = max(next_at, loop.time() + exc.retry_after - interval)
                failed = c.failed_attempts - failed_before
                if failed and c.last_attempt_error is not None:
                    # the breaker opened during this poll's retries: a failed poll all the same
                    self._fetch_failed(symbol, c, c.last_attempt_error, attempts=failed)
                if probe:
                    await self._probe_done(None)
            except Exception as exc:
                self._fetch_failed(symbol, c, exc, attempts=c.failed_attempts - failed_before)
                if getattr(exc, "source_wide", False):
                    await self._pause_source(exc)
                elif probe:
                    await self._probe_done(None)
            else:
                self._receive(quote, c)
                if probe:
                    await self._probe_done(None)
            if self_paced:
                # no polling interval; yield to the other tasks every so often (a yield
                # per quote would cost more than the quote itself)
                if c.fetches % 64 == 0:
                    await asyncio.sleep(0)
                continue
            next_at += interval
            now = loop.time()
            if next_at < now:
                # the fetch overran its slot (a slow answer, a wait on the rate-limit gate):
                # skip the missed slots and start again one interval from now, so a symbol
                # never sends two requests back to back when the gate reopens
                c.overruns += 1
                next_at = now + interval
            await asyncio.sleep(next_at - now)

    # -- the whole source paused (credentials refused) -------------------------------

    def _auth_retry_seconds(self) -> float:
        return float(getattr(getattr(self.source, "config", None), "auth_retry_seconds", 60.0))

    async def _wait_pause(self) -> bool:
        """Wait while the source is paused; True when this task is to make the probe."""
        loop = asyncio.get_running_loop()
        cond = self._pause_cond
        assert cond is not None
        async with cond:
            while (p := self._pause) is not None:
                now = loop.time()
                if not p.probing and now >= p.probe_at:
                    p.probing = True
                    return True
                try:
                    async with asyncio.timeout(None if p.probing else p.probe_at - now):
                        await cond.wait()
                except TimeoutError:
                    pass
        return False

    async def _pause_source(self, exc: BaseException) -> None:
        """Credentials refused: pause every symbol; one clear error the first time."""
        loop = asyncio.get_running_loop()
        retry = self._auth_retry_seconds()
        p = self._pause
        if p is None:
            reason = (
                f"credentials refused, every symbol paused ({scrub(exc)}); "
                f"probing again every {format_seconds(retry)}"
            )
            self._pause = _SourcePause(reason, now_us(), loop.time() + retry)
            self._source_health.facts.paused = reason
            log.error("%s", reason)
        else:
            p.probing = False
            p.probe_at = loop.time() + retry
            log.info("credentials still refused; next probe in %s", format_seconds(retry))
        await self._notify_pause()

    async def _probe_done(self, exc: BaseException | None) -> None:
        """The probe was not refused for its credentials: every symbol resumes."""
        if self._pause is not None and self._pause.probing:
            self._pause = None
            self._source_health.facts.paused = None
            log.warning("credentials accepted again: every symbol resumes")
        await self._notify_pause()

    async def _notify_pause(self) -> None:
        cond = self._pause_cond
        if cond is not None:
            async with cond:
                cond.notify_all()

    def source_problem(self) -> str | None:
        """Why the source cannot deliver at all (credentials refused, a stream stopped for
        good), or None; ``robust-collector run`` exits non-zero on it."""
        if self._pause is not None:
            return self._pause.reason
        if self._stream is not None and self._stream.state == "failed":
            return f"stream stopped: {self._stream.last_error}"
        return None

    async def _writer_room(self) -> None:
        """Backpressure for a self-paced source: wait (on the loop, never blocking it) while
        the writer's queue is full, so a replay at full speed is paced by the database
        instead of spilling good batches to backup. A live source never waits here."""
        w = self._writer
        while w is not None and not w.has_room():
            await asyncio.sleep(0.002)

    async def _fetch(self, symbol: str, batch: bool = False) -> Any:
        """One fetch through retry( breaker( source.fetch ) ), the resilience4j order."""
        breaker = None if self.breakers is None else self.breakers.get(symbol)
        fetch = self._fetch_attempt
        if breaker is not None:
            return await self.retries[symbol].call_async(breaker.call_async, fetch, symbol, batch)
        return await self.retries[symbol].call_async(fetch, symbol, batch)

    async def _fetch_attempt(self, symbol: str, batch: bool = False) -> Any:
        """One call to the source; every failed attempt is recorded here, exactly once."""
        try:
            if batch:
                quote = await self.source.fetch_batch(symbol, REPLAY_BATCH)  # type: ignore[attr-defined]
            else:
                quote = await self.source.fetch(symbol)
        except (asyncio.CancelledError, EndOfData):
            raise
        except Exception as exc:
            self._attempt_failed(symbol, exc)
            raise
        self._source_health.record_success()
        return quote

    def _receive(self, quote: Quote, c: _SymbolCounters) -> None:
        """Validate one quote and buffer it as a tick or a reject; health counts it."""
        try:
            fresh = self._judge(quote, c)
        except Exception:  # a bug: the quote is counted lost, the supervisor restarts us
            c.lost += 1
            raise
        self._symbol_health[quote.symbol].record_success(fresh=fresh)
        self._collector_health.record_success(fresh=fresh)
        if len(self._ticks) + len(self._rejects) >= self._buffer_size:
            self._flush()

    def _receive_batch(self, symbol: str, quotes: list[Quote], c: _SymbolCounters) -> None:
        """Validate a run of quotes from one call; health counts them once per batch.

        What ``_judge`` does per quote, with the accepted path inlined: the symbol's
        counters and latest quote are settled before each flush and at the end, so
        a reader never sees more rows handed to the writer than quotes accepted.
        """
        check = self.validator.check
        run_id = self.run_id
        ticks = self._ticks
        room = self._buffer_size - len(ticks) - len(self._rejects)
        fresh = False
        seen = accepted = 0
        last: Quote | None = None
        q0 = c.quotes
        try:
            for q in quotes:
                seen += 1
                v = check(q)
                if v is ACCEPTED or v.status == "accepted":
                    ticks.append(
                        (
                            q.tick_id,
                            q.symbol,
                            q.seq,
                            q.ts_us,
                            q.recv_us,
                            q.bid,
                            q.ask,
                            q.bid_size,
                            q.ask_size,
                            q.last,
                            q.source,
                            run_id,
                        )
                    )
                    room -= 1
                    accepted += 1
                    last = q
                    if v.reason:  # a re-anchor: worth a line in the log
                        log.info("%s: %s", q.symbol, v.reason)
                elif v.status == "duplicate":
                    c.duplicates += 1
                else:
                    c.rejects += 1
                    self._rejects.append((*q.as_row(), run_id, v.rule, v.reason, now_us()))
                    room -= 1
                if room <= 0:
                    c.quotes += seen
                    seen = 0
                    if last is not None:
                        c.accepted += accepted
                        c.last_price = last.price
                        c.last_quote_us = last.recv_us
                        c.last_error = None
                        self._latest[last.symbol] = last
                        fresh = True
                        accepted = 0
                        last = None
                    self._flush()
                    ticks = self._ticks
                    room = self._buffer_size - len(ticks) - len(self._rejects)
        except Exception:
            # a bug met mid-batch: what was judged counts; the quote that raised and the
            # rest of the batch are counted lost (the supervisor restarts the task)
            c.quotes += seen - 1
            c.accepted += accepted
            c.lost += len(quotes) - (c.quotes - q0)
            raise
        c.quotes += seen
        if last is not None:
            c.accepted += accepted
            c.last_price = last.price
            c.last_quote_us = last.recv_us
            c.last_error = None
            self._latest[last.symbol] = last
            fresh = True
        n = len(quotes)
        self._symbol_health[symbol].record_success(fresh=fresh, count=n)
        self._collector_health.record_success(fresh=fresh, count=n)

    def _judge(self, quote: Quote, c: _SymbolCounters) -> bool:
        """Buffer ``quote`` by the validator's verdict; True when it was accepted."""
        c.quotes += 1
        verdict = self.validator.check(quote)
        if verdict.status == "accepted":
            c.accepted += 1
            c.last_price = quote.price
            c.last_quote_us = quote.recv_us
            c.last_error = None
            self._latest[quote.symbol] = quote
            q = quote
            self._ticks.append(
                (
                    q.tick_id,
                    q.symbol,
                    q.seq,
                    q.ts_us,
                    q.recv_us,
                    q.bid,
                    q.ask,
                    q.bid_size,
                    q.ask_size,
                    q.last,
                    q.source,
                    self.run_id,
                )
            )
            if verdict.reason:  # a re-anchor: worth a line in the log
                log.info("%s: %s", quote.symbol, verdict.reason)
            return True
        if verdict.status == "duplicate":
            c.duplicates += 1
        else:
            c.rejects += 1
            self._rejects.append(
                (*quote.as_row(), self.run_id, verdict.rule, verdict.reason, now_us())
            )
        return False

    def _symbol_finished(self, symbol: str, exc: EndOfData) -> None:
        """A replayed symbol ran out of rows: stop polling it, and say so once all are done."""
        self._finished.add(symbol)
        self._symbol_health[symbol].facts.expects_data = False
        self._collector_health.facts.expects_data = len(self._finished) < len(self.symbols)
        self._source_health.facts.expects_data = len(self._finished) < len(self.symbols)
        log.info("%s: %s", symbol, exc)
        if self.finished:
            log.info("replay finished: every symbol has reached the end of its data")
            self._flush()

    @property
    def finished(self) -> bool:
        """True when every symbol's source has ended (a replay reached the end of its file)."""
        return len(self._finished) == len(self.symbols)

    def _attempt_failed(self, symbol: str, exc: BaseException) -> None:
        """Every failed attempt: an error row, and the source's health."""
        c = self._counters.get(symbol)
        if c is not None:
            c.failed_attempts += 1
            c.last_attempt_error = exc
        message = scrub(exc)
        self._source_health.record_failure(exc)
        self.monitor.record_error("source", exc, symbol=symbol)
        self._events.append(
            (INSERT_ERROR, (self.run_id, now_us(), "source", symbol, type(exc).__name__, message))
        )

    def _fetch_failed(
        self, symbol: str, c: _SymbolCounters, exc: BaseException, attempts: int = 1
    ) -> None:
        """A fetch that failed after its retries (the last attempt's error); the symbol's
        health counts each failed attempt, so an always-500 symbol (three attempts a poll,
        then an open breaker) reads as badly as an always-404 one."""
        c.errors += 1
        c.last_error = f"{type(exc).__name__}: {scrub(exc)}"
        health = self._symbol_health[symbol]
        for _ in range(max(1, attempts)):
            health.record_failure(exc)
        self._collector_health.record_failure(exc)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            self._flush()

    def _flush(self) -> None:
        if not (self._ticks or self._rejects or self._events) or self._writer is None:
            return
        events = []
        while self._events:
            events.append(self._events.popleft())
        batch = Batch(self._ticks, self._rejects, events)
        self._ticks, self._rejects = [], []
        self._writer.submit(batch)

    async def _health_loop(self) -> None:
        interval = self.config.realtime_data.health_check.check_interval_seconds
        # the first report comes early, so `robust-collector health` sees a fresh run
        await asyncio.sleep(min(interval, 2.0))
        while True:
            self._record_health()
            await asyncio.sleep(interval)

    def _record_health(self) -> None:
        """A health check kept in the history and stored (the heartbeat thread writes the
        file every second between checks)."""
        self._update_facts()
        snap = self.monitor.check()
        self._events.extend(snapshot_rows(snap, self.run_id))
        self._flush()
        self._write_heartbeat(snap)

    def _update_facts(self) -> None:
        """Copy breaker, storage and supervision state into the health checkers' facts."""
        # (a stop in progress ends the loop and the writer on purpose: neither is a fault)
        running = self._thread is not None and not self._stop_requested.is_set()
        self._collector_health.facts.collector = CollectorFacts(
            self.supervisor.troubled(),
            CRASH_LOOP,
            max(0.0, time.monotonic() - self._loop_tick) if running else None,
        )
        for sym, checker in self._symbol_health.items():
            b = None if self.breakers is None else self.breakers.get(sym)
            if b is None:
                checker.facts.breaker = BreakerFacts("DISABLED")
                continue
            c = self._counters[sym]
            since = None if c.breaker_since_us is None else c.breaker_since_us / 1e6
            checker.facts.breaker = BreakerFacts(b.state.value, since, c.breaker_reason)
        if self._writer is not None:
            ws = self._writer.stats()
            if ws.crashes > self._writer_crashes_seen:  # the writer restarted itself
                self._writer_crashes.extend(
                    [time.monotonic()] * (ws.crashes - self._writer_crashes_seen)
                )
                self._writer_crashes_seen = ws.crashes
            now = time.monotonic()
            self._storage_health.facts.storage = StorageFacts(
                writer_alive=ws.alive or self._stop_requested.is_set(),
                writer_recent_crashes=sum(1 for t in self._writer_crashes if now - t <= 60),
                writer_crashes=ws.crashes,
                storage_mode=ws.mode,
                queue_depth=ws.queue_depth,
                held_rows=ws.held_rows,
                lost_rows=ws.lost_rows,
                queue_full_spills=ws.queue_full_spills,
                backup_files=ws.backup_files,
                ticks_to_backup=ws.ticks_to_backup,
            )

    def _storage_error(self, component: str, exc: BaseException) -> None:
        # called on the writer thread: the checker and the deque are thread-safe
        message = scrub(exc)
        log.warning("%s error: %s: %s", component, type(exc).__name__, message)
        self._storage_health.record_failure(exc)
        self.monitor.record_error(component, exc)
        self._events.append(
            (INSERT_ERROR, (self.run_id, now_us(), component, None, type(exc).__name__, message))
        )

    def _storage_written(self, rows: int) -> None:
        self._storage_health.record_success()

    # -- runs table ------------------------------------------------------------------

    def _record_run_start(self) -> None:
        row = (
            self.run_id,
            now_us(),
            os.getpid(),
            socket.gethostname(),
            self.instance,
            orjson.dumps(list(self.symbols)).decode(),
            orjson.dumps(redacted_config(self.config)).decode(),
        )
        try:
            execute_once(self.backend, INSERT_RUN, row)
        except (*self.backend.errors, OSError) as exc:
            # the database is down at start: collect anyway; the writer falls back to
            # backup files and writes this row once the database takes writes again
            self._storage_error("storage", exc)
            self._events.append((INSERT_RUN, row))

    def _record_run_stop(self, summary: CollectorStatus) -> None:
        data = {
            s.symbol: {"stored": s.stored, "rejects": s.rejects, "errors": s.errors}
            for s in summary.symbols.values()
        }
        try:
            execute_once(
                self.backend, STOP_RUN, (now_us(), orjson.dumps(data).decode(), self.run_id)
            )
        except Exception as exc:  # the run's data is safe; only its bookkeeping row is stale
            log.warning("could not record the end of run %s: %s", self.run_id, redact(str(exc)))

    # -- reading -------------------------------------------------------------------

    def status(self) -> CollectorStatus:
        """An immutable snapshot of counters and states (safe from any thread)."""
        ws = self._writer.stats() if self._writer is not None else None
        stored = ws.stored_by_symbol if ws is not None else {}
        vcounts = self.validator.counts
        symbols = {}
        for sym, c in self._counters.items():
            b = None if self.breakers is None else self.breakers.get(sym)
            bstats = None if b is None else b.stats
            rstats = self.retries[sym].stats
            vc = vcounts.get(sym, {})
            symbols[sym] = SymbolStatus(
                symbol=sym,
                fetches=c.fetches,
                quotes=c.quotes,
                accepted=c.accepted,
                stored=stored.get(sym, 0),
                rejects=c.rejects,
                duplicates=c.duplicates,
                errors=c.errors,
                last_price=c.last_price,
                last_quote_us=c.last_quote_us,
                last_error=c.last_error,
                overruns=c.overruns,
                breaker_state="DISABLED" if b is None else b.state.value,
                breaker_since_us=c.breaker_since_us,
                breaker_reason=c.breaker_reason,
                breaker_rejections=0 if bstats is None else bstats.rejections,
                retries=rstats.retries,
                retry_successes=rstats.retry_successes,
                give_ups=rstats.give_ups,
                rejects_by_rule={
                    k: v for k, v in vc.items() if k in _RULE_KEYS and v and k != "duplicate"
                },
                locked=vc.get("locked", 0),
                reanchors=vc.get("reanchored", 0),
                lost=c.lost,
                failed_attempts=c.failed_attempts,
            )
        started = self._started_us
        uptime = 0.0 if started is None else (now_us() - started) / 1e6
        last = self.monitor.last
        return CollectorStatus(
            run_id=self.run_id,
            running=self.running,
            started_us=started,
            uptime_seconds=uptime,
            database=self.backend.describe(),
            symbols=symbols,
            storage=ws,
            breaker_transitions=self._transitions,
            health_level=None if last is None else last.level.name,
            units=self.supervisor.status(),
        )

    def health(self) -> HealthSnapshot:
        """The system's health now: overall level, reasons, every component."""
        self._update_facts()
        return self.monitor.snapshot()

    def errors(self, limit: int | None = None) -> pl.DataFrame:
        """Recent errors kept in memory (time, component, symbol, type, message)."""
        rows = list(self.monitor.errors)[-limit:] if limit else list(self.monitor.errors)
        return pl.DataFrame(
            {
                "ts": [r.ts for r in rows],
                "component": [r.component for r in rows],
                "symbol": [r.symbol for r in rows],
                "error_type": [r.error_type for r in rows],
                "message": [r.message for r in rows],
            },
            schema={
                "ts": pl.Float64,
                "component": pl.String,
                "symbol": pl.String,
                "error_type": pl.String,
                "message": pl.String,
            },
        ).with_columns(
            (pl.col("ts") * 1_000_000)
            .cast(pl.Int64)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC")
        )

    def health_history(self) -> pl.DataFrame:
        """Health snapshots kept in memory: one row per component per check."""
        rows = [
            (snap.ts, comp.name, comp.kind, comp.level.name, "; ".join(comp.reasons))
            for snap in list(self.monitor.history)
            for comp in (_system_component(snap), *snap.components)
        ]
        return pl.DataFrame(
            rows,
            schema={
                "ts": pl.Float64,
                "component": pl.String,
                "kind": pl.String,
                "level": pl.String,
                "reasons": pl.String,
            },
            orient="row",
        ).with_columns(
            (pl.col("ts") * 1_000_000)
            .cast(pl.Int64)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC")
        )

    def latest(self, symbol: str | None = None) -> LatestQuote | pl.DataFrame | None:
        """The last good quote (the cached fallback) with its age and a ``stale`` flag.

        Served from memory, so it keeps working while the source fails or a
        breaker is open. With no symbol: every symbol as a DataFrame.
        """
        max_stale = self.config.realtime_data.health_check.max_stale_seconds
        now = now_us()
        if symbol is not None:
            q = self._latest.get(symbol)
            if q is None:
                return None
            age = (now - q.recv_us) / 1e6
            return LatestQuote(q, age, age > max_stale)
        rows = []
        for sym in self.symbols:
            q = self._latest.get(sym)
            age = None if q is None else (now - q.recv_us) / 1e6
            b = None if self.breakers is None else self.breakers.get(sym)
            rows.append(
                {
                    "symbol": sym,
                    "bid": None if q is None else q.bid,
                    "ask": None if q is None else q.ask,
                    "last": None if q is None else q.last,
                    "price": None if q is None else q.price,
                    "ts_us": None if q is None else q.ts_us,
                    "age_seconds": age,
                    "stale": True if age is None else age > max_stale,
                    "breaker_state": "DISABLED" if b is None else b.state.value,
                }
            )
        return pl.DataFrame(
            rows,
            schema={
                "symbol": pl.String,
                "bid": pl.Float64,
                "ask": pl.Float64,
                "last": pl.Float64,
                "price": pl.Float64,
                "ts_us": pl.Int64,
                "age_seconds": pl.Float64,
                "stale": pl.Boolean,
                "breaker_state": pl.String,
            },
        )

    def dashboard(self, **kwargs: Any) -> Any:
        """A live ipywidgets dashboard of this collector (see ``robust_collector.dashboard.live``)."""
        from robust_collector.dashboard import live

        return live(self, **kwargs)

    def ticks(
        self, symbol: str | None = None, since: Any = None, *, this_run: bool = False
    ) -> pl.DataFrame:
        """The stored ticks (all runs, or only this run's) as a polars DataFrame, UTC times."""
        run = self.run_id if this_run else None
        return read_ticks(self.db_path, symbol=symbol, since=since, run_id=run)
