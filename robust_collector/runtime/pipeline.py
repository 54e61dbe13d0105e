"""The pipeline every quote takes, from any driver: validate, count, buffer, flush.

Polling tasks and the stream's processor hand quotes here; accepted ones become tick
rows, the others reject rows or counted duplicates, and error, event and health rows
wait beside them. ``flush`` hands one batch to the writer thread. Everything runs on
the collector's event loop except ``event``, which any thread may call.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from robust_collector.health import HealthChecker, SystemHealthMonitor
from robust_collector.model import Quote, now_us
from robust_collector.runtime.status import SymbolCounters
from robust_collector.secrets import scrub
from robust_collector.storage.tables import INSERT_ERROR
from robust_collector.storage.writer import Batch, StorageWriter
from robust_collector.validation import Validator
from robust_collector.validation.streaming import ACCEPTED

__all__ = ["COLLECTOR_COMPONENT", "Pipeline"]

log = logging.getLogger("robust_collector.collector")

COLLECTOR_COMPONENT = "RobustDataCollector"

Row = tuple[Any, ...]
_RECHECK_ROWS = 64  # a batch buffered past a full writer looks for room again this often


class Pipeline:
    """Validates quotes into buffered tick and reject rows, counts them, flushes batches."""

    def __init__(
        self,
        run_id: str,
        symbols: tuple[str, ...],
        validator: Validator,
        monitor: SystemHealthMonitor,
        buffer_size: int,
    ) -> None:
        self.run_id = run_id
        self.symbols = symbols
        self.validator = validator
        self.monitor = monitor
        self.buffer_size = buffer_size
        self.counters = {s: SymbolCounters() for s in symbols}
        self.ticks: list[Row] = []
        self.rejects: list[Row] = []
        # event rows may come from any thread (a breaker turns HALF_OPEN when read)
        self.events: deque[tuple[str, Row]] = deque()
        self.latest: dict[str, Quote] = {}
        self.writer: StorageWriter | None = None
        self.collector_health = monitor.checker(COLLECTOR_COMPONENT, "collector")
        self.source_health = monitor.checker("source", "source")
        self.storage_health = monitor.checker("storage", "storage")
        self.symbol_health: dict[str, HealthChecker] = {
            s: monitor.checker(s, "symbol") for s in symbols
        }

    # -- quotes in --------------------------------------------------------------------

    def full(self) -> bool:
        """True when the buffers hold a batch's worth of rows."""
        return len(self.ticks) + len(self.rejects) >= self.buffer_size

    def judge(self, quote: Quote, c: SymbolCounters) -> bool:
        """Buffer ``quote`` by the validator's verdict; True when it was accepted."""
        c.quotes += 1
        verdict = self.validator.check(quote)
        if verdict.status == "accepted":
            c.accepted += 1
            c.last_price = quote.price
            c.last_quote_us = quote.recv_us
            c.last_error = None
            self.latest[quote.symbol] = quote
            self.ticks.append(quote.tick_row(self.run_id))
            if verdict.reason:  # a re-anchor: worth a line in the log
                log.info("%s: %s", quote.symbol, verdict.reason)
            return True
        if verdict.status == "duplicate":
            c.duplicates += 1
        else:
            c.rejects += 1
            self.rejects.append(
                (*quote.as_row(), self.run_id, verdict.rule, verdict.reason, now_us())
            )
        return False

    def receive(self, quote: Quote) -> None:
        """Validate one polled quote and buffer it as a tick or a reject; health counts it."""
        c = self.counters[quote.symbol]
        try:
            fresh = self.judge(quote, c)
        except Exception:  # a bug: the quote is counted lost, the supervisor restarts us
            c.lost += 1
            raise
        self.symbol_health[quote.symbol].record_success(fresh=fresh)
        self.collector_health.record_success(fresh=fresh)
        if self.full():
            self.flush()

    def receive_batch(self, symbol: str, quotes: list[Quote]) -> None:
        """Validate a run of quotes from one call; health counts them once per batch.

        What ``judge`` does per quote, with the accepted path inlined: the symbol's
        counters and latest quote are settled before each flush and at the end, so
        a reader never sees more rows handed to the writer than quotes accepted. A
        full buffer is flushed only while the writer has room: a self-paced source is
        paced by the database (its driver waits for room), never spilled to backup.
        """
        c = self.counters[symbol]
        check = self.validator.check
        run_id = self.run_id
        ticks = self.ticks
        room = self.buffer_size - len(ticks) - len(self.rejects)
        fresh = False
        seen = accepted = 0
        last: Quote | None = None
        q0 = c.quotes
        try:
            for q in quotes:
                seen += 1
                v = check(q)
                if v is ACCEPTED or v.status == "accepted":
                    ticks.append(q.tick_row(run_id))
                    room -= 1
                    accepted += 1
                    last = q
                    if v.reason:  # a re-anchor: worth a line in the log
                        log.info("%s: %s", q.symbol, v.reason)
                elif v.status == "duplicate":
                    c.duplicates += 1
                else:
                    c.rejects += 1
                    self.rejects.append((*q.as_row(), run_id, v.rule, v.reason, now_us()))
                    room -= 1
                if room <= 0:
                    c.quotes += seen
                    seen = 0
                    if last is not None:
                        self._settle(c, last, accepted)
                        fresh = True
                        accepted = 0
                        last = None
                    if self.has_room():
                        self.flush()
                        ticks = self.ticks
                        room = self.buffer_size - len(ticks) - len(self.rejects)
                    else:  # the writer is behind: buffer on, the driver waits for room
                        room = _RECHECK_ROWS
        except Exception:
            # a bug met mid-batch: what was judged counts; the quote that raised and the
            # rest of the batch are counted lost (the supervisor restarts the task)
            c.quotes += seen - 1
            c.accepted += accepted
            c.lost += len(quotes) - (c.quotes - q0)
            raise
        c.quotes += seen
        if last is not None:
            self._settle(c, last, accepted)
            fresh = True
        n = len(quotes)
        self.symbol_health[symbol].record_success(fresh=fresh, count=n)
        self.collector_health.record_success(fresh=fresh, count=n)

    def _settle(self, c: SymbolCounters, last: Quote, accepted: int) -> None:
        c.accepted += accepted
        c.last_price = last.price
        c.last_quote_us = last.recv_us
        c.last_error = None
        self.latest[last.symbol] = last

    # -- rows beside the quotes ---------------------------------------------------------

    def event(self, sql: str, row: Row) -> None:
        """An event row (breaker change, gap, health, run) written with the next batch."""
        self.events.append((sql, row))

    def error(
        self,
        component: str,
        error: BaseException | str,
        *,
        symbol: str | None = None,
        error_type: str | None = None,
        checker: HealthChecker | None = None,
        message: str | None = None,
    ) -> str:
        """One error: a failed operation of ``checker``, a recent error, an error row (its
        text ``message`` when given); returns the row's scrubbed message."""
        if isinstance(error, BaseException):
            etype, text = error_type or type(error).__name__, scrub(error)
        else:
            etype, text = error_type or "Error", scrub(error)
        message = text if message is None else scrub(message)
        if checker is not None:
            checker.record_failure(error)
        self.monitor.record_error(component, error, symbol=symbol)
        self.event(INSERT_ERROR, (self.run_id, now_us(), component, symbol, etype, message))
        return message

    # -- out to the writer --------------------------------------------------------------

    def take_batch(self) -> Batch | None:
        """Everything buffered as one batch (the buffers start empty again), or None."""
        if not (self.ticks or self.rejects or self.events) or self.writer is None:
            return None
        events = []
        while self.events:
            events.append(self.events.popleft())
        batch = Batch(self.ticks, self.rejects, events)
        self.ticks, self.rejects = [], []
        return batch

    def flush(self) -> None:
        """Hand what is buffered to the writer (its queue never blocks for long)."""
        batch = self.take_batch()
        if batch is not None:
            assert self.writer is not None
            self.writer.submit(batch)

    def has_room(self) -> bool:
        """False while the writer's queue is full (backpressure for a self-paced source)."""
        return self.writer is None or self.writer.has_room()
