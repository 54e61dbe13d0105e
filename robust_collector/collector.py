"""The collector: one object to start, watch, read and stop; the machinery is in runtime/.

``Collector`` wires the parts (``runtime/``: the pipeline, the guards, the polling or
streaming driver, the health loop, the supervisor; ``storage``'s writer) and runs them
on one daemon thread with its own asyncio loop, so a slow or failing symbol keeps its
own schedule and a notebook kernel stays free. Everything it reports is a snapshot
safe to read from any thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from robust_collector.config import Config, load_config
from robust_collector.errors import ConfigError
from robust_collector.health import ComponentHealth, HealthSnapshot, SystemHealthMonitor
from robust_collector.health.store import mark_heartbeat_stopped
from robust_collector.model import now_us
from robust_collector.resilience import BreakerRegistry, CircuitBreaker, RateLimitGate, RetryPolicy
from robust_collector.runtime.guards import Guards
from robust_collector.runtime.health_loop import HealthLoop
from robust_collector.runtime.pipeline import Pipeline
from robust_collector.runtime.polling import Poller
from robust_collector.runtime.status import CollectorStatus, LatestQuote, SymbolStatus
from robust_collector.runtime.store import (
    make_writer,
    new_run_id,
    record_run_start,
    record_run_stop,
)
from robust_collector.runtime.streaming import StreamRunner
from robust_collector.runtime.supervisor import Supervisor
from robust_collector.secrets import redact, scrub
from robust_collector.sources import Source, create_source, kinds_for, traits_of
from robust_collector.sources.stream import is_streaming
from robust_collector.storage.backend import is_postgres_url, make_backend
from robust_collector.storage.reader import read_ticks, read_trades
from robust_collector.storage.writer import StorageWriter
from robust_collector.validation import RULES, TradeValidator, Validator

__all__ = ["Collector", "CollectorStatus", "LatestQuote", "SymbolStatus"]

log = logging.getLogger(__name__)

_RULE_KEYS = frozenset(RULES)


def kinds_by_symbol(source_config: Any, symbols: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """What each symbol collects (``source.data``, ``source.data_by_symbol``)."""
    return {s: kinds_for(source_config, s) for s in symbols}


def _system_component(snap: HealthSnapshot) -> ComponentHealth:
    """The overall level as a row of its own in the health history."""
    return ComponentHealth("system", "system", snap.level, snap.reasons, {})


def _some(names: list[str], limit: int = 10) -> str:
    """At most ``limit`` names, then how many more: a file may hold thousands."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


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
        self.traits = traits_of(self.source)  # what the source offers beyond fetch
        available = self.traits.symbols  # a replay knows its file's symbols
        if available is not None:
            missing = [s for s in self.symbols if s not in available]
            if missing:
                raise ConfigError(
                    f"symbols: {_some(missing)} not in the replayed file "
                    f"(it holds {_some(sorted(available)) or 'no symbols'})",
                    path="symbols",
                )
        # a SQLite file's Path, or a postgresql:// URL (readers take either)
        target = self.config.storage.target()
        self.backend = make_backend(target, timeout=self.config.storage.write_timeout_seconds)
        self.db_path: Path | str = target if is_postgres_url(target) else Path(target)
        self.instance = self.config.storage.instance_name()
        rt = self.config.realtime_data
        self.validator = Validator(rt.validation)
        self.monitor = SystemHealthMonitor(rt.health_check)
        self.kinds = kinds_by_symbol(self.config.source, self.symbols)
        self.trade_validator = (
            TradeValidator(rt.trade_validation)
            if any("trades" in k for k in self.kinds.values())
            else None
        )
        self.pipeline = Pipeline(
            self.run_id,
            self.symbols,
            self.validator,
            self.monitor,
            rt.buffer_size,
            trade_validator=self.trade_validator,
        )
        self.guards = Guards(self.config, self.traits.name, self.pipeline)
        self.breakers: BreakerRegistry | None = self.guards.breakers
        self.retries: dict[str, RetryPolicy] = self.guards.retries
        self.rate_gate: RateLimitGate = self.guards.rate_gate
        self.storage_breaker: CircuitBreaker | None = None  # the database's, once started
        self.supervisor = Supervisor(on_crash=self._unit_crashed)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_async: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._stop_requested = threading.Event()
        self._stop_lock = threading.Lock()
        self._started_us: int | None = None
        self._fatal: BaseException | None = None
        self._summary: CollectorStatus | None = None
        self._heartbeat_thread: threading.Thread | None = None
        self.health_loop = HealthLoop(
            self.config,
            self.monitor,
            self.pipeline,
            self.guards,
            self.supervisor,
            self.db_path,
            loop_running=lambda: self._thread is not None,
            stopping=self._stop_requested,
        )
        self._stream: StreamRunner | None = None
        self._poller: Poller | None = None
        if is_streaming(self.source):  # one connection for every symbol (runtime/streaming)
            self._stream = StreamRunner(
                self.source, self.pipeline, self.guards, self.config, self.health_loop
            )
            self.health_loop.publishers.append(self._stream.publish)
        else:
            self._poller = Poller(
                self.source,
                self.pipeline,
                self.guards,
                rt.collect_interval_seconds,
                self.config.storage.flush_interval_seconds,
                kinds=self.kinds,
            )

    def breaker(self, symbol: str) -> CircuitBreaker | None:
        """The circuit breaker of ``symbol`` (``None`` when breakers are disabled)."""
        return self.guards.breaker(symbol)

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

    @property
    def _writer(self) -> StorageWriter | None:
        return self.pipeline.writer

    def start(self) -> Collector:
        """Start collecting in a daemon thread; returns at once (the kernel stays free)."""
        if self._thread is not None:
            raise RuntimeError("collector already started; a Collector runs once")
        if not self.config.realtime_data.enabled:
            raise RuntimeError("realtime_data.enabled is false in the config: nothing to collect")
        writer, self.storage_breaker = make_writer(
            self.config, self.backend, self.pipeline, self.guards.on_breaker
        )
        self.pipeline.writer = writer
        record_run_start(self.config, self.backend, self.pipeline, self.instance)
        writer.start()
        self._started_us = now_us()
        self._thread = threading.Thread(target=self._thread_main, name="rc-collector", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)
        self._heartbeat_thread = self.supervisor.thread(
            "rc-heartbeat", lambda: self.health_loop.heartbeat_main(self._stopped)
        )
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
            if self.pipeline.writer is not None:
                self.pipeline.writer.stop(timeout)
            self._stopped.set()
            self.supervisor.stop()
            if self._heartbeat_thread is not None:
                self._heartbeat_thread.join(timeout=5)
            summary = self.status()
            record_run_stop(self.backend, self.run_id, summary)
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
            self.pipeline.flush()

    def _unit_crashed(self, name: str, exc: BaseException) -> None:
        """A supervised unit crashed: an error row, a recent error, a failed operation."""
        p = self.pipeline
        p.error(
            "supervisor", exc, checker=p.collector_health, message=f"{name} crashed: {scrub(exc)}"
        )

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_async = asyncio.Event()
        if self._stop_requested.is_set():
            return
        self.supervisor.mark_running("rc-collector")
        if self.traits.plan is not None:  # an HTTP source sizes its pool: one per symbol
            self.traits.plan(self.symbols)
        await self.source.start(self.run_id)
        health = self.health_loop
        units: list[tuple[str, Callable[[], Any]]] = [("loop-tick", health.tick)]
        if self._stream is not None:
            units += self._stream.units()
        else:
            assert self._poller is not None
            units += self._poller.units()
            if health.enabled:
                units.append(("health", functools.partial(health.run, self._poller.flush)))
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
            if health.enabled:
                health.record()  # the final snapshot, so readers see the end state
                self.pipeline.flush()
            try:
                await self.source.aclose()
            except Exception as exc:  # closing a broken source must not lose buffered data
                log.warning("closing source failed: %s", redact(str(exc)))

    # -- reading -------------------------------------------------------------------

    def stream_status(self) -> dict[str, Any] | None:
        """A streaming source's state and counters (connects, reconnects, malformed, spills,
        silent symbols...); ``None`` for a polling source."""
        return None if self._stream is None else self._stream.status()

    def source_problem(self) -> str | None:
        """Why the source cannot deliver at all (credentials refused, a stream stopped for
        good), or None; ``robust-collector run`` exits non-zero on it."""
        if self._poller is not None and self._poller.pause is not None:
            return self._poller.pause.reason
        if self._stream is not None and self._stream.state == "failed":
            return f"stream stopped: {self._stream.last_error}"
        return None

    @property
    def finished(self) -> bool:
        """True when every symbol's source has ended (a replay reached the end of its file)."""
        return self._poller is not None and self._poller.all_finished

    def status(self) -> CollectorStatus:
        """An immutable snapshot of counters and states (safe from any thread)."""
        writer = self.pipeline.writer
        ws = writer.stats() if writer is not None else None
        stored = ws.stored_by_symbol if ws is not None else {}
        trades_stored = ws.trades_stored_by_symbol if ws is not None else {}
        vcounts = self.validator.counts
        tv = self.pipeline.trade_validator
        tcounts = tv.counts if tv is not None else {}
        symbols = {}
        for sym, c in self.pipeline.counters.items():
            b = self.guards.breaker(sym)
            tb = self.guards.trade_breaker(sym)
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
                trades=c.trades,
                trades_accepted=c.trades_accepted,
                trades_stored=trades_stored.get(sym, 0),
                trade_rejects=c.trade_rejects,
                trade_duplicates=c.trade_duplicates,
                trades_lost=c.trades_lost,
                last_trade_price=c.last_trade_price,
                last_trade_us=c.last_trade_us,
                trade_rejects_by_rule={
                    k: v
                    for k, v in tcounts.get(sym, {}).items()
                    if v and k != "duplicate" and k not in ("accepted", "locked", "reanchored")
                },
                trade_breaker_state=None if tb is None else tb.state.value,
                trade_breaker_since_us=c.trade_breaker_since_us,
                trade_breaker_reason=c.trade_breaker_reason,
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
            breaker_transitions=self.guards.transitions,
            health_level=None if last is None else last.level.name,
            units=self.supervisor.status(),
        )

    def health(self) -> HealthSnapshot:
        """The system's health now: overall level, reasons, every component."""
        return self.health_loop.snapshot()

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
            q = self.pipeline.latest.get(symbol)
            if q is None:
                return None
            age = (now - q.recv_us) / 1e6
            return LatestQuote(q, age, age > max_stale)
        rows = []
        for sym in self.symbols:
            q = self.pipeline.latest.get(sym)
            age = None if q is None else (now - q.recv_us) / 1e6
            b = self.guards.breaker(sym)
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

    def trades(
        self, symbol: str | None = None, since: Any = None, *, this_run: bool = False
    ) -> pl.DataFrame:
        """The stored trades (all runs, or only this run's) as a polars DataFrame, UTC times."""
        run = self.run_id if this_run else None
        return read_trades(self.db_path, symbol=symbol, since=since, run_id=run)
