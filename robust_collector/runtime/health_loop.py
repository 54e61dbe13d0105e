"""One health loop: copy every component's state into typed facts, check, store, heartbeat.

The loop task records a snapshot every ``check_interval_seconds`` (stored as rows); the
heartbeat thread writes a fresh one beside the database every second, so another
process tells a live collector from a dead or stuck one. A ``tick`` task proves the
event loop turns: a stalled loop is reported by the heartbeat thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from robust_collector.config import Config
from robust_collector.health import (
    BreakerFacts,
    CollectorFacts,
    HealthSnapshot,
    StorageFacts,
    SystemHealthMonitor,
    TradeFacts,
)
from robust_collector.health.store import snapshot_rows, write_heartbeat
from robust_collector.model import now_us
from robust_collector.runtime.guards import Guards
from robust_collector.runtime.pipeline import Pipeline
from robust_collector.runtime.supervisor import CRASH_LOOP, CRASH_WINDOW_SECONDS, Supervisor

__all__ = ["HEARTBEAT_SECONDS", "HealthLoop"]

log = logging.getLogger("robust_collector.collector")

HEARTBEAT_SECONDS = 1.0  # the heartbeat file and the live health snapshot, at least this often


class HealthLoop:
    """Facts in, snapshots out: the health task, the heartbeat thread and the loop tick."""

    def __init__(
        self,
        config: Config,
        monitor: SystemHealthMonitor,
        pipeline: Pipeline,
        guards: Guards,
        supervisor: Supervisor,
        db_path: Path | str,
        *,
        loop_running: Callable[[], bool],
        stopping: threading.Event,
    ) -> None:
        self.config = config
        self.monitor = monitor
        self.pipeline = pipeline
        self.guards = guards
        self.supervisor = supervisor
        self.db_path = db_path
        self.enabled = config.realtime_data.health_check.enabled
        self.interval = config.realtime_data.health_check.check_interval_seconds
        self._loop_running = loop_running
        self._stopping = stopping
        self.loop_tick = time.monotonic()
        self._writer_crashes: deque[float] = deque(maxlen=64)
        self._writer_crashes_seen = 0
        self.publishers: list[Callable[[], None]] = []  # more facts (a stream's state)

    # -- facts --------------------------------------------------------------------------

    def update_facts(self) -> None:
        """Copy breaker, storage and supervision state into the health checkers' facts."""
        for publish in self.publishers:
            publish()
        p = self.pipeline
        # (a stop in progress ends the loop and the writer on purpose: neither is a fault)
        running = self._loop_running() and not self._stopping.is_set()
        p.collector_health.facts.collector = CollectorFacts(
            self.supervisor.troubled(),
            CRASH_LOOP,
            max(0.0, time.monotonic() - self.loop_tick) if running else None,
        )
        now = now_us()
        ws = p.writer.stats() if p.writer is not None else None  # once: it lists the backups
        trades_stored = ws.trades_stored_by_symbol if ws is not None else {}
        for sym, checker in p.symbol_health.items():
            c = p.counters[sym]
            tb = self.guards.trade_breaker(sym)
            if c.trades or tb is not None:  # this symbol collects trades: count them apart
                t_us = c.last_trade_us
                age = None if t_us is None else max(0.0, (now - t_us) / 1e6)
                stored = trades_stored.get(sym, 0)
                checker.facts.trades = TradeFacts(c.trades, stored, c.trade_rejects, age)
            b = self.guards.breaker(sym)
            if b is None:
                checker.facts.breaker = BreakerFacts("DISABLED")
                continue
            since = None if c.breaker_since_us is None else c.breaker_since_us / 1e6
            checker.facts.breaker = BreakerFacts(b.state.value, since, c.breaker_reason)
            if tb is not None:
                t_us = c.trade_breaker_since_us
                checker.facts.trade_breaker = BreakerFacts(
                    tb.state.value, None if t_us is None else t_us / 1e6, c.trade_breaker_reason
                )
        if ws is not None:
            if ws.crashes > self._writer_crashes_seen:  # the writer restarted itself
                self._writer_crashes.extend(
                    [time.monotonic()] * (ws.crashes - self._writer_crashes_seen)
                )
                self._writer_crashes_seen = ws.crashes
            now = time.monotonic()
            stopping = self._stopping.is_set()  # (a stop ends the writer on purpose)
            p.storage_health.facts.storage = StorageFacts(
                writer_alive=ws.alive or stopping,
                writer_recent_crashes=sum(
                    1 for t in self._writer_crashes if now - t <= CRASH_WINDOW_SECONDS
                ),
                writer_crashes=ws.crashes,
                writer_restarting=ws.restarting and not stopping,
                writer_restarting_since=ws.restarting_since,
                writer_last_crash=ws.last_crash,
                crash_loop_threshold=CRASH_LOOP,
                storage_mode=ws.mode,
                queue_depth=ws.queue_depth,
                held_rows=ws.held_rows,
                lost_rows=ws.lost_rows,
                queue_full_spills=ws.queue_full_spills,
                backup_files=ws.backup_files,
                ticks_to_backup=ws.ticks_to_backup,
                reopened_at=ws.reopened_at,
                reopen_reason=ws.reopen_reason,
            )

    def snapshot(self) -> HealthSnapshot:
        """The system's health now, without touching the history."""
        self.update_facts()
        return self.monitor.snapshot()

    def record(self) -> HealthSnapshot:
        """A check kept in the history, its rows buffered for the writer, the heartbeat."""
        self.update_facts()
        snap = self.monitor.check()
        self.pipeline.events.extend(snapshot_rows(snap, self.pipeline.run_id))
        self.write_heartbeat(snap)
        return snap

    # -- the units ----------------------------------------------------------------------

    async def run(self, flush: Callable[[], Awaitable[None]]) -> None:
        """The health task: the first report comes early, so ``health`` sees a fresh run."""
        await asyncio.sleep(min(self.interval, 2.0))
        while True:
            self.record()
            await flush()
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        """Proves the event loop turns: the heartbeat thread reports a stalled loop."""
        while True:
            self.loop_tick = time.monotonic()
            await asyncio.sleep(0.25)

    def heartbeat_main(self, stopped: threading.Event) -> None:
        """The heartbeat thread: every second a fresh snapshot written beside the database."""
        while not stopped.is_set():
            self.write_heartbeat(self.snapshot())
            if stopped.wait(HEARTBEAT_SECONDS):
                return

    def write_heartbeat(self, snap: HealthSnapshot) -> None:
        try:  # (nothing for a PostgreSQL URL: write_heartbeat knows)
            write_heartbeat(
                self.db_path,
                snap,
                self.pipeline.run_id,
                self.interval,
                heartbeat_interval=HEARTBEAT_SECONDS,
            )
        except (OSError, TypeError, ValueError) as exc:  # the folder may be gone: not fatal
            log.debug("health heartbeat not written: %s", exc)
