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
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from robust_collector.config import Config, load_config
from robust_collector.model import Quote, now_us
from robust_collector.sources import Source, create_source
from robust_collector.storage.reader import read_ticks
from robust_collector.storage.schema import open_database
from robust_collector.storage.writer import INSERT_ERROR, Batch, SQLiteWriter, WriterStats

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

    @property
    def stored(self) -> int:
        return sum(s.stored for s in self.symbols.values())

    @property
    def rejects(self) -> int:
        return sum(s.rejects for s in self.symbols.values())

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.symbols.values())

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
            f"{s.symbol} {s.stored}" + (f" ({s.last_error})" if s.last_error else "")
            for s in self.symbols.values()
        )
        return "  ".join(parts) + "  | " + syms


class _SymbolCounters:
    __slots__ = (
        "accepted",
        "duplicates",
        "errors",
        "fetches",
        "last_error",
        "last_price",
        "last_quote_us",
        "overruns",
        "quotes",
        "rejects",
    )

    def __init__(self) -> None:
        self.fetches = self.quotes = self.accepted = self.rejects = 0
        self.duplicates = self.errors = self.overruns = 0
        self.last_price: float | None = None
        self.last_quote_us: int | None = None
        self.last_error: str | None = None


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
        self.db_path = Path(self.config.storage.database)
        rt = self.config.realtime_data
        self._interval = rt.collect_interval_seconds
        self._buffer_size = rt.buffer_size
        self._flush_interval = self.config.storage.flush_interval_seconds
        self._counters = {s: _SymbolCounters() for s in self.symbols}
        self._ticks: list[tuple[Any, ...]] = []
        self._rejects: list[tuple[Any, ...]] = []
        self._events: list[tuple[str, tuple[Any, ...]]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_async: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._started_us: int | None = None
        self._writer: SQLiteWriter | None = None
        self._fatal: BaseException | None = None
        self._summary: CollectorStatus | None = None

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
        st = self.config.storage
        self._writer = SQLiteWriter(
            self.db_path,
            write_timeout=st.write_timeout_seconds,
            queue_max_batches=st.queue_max_batches,
            queue_full_block_ms=st.queue_full_block_ms,
            on_error=self._storage_error,
        )
        self._record_run_start()
        self._writer.start()
        self._started_us = now_us()
        self._thread = threading.Thread(target=self._thread_main, name="rc-collector", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)
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
            loop, ev = self._loop, self._stop_async
            if loop is not None and ev is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(ev.set)
            self._thread.join(timeout)
            if self._writer is not None:
                self._writer.stop(timeout)
            self._stopped.set()
            summary = self.status()
            self._record_run_stop(summary)
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
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # recorded so start()/stop() can say why
            self._fatal = exc
            log.exception("collector thread failed")
        finally:
            self._started.set()
            self._flush()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_async = asyncio.Event()
        await self.source.start(self.run_id)
        tasks = [asyncio.create_task(self._poll(sym), name=f"poll-{sym}") for sym in self.symbols]
        tasks.append(asyncio.create_task(self._flusher(), name="flusher"))
        self._started.set()
        try:
            await self._stop_async.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self.source.aclose()
            except Exception as exc:  # closing a broken source must not lose buffered data
                log.warning("closing source failed: %s", exc)

    async def _poll(self, symbol: str) -> None:
        loop = asyncio.get_running_loop()
        c = self._counters[symbol]
        interval = self._interval
        next_at = loop.time()
        while True:
            c.fetches += 1
            try:
                quote = await self._fetch(symbol)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fetch_failed(symbol, c, exc)
            else:
                self._receive(quote, c)
            next_at += interval
            now = loop.time()
            if next_at < now:  # the fetch overran its slot: skip missed slots, never burst
                c.overruns += 1
                next_at = now
            await asyncio.sleep(next_at - now)

    async def _fetch(self, symbol: str) -> Quote:
        # Seam: retry and the per-symbol circuit breaker wrap this call.
        return await self.source.fetch(symbol)

    def _receive(self, quote: Quote, c: _SymbolCounters) -> None:
        c.quotes += 1
        # Seam: validation decides here; until it lands every quote is accepted.
        c.accepted += 1
        c.last_price = quote.price
        c.last_quote_us = quote.recv_us
        c.last_error = None
        self._ticks.append((*quote.as_row(), self.run_id))
        if len(self._ticks) >= self._buffer_size:
            self._flush()

    def _fetch_failed(self, symbol: str, c: _SymbolCounters, exc: Exception) -> None:
        c.errors += 1
        c.last_error = f"{type(exc).__name__}: {exc}"
        self._events.append(
            (INSERT_ERROR, (self.run_id, now_us(), symbol, symbol, type(exc).__name__, str(exc)))
        )

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            self._flush()

    def _flush(self) -> None:
        if not (self._ticks or self._rejects or self._events) or self._writer is None:
            return
        batch = Batch(self._ticks, self._rejects, self._events)
        self._ticks, self._rejects, self._events = [], [], []
        self._writer.submit(batch)

    def _storage_error(self, component: str, exc: BaseException) -> None:
        log.warning("%s error: %s: %s", component, type(exc).__name__, exc)

    # -- runs table ------------------------------------------------------------------

    def _record_run_start(self) -> None:
        conn = open_database(self.db_path, timeout=self.config.storage.write_timeout_seconds)
        try:
            conn.execute(
                "INSERT OR REPLACE INTO runs (run_id, started_us, status, pid, host, symbols, config)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (
                    self.run_id,
                    now_us(),
                    os.getpid(),
                    socket.gethostname(),
                    orjson.dumps(list(self.symbols)).decode(),
                    orjson.dumps(self.config.as_dict()).decode(),
                ),
            )
        finally:
            conn.close()

    def _record_run_stop(self, summary: CollectorStatus) -> None:
        data = {
            s.symbol: {"stored": s.stored, "rejects": s.rejects, "errors": s.errors}
            for s in summary.symbols.values()
        }
        try:
            conn = open_database(self.db_path, timeout=self.config.storage.write_timeout_seconds)
            try:
                conn.execute(
                    "UPDATE runs SET stopped_us = ?, status = 'stopped', summary = ? WHERE run_id = ?",
                    (now_us(), orjson.dumps(data).decode(), self.run_id),
                )
            finally:
                conn.close()
        except Exception as exc:  # the run's data is safe; only its bookkeeping row is stale
            log.warning("could not record the end of run %s: %s", self.run_id, exc)

    # -- reading -------------------------------------------------------------------

    def status(self) -> CollectorStatus:
        """An immutable snapshot of counters and states (safe from any thread)."""
        ws = self._writer.stats() if self._writer is not None else None
        stored = ws.stored_by_symbol if ws is not None else {}
        symbols = {
            sym: SymbolStatus(
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
            )
            for sym, c in self._counters.items()
        }
        started = self._started_us
        uptime = 0.0 if started is None else (now_us() - started) / 1e6
        return CollectorStatus(
            run_id=self.run_id,
            running=self.running,
            started_us=started,
            uptime_seconds=uptime,
            database=str(self.db_path),
            symbols=symbols,
            storage=ws,
        )

    def ticks(self, symbol: str | None = None, since: Any = None) -> pl.DataFrame:
        """The stored ticks (all runs) as a polars DataFrame with tz-aware UTC times."""
        return read_ticks(self.db_path, symbol=symbol, since=since)
